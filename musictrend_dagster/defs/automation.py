"""The service's automation: two jobs to launch by hand, and the declarative automation that runs the
service by itself (docs/daily-service-dagster.md, "Declarative automation").

- `daily_forecast` (the daily path) and `refresh_all` (the full path = retraining): what `musictrend run`
  and the UI's launchpad start.
- Automation conditions, evaluated by the `automation` sensor (an `AutomationConditionSensorDefinition`
  running in the code server, since three conditions are custom): `raw_source` is observed when its
  files change (`RawSourceChanged`); the data assets run when its data version changes; the vintage
  partition new data makes (`VintagePartition`) is forecast, written and monitored; the models group
  retrains when `due_reasons` says so (`RetrainDue`: cadence, 30% growth, monitoring's WARN).
"""

import json
import time
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, cast

import dagster as dg

from musictrend_dagster.core.data import fingerprint, source
from musictrend_dagster.core.service.serving import Selection, horizon_changed, retrain_reasons
from musictrend_dagster.core.settings import RETRAIN_EVERY_DAYS_VAR, horizon
from musictrend_dagster.defs.assets.monitoring import LIVE_CHECK
from musictrend_dagster.defs.partitions import vintage_key
from musictrend_dagster.defs.resources import MlflowResource, ServiceResource
from musictrend_dagster.defs.tags import PATH_TAG, REASON_TAG, TRIGGER_TAG

if TYPE_CHECKING:
    from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor

RAW_SOURCE = dg.AssetKey("raw_source")
FEATURES = dg.AssetKey("model_features")
REGISTERED = dg.AssetKey("registered_champion")
AUTOMATION_TAGS = {
    TRIGGER_TAG: "automation",
    REASON_TAG: "declarative automation (the asset's evaluation on the Automation tab says why)",
}

refresh_all = dg.define_asset_job(
    "refresh_all",
    selection=dg.AssetSelection.all(),
    tags={PATH_TAG: "retrain"},
    description="The full path (retraining): ingest, SQL models, features, every model's backtest, champion selection "
    "and registration, then the forecast vintage, the submission and monitoring.",
)

daily_forecast = dg.define_asset_job(
    "daily_forecast",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("models"),
    tags={PATH_TAG: "daily"},
    description="The daily path: ingest and SQL models (incremental), features, a forecast vintage by the registered "
    "champion (no backtest, no refit unless the model kind needs one), the submission and monitoring.",
)


def _metadata(instance: dg.DagsterInstance, asset: str) -> dict | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@dataclass(frozen=True)
class ServiceState:
    """What the sensors decide on, read from the Dagster instance and the MLflow registry (no warehouse lock)."""

    selection: Selection | None  # the version the registry's champion alias points at
    data_through: date | None  # the newest day the newest vintage read
    history_days: int | None
    degraded: str | None  # monitoring's WARN verdict on the current champion, if any

    @property
    def covered_through(self) -> date | None:
        """The newest day a vintage or the champion's training has read: drop files up to it are not new days."""
        days = [d for d in (self.data_through, self.selection.data_through if self.selection else None) if d]
        return max(days) if days else None


def service_state(instance: dg.DagsterInstance, mlflow: MlflowResource) -> ServiceState:
    from musictrend_dagster.core.service.tracking import current_champion  # MLflow: not at code-location load

    vintage = _metadata(instance, "forecast")
    selection = current_champion(mlflow.tracking_uri)  # the one champion record: the registry's alias
    degraded: str | None = None
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey("forecast_monitoring"), LIVE_CHECK)
    )
    evaluation = (
        record.event.dagster_event.event_specific_data
        if record and record.event and record.event.dagster_event
        else None
    )
    # a run killed between planning the check and evaluating it leaves only the plan: no verdict
    if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed and selection is not None:
        facts = {k: v.value for k, v in evaluation.metadata.items()}
        if facts.get("model_version") == selection.model_version:
            degraded = cast(str, facts["verdict"])
    return ServiceState(
        selection=selection,
        data_through=date.fromisoformat(vintage["data_through"]) if vintage and "data_through" in vintage else None,
        history_days=int(vintage["history_days"]) if vintage and "history_days" in vintage else None,
        degraded=degraded,
    )


def due_reasons(state: ServiceState, every_days: int) -> list[str]:
    """Why the champion is due for retraining now (empty: not due); `every_days` is the cadence (0: off)."""
    if state.selection is not None and state.data_through is None:
        # a champion without a vintage yet: the next daily run makes one, if it is for this horizon
        return [r for r in [horizon_changed(state.selection, horizon())] if r]
    # data_through and history_days are None only without a champion, where retrain_reasons looks no further
    return retrain_reasons(
        state.selection,
        cast(date, state.data_through),
        cast(int, state.history_days),
        state.degraded,
        every_days=every_days,
        horizon=horizon(),
    )


def _unchanged(context: dg.AutomationContext, **metadata: object) -> dg.AutomationResult:
    """False for every candidate; the cursor (what was last acted on) kept."""
    return dg.AutomationResult(context, context.get_empty_subset(), cursor=context.cursor, metadata=metadata)


