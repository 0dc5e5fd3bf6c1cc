"""The service's automation: two jobs, the sensors and the schedule that start them, with run tags
saying what each run does and why.

- `daily_forecast` (the daily path): ingest, SQL models, features, a forecast vintage by the
  registered champion, submission, monitoring. No backtest.
- `refresh_all` (the full path = retraining): the whole graph, backtests, champion selection and
  registration included, then the same forecast, submission and monitoring.

`new_drop_file_sensor` starts one `daily_forecast` run per new drop file, for the vintage partition of the
day after the file's day (two files landing together make two vintages); on a home without a champion it
starts the full path instead. `retrain_sensor` starts `refresh_all` for the newest vintage's partition when
the champion is due (core.service.serving: cadence in days of data, 30% more history, or monitoring's WARN).
"""

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import cast

import dagster as dg

from musictrend_dagster.core.service.serving import Selection, horizon_changed, retrain_reasons
from musictrend_dagster.core.settings import ACTIONS_PREFIX, RETRAIN_EVERY_DAYS_VAR, horizon
from musictrend_dagster.defs.assets.monitoring import LIVE_CHECK
from musictrend_dagster.defs.partitions import vintage_key
from musictrend_dagster.defs.resources import MlflowResource, ServiceResource, WarehouseResource
from musictrend_dagster.defs.tags import DROP_FILE_TAG, PATH_TAG, REASON_TAG, TRIGGER_TAG

DROP_FILE = re.compile(rf"^{ACTIONS_PREFIX}_(\d{{8}})\.csv(\.gz)?$")

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


def _drop_day(name: str) -> date | None:
    """The day a drop file's name says (None: not a drop file, or not a real date)."""
    match = DROP_FILE.match(name)
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None
    except ValueError:
        return None


def new_drop_files(raw_dir: Path, seen: set[str]) -> list[str]:
    """Drop files (named with a real day) in raw_dir not seen before, oldest day first."""
    if not raw_dir.is_dir():
        return []
    return sorted(
        (p.name for p in raw_dir.iterdir() if _drop_day(p.name) and p.name not in seen),
        key=lambda name: cast(date, _drop_day(name)),
    )


def _daily_request(run_key: str, data_through: date, files: list[str], why: str) -> dg.RunRequest:
    return dg.RunRequest(
        job_name=daily_forecast.name,
        run_key=run_key,
        partition_key=vintage_key(data_through),
        tags={PATH_TAG: "daily", TRIGGER_TAG: "drop_file", DROP_FILE_TAG: ",".join(files), REASON_TAG: why},
    )


@dg.sensor(
    jobs=[daily_forecast, refresh_all],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"One daily_forecast run per new {ACTIONS_PREFIX}_YYYYMMDD.csv in MUSICTREND_RAW_DIR, forecasting from "
    "the day after the file's day (run key = the file; each file triggers once). Files for days a "
    "vintage already read re-issue the newest vintage; without a champion, the full path (refresh_all).",
)
def new_drop_file_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, service: ServiceResource, mlflow: MlflowResource
) -> dg.SensorResult | dg.SkipReason:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    new = new_drop_files(Path(warehouse.raw_dir), seen)
    if not new:
        return dg.SkipReason("no new drop files")
    cursor = json.dumps(sorted(seen | set(new)))
    state = service_state(context.instance, mlflow)
    if state.selection is None:
        reason = due_reasons(state, service.retrain_cadence)[0]
        return dg.SensorResult(
            cursor=cursor,
            run_requests=[
                dg.RunRequest(
                    job_name=refresh_all.name,
                    run_key=",".join(new),
                    partition_key=vintage_key(max(cast(date, _drop_day(n)) for n in new)),
                    tags={
                        PATH_TAG: "retrain",
                        TRIGGER_TAG: "drop_file",
                        DROP_FILE_TAG: ",".join(new),
                        REASON_TAG: reason,
                    },
                )
            ],
        )
    floor = cast(date, state.covered_through)  # a champion exists: its data_through is a day
    fresh = [n for n in new if cast(date, _drop_day(n)) > floor]  # drop files are named with a real day
    late = [n for n in new if n not in fresh]
    requests = [_daily_request(n, cast(date, _drop_day(n)), [n], f"new day {_drop_day(n)} in {n}") for n in fresh]
    if late and not fresh:  # days a vintage has read changed: forecast the newest vintage again from them
        requests.append(
            _daily_request(
                ",".join(late),
                floor,
                late,
                f"files for days already read (through {floor}): the newest vintage again",
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(
    job=refresh_all,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains (refresh_all) when the champion is due: every `service.retrain_every_days` "
    f"({RETRAIN_EVERY_DAYS_VAR}, default 7) days of new data since the last selection, when the history grew 30% "
    "since then, or when monitoring's "
    f"{LIVE_CHECK} check warns on the current champion. The run's musictrend/reason tag says which.",
)
def retrain_sensor(
    context: dg.SensorEvaluationContext, service: ServiceResource, mlflow: MlflowResource
) -> dg.RunRequest | dg.SkipReason:
    state = service_state(context.instance, mlflow)
    if state.selection is None:
        return dg.SkipReason(
            "no champion registered yet: the first run (musictrend run, Materialize all or a drop "
            "file) does the full path"
        )
    if context.instance.get_run_records(
        dg.RunsFilter(
            job_name=refresh_all.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    ):
        return dg.SkipReason("a refresh_all run is queued or in progress")
    reasons = due_reasons(state, service.retrain_cadence)
    if not reasons:
        return dg.SkipReason(
            f"not due: champion v{state.selection.model_version} selected on data through "
            f"{state.selection.data_through}; data now through {state.data_through}"
        )
    return dg.RunRequest(
        run_key=f"retrain {state.data_through} v{state.selection.model_version}",
        # a champion without a vintage yet (a new horizon): the vintage after the data it was trained on
        partition_key=vintage_key(state.data_through or state.selection.data_through),
        tags={PATH_TAG: "retrain", TRIGGER_TAG: "retrain_sensor", REASON_TAG: "; ".join(reasons)},
    )