class RawSourceChanged(dg.AutomationCondition):
    """True once per change of the raw source's files (names, sizes, mtimes: a `stat` each, no read), and on the
    first evaluation: then `raw_source` is observed, which hashes only the files that changed."""

    def __init__(self, raw_dir: str) -> None:
        self.raw_dir = raw_dir

    @property
    def description(self) -> str:
        return "the raw source's files changed (names, sizes, mtimes) since the last evaluation"

    @property
    def name(self) -> str:
        return "raw_source_changed"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        key = fingerprint.stat_key(source.load_config(), self.raw_dir)
        if context.candidate_subset.is_empty or key == context.cursor:
            return _unchanged(context)
        return dg.AutomationResult(context, context.candidate_subset, cursor=key)


class VintagePartition(dg.AutomationCondition):
    """The vintage partition the data allows: the day after the newest day `model_features` holds.

    Stands where eager()'s `in_latest_time_window` would: the latest time window is the wall-clock day,
    which a replayed log (or a feed a day late) does not have data for.
    """

    @property
    def requires_cursor(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return "the vintage partition of the day after the newest data day (model_features' data_through)"

    @property
    def name(self) -> str:
        return "vintage_partition"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        event = context.asset_graph_view.instance.get_latest_materialization_event(FEATURES)
        materialization = event.asset_materialization if event else None
        through = materialization.metadata.get("data_through") if materialization else None
        partitions = context.partitions_def
        if through is None or not through.value or partitions is None:
            return dg.AutomationResult(context, context.get_empty_subset())
        key = vintage_key(date.fromisoformat(cast(str, through.value)))
        if not partitions.has_partition_key(key):  # data through today: its vintage is tomorrow's partition
            return dg.AutomationResult(context, context.get_empty_subset())
        subset = context.asset_graph_view.get_subset_from_partition_keys(context.key, partitions, {key})
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection(subset))


class RetrainDue(dg.AutomationCondition):
    """True when `due_reasons` says the champion is due (cadence in days of data, 30% more history,
    monitoring's WARN on the current champion, no champion yet), once per (data day, champion version):
    a retrain that failed is not retried on the same data, as the old sensor's run key did."""

    def __init__(self, service: ServiceResource, mlflow: MlflowResource) -> None:
        self.service = service  # its retrain cadence is a dg.EnvVar, read on every evaluation
        self.mlflow = mlflow  # the champion record: the registry's alias

    @property
    def description(self) -> str:
        return (
            f"the champion is due: every {RETRAIN_EVERY_DAYS_VAR} days of new data, +30% history, "
            f"or a {LIVE_CHECK} warning (core.service.serving.retrain_reasons)"
        )

    @property
    def name(self) -> str:
        return "retrain_due"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.candidate_subset.is_empty:
            return _unchanged(context)
        instance = context.asset_graph_view.instance
        running = retrain_running(instance)
        if running:  # its finished backtests are not in progress any more, but the retrain is
            return _unchanged(context, why=dg.MetadataValue.text(f"a retrain is running (run {running})"))
        state = service_state(instance, self.mlflow)
        reasons = due_reasons(state, self.service.retrain_cadence)
        version = state.selection.model_version if state.selection else None
        key = json.dumps([str(state.data_through), version])
        if not reasons or key == context.cursor:
            why = not_due(state) if not reasons else "retrain already requested on this data"
            return _unchanged(context, why=dg.MetadataValue.text(why))
        return dg.AutomationResult(
            context,
            context.candidate_subset,
            cursor=key,
            metadata={"reasons": dg.MetadataValue.text("; ".join(reasons))},
        )


def retrain_running(instance: dg.DagsterInstance) -> str | None:
    """The run id of an unfinished run that plans to register a champion (a retrain: the models group, or
    "Materialize all"), or None. While it runs, a backtest it already made is not in progress for Dagster,
    yet its retrain is not done: without this, a tick between two backtests requests a second retrain."""
    planned = instance.get_latest_planned_materialization_info(REGISTERED)
    if planned is None:
        return None
    run = instance.get_run_by_id(planned.run_id)
    if run is None or run.is_finished:
        return None
    latest = instance.get_latest_materialization_event(REGISTERED)
    return None if latest is not None and latest.run_id == planned.run_id else planned.run_id


def not_due(state: ServiceState) -> str:
    """Why no retraining is due, in one line."""
    if state.selection is None:
        return "no champion yet"
    return (
        f"not due: champion v{state.selection.model_version} selected on data through "
        f"{state.selection.data_through}; data now through {state.data_through}"
    )


_IN_PROGRESS = dg.AutomationCondition.in_progress()
_DEPS_UPDATED = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).with_label(
    "any_deps_newly_updated"
)
_DEPS_REQUESTED = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).with_label(
    "any_deps_requested"
)
_DEPS_READY = ~dg.AutomationCondition.any_deps_missing() & ~dg.AutomationCondition.any_deps_in_progress()

# After what an upstream made, never with it: eager(), except that an upstream requested on this tick holds
# it back to the next one (the raw data's ingest waits for the observation; the vintage for the features).
AFTER_UPSTREAM = (
    (dg.AutomationCondition.newly_missing() | _DEPS_UPDATED).since_last_handled()
    & _DEPS_READY
    & ~_DEPS_REQUESTED
    & ~_IN_PROGRESS
).with_label("after_upstream")
# The rest of the data layer runs with its upstream, in the same run (eager), not on the observation itself.
DATA = dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(RAW_SOURCE))
# A vintage: forecast when new data (or a new champion) landed; its files, submission and monitoring with it.
FORECAST = (VintagePartition() & AFTER_UPSTREAM).with_label("new_vintage")
WITH_FORECAST = dg.AutomationCondition.eager().replace("in_latest_time_window", VintagePartition())
# Champion selection and registration ride along with the backtests a retrain requests.
WITH_RETRAIN = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).with_label(
    "retraining"
)


def retrain_condition(service: ServiceResource, mlflow: MlflowResource) -> dg.AutomationCondition:
    """The backtests' condition: due, the features there and settled, no retrain already running."""
    return (_DEPS_READY & ~_IN_PROGRESS & RetrainDue(service, mlflow)).with_label("retrain_due")


def with_automation(assets: list, service: ServiceResource, mlflow: MlflowResource) -> list:
    """The assets with their automation conditions, by role (docs/daily-service-dagster.md); `raw_source`
    has its own (`RawSourceChanged`, given where it is built)."""
    vintage_deps = {"forecast"}

    def condition(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        chosen: dg.AutomationCondition
        if name == "raw_songs":
            chosen = AFTER_UPSTREAM
        elif name == "forecast":
            chosen = FORECAST
        elif spec.partitions_def is not None and {d.asset_key.to_user_string() for d in spec.deps} & vintage_deps:
            chosen = WITH_FORECAST
        elif spec.group_name == "models" and name.startswith("backtest/"):
            chosen = retrain_condition(service, mlflow)
        elif spec.group_name == "models":
            chosen = WITH_RETRAIN
        else:
            chosen = DATA
        return spec.replace_attributes(automation_condition=chosen)

    return list(dg.map_asset_specs(condition, assets))


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(include_sources=True),
    use_user_code_server=True,  # the custom conditions above run in this code, not in the daemon
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    emit_backfills=False,  # one run per partition requested, as the partition bar shows them
    run_tags=AUTOMATION_TAGS,
    description="Evaluates every asset's automation condition (raw_source observed when its files change, the data "
    "on a new data version, the vintage the data allows, retraining when due); the Automation tab shows each "
    "evaluation and why it did or did not request a run.",
)


@dataclass(frozen=True)
class Launched:
    """One run the automation requested, executed in this process."""

    partition_key: str | None
    assets: list[str]
    reason: str
    result: dg.ExecuteInProcessResult
    seconds: float


def run_requested(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: "AssetDaemonCursor | None" = None,
    tags: dict[str, str] | None = None,
    max_ticks: int = 12,
) -> tuple["AssetDaemonCursor", list[Launched]]:
    """Evaluate the automation as the `automation` sensor does (`dg.evaluate_automation_conditions`) and run
    what it requests in this process, one run per partition key as the sensor's run requests group them,
    tick after tick until it requests nothing (what `musictrend replay` does for each held-back day).

    Returns the cursor for the next call and the runs; stops at the first failed run (its result is last).
    """
    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    service = cast(ServiceResource, (defs.resources or {})["service"])
    mlflow = cast(MlflowResource, (defs.resources or {})["mlflow"])
    launched: list[Launched] = []
    for _ in range(max_ticks):
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = evaluation.cursor
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
            for partition in evaluation.get_requested_partitions(key):
                by_partition.setdefault(partition, []).append(key)
        if not by_partition:
            return cursor, launched
        for partition in sorted(by_partition, key=lambda p: (p is not None, p or "")):
            keys = by_partition[partition]
            retrain = any(graph.get(k).group_name == "models" for k in keys)
            reason = _reason(instance, service, mlflow, keys, partition, retrain)
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                asset_selection=keys,
                partition_key=partition,
                raise_on_error=False,
                tags={
                    **AUTOMATION_TAGS,
                    **(tags or {}),
                    PATH_TAG: "retrain" if retrain else "daily",
                    REASON_TAG: reason,
                },
            )
            took = time.perf_counter() - started
            launched.append(Launched(partition, [k.to_user_string() for k in keys], reason, result, took))
            if not result.success:
                return cursor, launched
    raise RuntimeError(f"the automation still requests runs after {max_ticks} evaluations: {launched[-1].assets}")


def _reason(
    instance: dg.DagsterInstance,
    service: ServiceResource,
    mlflow: MlflowResource,
    keys: list[dg.AssetKey],
    partition: str | None,
    retrain: bool,
) -> str:
    """Why the automation requested this run, in the words of the condition that did."""
    if retrain:
        return "; ".join(due_reasons(service_state(instance, mlflow), service.retrain_cadence))
    if keys == [RAW_SOURCE]:
        return "the raw source's files changed: observe it"
    if partition is not None:
        return f"vintage {partition}: new data or a new champion"
    return "a new data version of raw_source"
