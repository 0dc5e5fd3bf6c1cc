"""MLflow tracking for backtests and the champion model, with plain `mlflow` (no Dagster here).

One `Tracker` owns every MLflow write of a materialisation: runs are created, filled in a
few batched calls and closed by `log_backtest`, and the champion is logged and registered
by `register_champion`.

The registry is the one champion record. The version the alias `champion` points at serves; its
tags say what it is (`Selection`: trained through which day, on how many days, selected on which
backtest origins and horizon, with which score, and why), and its one MLflow model (`ServedPyfunc`)
is what the daily path serves: forecaster and interval calibration, forecast and 80% interval out.
`current_champion`, `registered_versions` and `load_champion` are the readers.

SQLite allows one writer at a time, so every write goes through
`_retry`, which retries "database is locked" with exponential backoff
(0.25 s, 0.5 s, 1 s, 2 s, 4 s: about 8 s in all before giving up).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any, TypeVar, cast

import mlflow
import pandas as pd
import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Experiment, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from musictrend_dagster.core.forecast.backtest import BacktestPlan, BacktestResult, Skipped
from musictrend_dagster.core.forecast.evaluation import flat_metrics
from musictrend_dagster.core.forecast.intervals import Coverage, with_interval
from musictrend_dagster.core.service.owner import owner_gone, owner_tags
from musictrend_dagster.core.service.serving import Selection, ServedModel, join_networks, split_networks
from musictrend_dagster.core.settings import DEFAULT_HORIZON, MLFLOW_EXPERIMENT, REGISTERED_MODEL, Paths

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT = "model"
# Same artifact name in every model's run, at the root: MLflow's Compare shows the common root
# files of the runs side by side (files in folders are not compared).
PLOT_ARTIFACT = "forecast_vs_actual.png"
# MLflow 3 shows an experiment as GenAI (traces, evaluations) or model training. Versions that decide
# per experiment read the `mlflow.experimentKind` tag; 3.17 decides per browser (a sidebar switch,
# GenAI by default) unless the URL says `workflowType=machine_learning`, so every link we make says it.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
DESCRIPTION_TAG = "mlflow.note.content"
_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
# log_batch caps per call (MLflow's documented limits).
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_MAX_PARAM_CHARS = 6000

T = TypeVar("T")
log = logging.getLogger(__name__)

# The pyfunc contract: one request row per forecast wanted; per artist and day the forecast and its
# 80% interval back (the columns of output/forecasts.csv).
PYFUNC_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "start"), ColSpec("long", "horizon")]),
    outputs=Schema(
        [
            ColSpec("string", "artist_id"),
            ColSpec("datetime", "ds"),
            ColSpec("double", "forecast"),
            ColSpec("double", "lo80"),
            ColSpec("double", "hi80"),
        ]
    ),
)
# Inside the one MLflow model of a registered version: the forecaster's state and its Keras networks.
FORECASTER_ARTIFACT = "forecaster"
NETWORK_ARTIFACT = "network_{}"


def _retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn, retrying only SQLite's 'database is locked' (another writer holds the file)."""
    for delay in (*_RETRY_DELAYS, None):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow wraps sqlalchemy's OperationalError in MlflowException
            if delay is None or "database is locked" not in str(exc):
                raise
            log.warning("MLflow store is locked, retrying in %.2f s", delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute MLflow's INFO chatter and advisory UserWarnings (cloudpickle, type hints, git) for one call."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow(\.|$)")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _pointed_at(uri: str) -> Iterator[None]:
    """Point the global fluent API (log_model, load_model need it) at `uri`, quiet, then restore the
    previous URI. Only the tracking URI is touched: set_registry_uri() would pin an env var for good, and
    the SQLite registry resolves models:/ URIs through the tracking URI."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        with _quiet():
            yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it: mlflow's annotation omits it


def _ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def _param_value(value: Any) -> str:
    text = value.isoformat() if isinstance(value, date) else str(value)
    return text[:_MAX_PARAM_CHARS]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ServedPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]  # mlflow loads pyfunc lazily
    """A registered version's one MLflow model: the whole `ServedModel` (fitted forecaster, interval
    calibration, facts). Rows of (start yyyy-mm-dd, horizon) in; artist_id, ds, forecast, lo80, hi80 out,
    forecast from the days the model last read.

    The pickled python model holds the facts and the calibration only. The forecaster is in the model's
    artifacts, its state pickled without its Keras networks and each network a `.keras` file
    (`serving.split_networks`), and is rebuilt in `load_context`: no TensorFlow object is pickled.
    """

    def __init__(self, served: ServedModel, networks: int) -> None:
        self.facts = {f.name: getattr(served, f.name) for f in dataclasses.fields(served) if f.name != "forecaster"}
        self.networks = networks
        self.served: ServedModel | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "served": None}  # the forecaster is stored as artifacts, never in the pickle

    def load_context(self, context: Any) -> None:
        state = Path(context.artifacts[FORECASTER_ARTIFACT]).read_bytes()
        networks = []
        if self.networks:
            import keras  # only a Keras-backed champion loads TensorFlow

            networks = [
                keras.saving.load_model(context.artifacts[NETWORK_ARTIFACT.format(k)], compile=False)
                for k in range(self.networks)
            ]
        self.served = ServedModel(join_networks(state, networks), **self.facts)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        missing = {"start", "horizon"} - set(model_input.columns)
        if missing:
            raise ValueError(
                f"model input lacks columns {sorted(missing)}; expected 'start' (yyyy-mm-dd) and 'horizon'"
            )
        served = cast(ServedModel, self.served)  # load_context ran: MLflow calls it on load
        frames = [
            with_interval(
                served.forecaster.predict(date.fromisoformat(str(row.start)[:10]), int(row.horizon)),
                served.calibration,
            )
            for row in model_input.itertuples(index=False)
        ]
        return (
            pl.concat(frames).select("artist_id", "ds", forecast="plays", lo80="plays_lo", hi80="plays_hi").to_pandas()
        )


class Tracker:
    """All MLflow writes of one process go through here, so a SQLite store sees one writer."""

    def __init__(
        self, uri: str | None = None, artifact_dir: Path | None = None, experiment: str = MLFLOW_EXPERIMENT
    ) -> None:
        paths = Paths.from_env() if uri is None or artifact_dir is None else None
        self.uri = uri or cast(Paths, paths).mlflow_uri
        self.artifact_dir = Path(artifact_dir or cast(Paths, paths).mlflow_artifacts).resolve()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        with _quiet():  # a fresh SQLite store is migrated here: a few seconds of alembic INFO lines
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self.experiment_id = self._experiment(experiment)
            self._close_orphans()

    def _close_orphans(self) -> None:
        """Mark KILLED the RUNNING runs whose writer process on this host is gone.

        A process killed between creating a run and closing it (SIGKILL, OOM) would otherwise
        leave a run that shows as running in the MLflow UI for ever.
        """
        running = _retry(
            self.client.search_runs,
            [self.experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
        )
        orphans = [run.info.run_id for run in running if owner_gone(run.data.tags)]
        for run_id in orphans:
            _retry(self.client.set_terminated, run_id, "KILLED")
        if orphans:
            log.warning("marked %d MLflow run(s) KILLED: their process is gone: %s", len(orphans), ", ".join(orphans))

    def _experiment(self, name: str) -> str:
        """The experiment's id, creating it with our artifact root and in MLflow's model-training view
        (an experiment made before that gets the tag now); a concurrent creator wins harmlessly."""
        found = _retry(self.client.get_experiment_by_name, name)
        if found is None:
            try:
                return _retry(
                    self.client.create_experiment,
                    name,
                    artifact_location=self.artifact_dir.as_uri(),
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = cast(Experiment, _retry(self.client.get_experiment_by_name, name))  # the other creator's
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            _retry(self.client.set_experiment_tag, found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id

    def log_backtest(
        self,
        result: BacktestResult,
        tags: dict[str, str] | None = None,
        data_range: tuple[date, date] | None = None,
        seed: int | None = None,
        plot_png: Path | None = None,
        coverage: Coverage | None = None,
        plan: BacktestPlan | None = None,
        started: float | None = None,
        horizons: pl.DataFrame | None = None,
    ) -> str:
        """One finished run per model: params, f_norm per origin and mean, interval coverage, losses,
        timings, plot, scores CSV and every origin's forecast (with its interval columns, if it has them).
        With `horizons` (core.forecast.evaluation.horizon_scores), also f_norm, wape, mase and coverage per
        window under names every model shares: `<metric>_h<days>` (mean over origins), per origin
        `<metric>_h<days>_<yyyymmdd>`, and `wape` / `mase` over the whole window.

        `started` (epoch seconds, when the backtest began) makes the run span the work it records;
        the description leads with f_norm, per origin, and the Dagster run that made it.
        """
        if not result.origins:
            raise ValueError(f"backtest of {result.model} has no origins: nothing to log")
        run_tags = {"model": result.model, **{k: str(v) for k, v in (tags or {}).items()}, **owner_tags()}
        run_tags[DESCRIPTION_TAG] = describe_run(result, run_tags, coverage)
        params: dict[str, Any] = dict(result.params)
        if data_range is not None:
            params["data_start"], params["data_end"] = data_range
        params["seed"] = seed
        params["origins"] = ",".join(_ymd(o.origin) for o in result.origins)
        params["horizon"] = result.origins[0].forecast["ds"].n_unique()
        if plan is not None:
            params["train_days"], params["history_days"] = plan.train_days, plan.history_days

        now = int(time.time() * 1000)
        metrics = [Metric("f_norm", result.mean_f_norm, now, 0)]
        for o in result.origins:
            tag = _ymd(o.origin)
            metrics += [
                Metric(f"f_norm_{tag}", o.f_norm, now, 0),
                Metric(f"fit_seconds_{tag}", o.fit_seconds, now, 0),
                Metric(f"predict_seconds_{tag}", o.predict_seconds, now, 0),
            ]
            metrics += [Metric(f"loss_{tag}", float(v), now, epoch) for epoch, v in enumerate(o.losses)]
        n = len(result.origins)
        metrics += [
            Metric("fit_seconds", sum(o.fit_seconds for o in result.origins) / n, now, 0),
            Metric("predict_seconds", sum(o.predict_seconds for o in result.origins) / n, now, 0),
        ]
        if coverage is not None:
            run_tags["coverage_method"] = coverage.method
            metrics.append(Metric("coverage_80", coverage.overall, now, 0))
            metrics += [Metric(f"coverage_80_{_ymd(o)}", v, now, 0) for o, v in coverage.per_origin.items()]
        if horizons is not None:
            metrics += [Metric(k, float(v), now, 0) for k, v in flat_metrics(horizons).items()]
            for row in horizons.iter_rows(named=True):
                metrics += [
                    Metric(f"{m}_h{row['window']}_{_ymd(row['origin'])}", float(row[m]), now, 0)
                    for m in ("f_norm", "wape", "mase", "coverage")
                ]
            full = horizons.filter(pl.col("window") == pl.col("window").max())
            metrics += [Metric(m, float(cast(float, full[m].mean())), now, 0) for m in ("wape", "mase")]
        # `loss` is the newest origin's curve: the one closest to the production fit.
        metrics += [Metric("loss", float(v), now, epoch) for epoch, v in enumerate(result.origins[-1].losses)]

        run_id = self._finished_run(
            result.model,
            run_tags,
            params,
            metrics,
            lambda run_id: self._log_result_files(run_id, result, plot_png),
            started,
        )
        return run_id

    def log_skipped(
        self, skipped: Skipped, plan: BacktestPlan, tags: dict[str, str] | None = None, started: float | None = None
    ) -> str:
        """A finished run for a model the plan could not score: tag status=skipped and the reason, no metrics."""
        run_tags = {
            "model": skipped.model,
            "status": "skipped",
            "skip_reason": skipped.reason,
            **{k: str(v) for k, v in (tags or {}).items()},
            **owner_tags(),
        }
        run_tags[DESCRIPTION_TAG] = f"**skipped**: {skipped.reason}\n\n{_provenance(run_tags)}"
        params = {
            **skipped.params,
            "origins": ",".join(_ymd(o) for o in plan.origins),
            "train_days": plan.train_days,
            "history_days": plan.history_days,
            "skip_reason": skipped.reason,
        }
        return self._finished_run(skipped.model, run_tags, params, [], None, started)

    def _finished_run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: list[Metric],
        log_files: Callable[[str], None] | None,
        started: float | None = None,
    ) -> str:
        """Create a run (starting at `started`, epoch seconds, else now), log params and metrics in
        batches (and files), close it FINISHED (FAILED on error)."""
        start_ms = int((time.time() if started is None else started) * 1000)
        with _quiet():
            run = _retry(self.client.create_run, self.experiment_id, start_time=start_ms, run_name=name, tags=tags)
            run_id = run.info.run_id
            try:
                param_list = [Param(k, _param_value(v)) for k, v in params.items()]
                for chunk in _chunks(param_list, _MAX_PARAMS):
                    _retry(self.client.log_batch, run_id, params=chunk)
                for chunk in _chunks(metrics, _MAX_METRICS):
                    _retry(self.client.log_batch, run_id, metrics=chunk)
                if log_files is not None:
                    log_files(run_id)
            except BaseException:
                _retry(self.client.set_terminated, run_id, "FAILED")
                raise
            _retry(self.client.set_terminated, run_id, "FINISHED")
        return run_id

    def _log_result_files(self, run_id: str, result: BacktestResult, plot_png: Path | None) -> None:
        """Per-artist scores and forecasts of every origin as CSVs, plus the plot if given."""
        with tempfile.TemporaryDirectory() as tmp:
            for file, attr in (("artist_scores.csv", "scores"), ("forecasts.csv", "forecast")):
                frames = [getattr(o, attr).with_columns(origin=pl.lit(o.origin)) for o in result.origins]
                pl.concat(frames, how="diagonal").write_csv(Path(tmp) / file)
            _retry(self.client.log_artifacts, run_id, tmp, "backtest")
            if plot_png is not None:
                shutil.copyfile(plot_png, Path(tmp) / PLOT_ARTIFACT)
                _retry(self.client.log_artifact, run_id, str(Path(tmp) / PLOT_ARTIFACT))

    def register_champion(
        self,
        run_id: str,
        served: ServedModel,
        *,
        horizon: int,
        origins: Sequence[date],
        backtest_coverage: float | None,
        reason: str,
        tags: dict[str, str] | None = None,
    ) -> Selection:
        """Log `served` into its backtest run as the version's one MLflow model (`ServedPyfunc`), register
        it with the selection's facts as version tags, and point the `champion` alias at it.

        The tags are written with the version and the alias moves last: a reader never sees the alias on
        a version without its facts. `tags` adds provenance (the Dagster run).
        """
        _retry(self.client.log_batch, run_id, tags=[RunTag(k, v) for k, v in owner_tags().items()])  # reopened here
        state, networks = split_networks(served.forecaster)
        first_day = served.trained_through + timedelta(days=1)  # the request the next vintage makes: the example
        with tempfile.TemporaryDirectory() as tmp, _pointed_at(self.uri):
            artifacts = {FORECASTER_ARTIFACT: str(Path(tmp) / "forecaster.pkl")}
            Path(artifacts[FORECASTER_ARTIFACT]).write_bytes(state)
            for k, network in enumerate(networks):
                artifacts[NETWORK_ARTIFACT.format(k)] = str(Path(tmp) / f"network_{k}.keras")
                network.save(artifacts[NETWORK_ARTIFACT.format(k)])
            packages = ("mlflow", "polars", "pandas", "numpy") + (("keras", "tensorflow-cpu") if networks else ())
            with mlflow.start_run(run_id=run_id):
                info = _retry(
                    mlflow.pyfunc.log_model,
                    name=MODEL_ARTIFACT,
                    python_model=ServedPyfunc(served, len(networks)),
                    artifacts=artifacts,
                    signature=PYFUNC_SIGNATURE,
                    input_example=pd.DataFrame({"start": [first_day.isoformat()], "horizon": [horizon]}),
                    pip_requirements=_requirements(*packages),
                )
            # The SQLite registry store resolves models:/<id> through a default MlflowClient(),
            # i.e. the global tracking URI: register while it still points here.
            try:
                _retry(self.client.create_registered_model, REGISTERED_MODEL)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            selection = Selection(
                model_version=0,  # known once registered
                data_through=served.trained_through,
                history_days=served.history_days,
                horizon=horizon,
                model=served.model,
                origins=tuple(origins),
                backtest_f_norm=served.backtest_f_norm,
                backtest_coverage=backtest_coverage,
                reason=reason,
            )
            mv = _retry(
                self.client.create_model_version,
                REGISTERED_MODEL,
                source=info.model_uri,
                run_id=run_id,
                model_id=info.model_id,
                tags={**selection_tags(selection), **(tags or {})},
            )
            _retry(self.client.set_registered_model_alias, REGISTERED_MODEL, CHAMPION_ALIAS, str(mv.version))
        return dataclasses.replace(selection, model_version=int(mv.version))


def run_page(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI served at `ui_url`, in the model-training view."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def runs_page(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI, model-training view, best f_norm first."""
    return (
        f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"
        "&orderByKey=metrics.%60f_norm%60&orderByAsc=false"
    )


def describe_run(result: BacktestResult, tags: dict[str, str], coverage: Coverage | None) -> str:
    """The run's description (markdown): f_norm first, then each origin's score and fit time, then provenance."""
    lines = [
        f"**f_norm {result.mean_f_norm:.4f}** (mean over {len(result.origins)} origins; 1.0 = perfect)",
        "",
        "| origin | f_norm | fit s |",
        "|---|---:|---:|",
    ]
    lines += [f"| {o.origin.isoformat()} | {o.f_norm:.4f} | {o.fit_seconds:.1f} |" for o in result.origins]
    if coverage is not None:
        lines += ["", f"80% interval coverage {coverage.overall:.0%}"]
    return "\n".join([*lines, "", _provenance(tags)])


def _provenance(tags: dict[str, str]) -> str:
    """Which Dagster run and asset materialised this MLflow run, if it came from Dagster."""
    if "dagster_run_id" not in tags:
        return "Logged outside Dagster."
    return f"Dagster run `{tags['dagster_run_id']}`, asset `{tags.get('dagster_asset', '?')}`."


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the running env: explicit, so MLflow skips its slow subprocess inference."""
    return [f"{name}=={pkg_version(name)}" for name in packages]


# ---- the champion record and the served model (the daily path) ----------------------------------

MONITORING_TAG = "musictrend/monitoring"


def selection_tags(selection: Selection) -> dict[str, str]:
    """A selection's facts as model-version tags (the version number is the version's own)."""
    return {
        "model": selection.model,
        "data_through": selection.data_through.isoformat(),
        "history_days": str(selection.history_days),
        "horizon": str(selection.horizon),
        "origins": ",".join(o.isoformat() for o in selection.origins),
        "backtest_f_norm": "" if selection.backtest_f_norm is None else repr(selection.backtest_f_norm),
        "backtest_coverage": "" if selection.backtest_coverage is None else repr(selection.backtest_coverage),
        "reason": selection.reason,
    }


def _selection(version: str, tags: dict[str, str]) -> Selection:
    """The selection a registered version's tags record; a version without them is named."""
    missing = [k for k in ("data_through", "history_days") if not tags.get(k)]
    if missing:
        raise ValueError(
            f"{REGISTERED_MODEL} version {version} lacks the tag(s) {', '.join(missing)}: it was not registered "
            "by musictrend's retrain; retrain (musictrend run --retrain) or move the champion alias off it"
        )

    def number(key: str) -> float | None:
        return float(tags[key]) if tags.get(key) else None

    return Selection(
        model_version=int(version),
        data_through=date.fromisoformat(tags["data_through"]),
        history_days=int(tags["history_days"]),
        horizon=int(tags.get("horizon") or DEFAULT_HORIZON),
        model=tags.get("model", ""),
        origins=tuple(date.fromisoformat(o) for o in tags.get("origins", "").split(",") if o),
        backtest_f_norm=number("backtest_f_norm"),
        backtest_coverage=number("backtest_coverage"),
        reason=tags.get("reason", ""),
    )


@contextlib.contextmanager
def _registry(uri: str) -> Iterator[MlflowClient | None]:
    """A client on the registry at `uri`, quiet; None when a SQLite store does not exist yet (no champion,
    and a reader must not create the store)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        yield None
        return
    with _quiet():
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)


def current_champion(uri: str) -> Selection | None:
    """The selection of the version `models:/<REGISTERED_MODEL>@champion` (None: no champion yet): the
    one record every reader of "which model serves" asks (forecast, automation, CLI, monitoring)."""
    with _registry(uri) as client:
        if client is None:
            return None
        try:
            mv = _retry(client.get_model_version_by_alias, REGISTERED_MODEL, CHAMPION_ALIAS)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return None
    return _selection(mv.version, mv.tags)


def registered_versions(uri: str) -> list[Selection]:
    """Every registered version's selection, oldest first: the champion selections made so far."""
    with _registry(uri) as client:
        if client is None:
            return []
        versions = _retry(client.search_model_versions, f"name = '{REGISTERED_MODEL}'")
    return sorted((_selection(mv.version, mv.tags) for mv in versions), key=lambda s: s.model_version)


class NoChampion(LookupError):
    """No model version carries the champion alias (or its model is not one the daily path can serve)."""


def load_served(uri: str, version: int) -> ServedModel:
    """The served model of one registered version, loaded through `mlflow.pyfunc` (a version never
    changes, so a reader that resolved the alias once loads what it resolved)."""
    with _pointed_at(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/{version}")
    served = loaded.unwrap_python_model()
    if not isinstance(served, ServedPyfunc):
        raise NoChampion(
            f"{REGISTERED_MODEL} version {version} was registered by an earlier release (its model has no "
            "interval calibration): retrain (musictrend run --retrain)"
        )
    return cast(ServedModel, served.served)


def load_champion(uri: str) -> tuple[Selection, ServedModel]:
    """The champion's selection and its served model, both of the version the alias points at now."""
    selection = current_champion(uri)
    if selection is None:
        raise NoChampion(
            f"no model version of {REGISTERED_MODEL} has the alias {CHAMPION_ALIAS!r} in "
            f"{uri}: run the full path first (musictrend run --retrain)"
        )
    return selection, load_served(uri, selection.model_version)


def tag_model_version(tracker: Tracker, version: int, tags: dict[str, Any]) -> None:
    """Tags on a registered version (shown on its page in the MLflow UI's Models tab)."""
    for key, value in tags.items():
        _retry(tracker.client.set_model_version_tag, REGISTERED_MODEL, str(version), key, str(value))


def _monitoring_experiment(tracker: Tracker) -> str:
    """The experiment of the live-monitoring runs, kept apart from the backtests' (one run per model there)."""
    from musictrend_dagster.core.settings import MLFLOW_MONITORING_EXPERIMENT

    found = _retry(tracker.client.get_experiment_by_name, MLFLOW_MONITORING_EXPERIMENT)
    if found:
        return found.experiment_id
    try:
        return _retry(
            tracker.client.create_experiment,
            MLFLOW_MONITORING_EXPERIMENT,
            artifact_location=tracker.artifact_dir.as_uri(),
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return cast(
            Experiment, _retry(tracker.client.get_experiment_by_name, MLFLOW_MONITORING_EXPERIMENT)
        ).experiment_id


def log_live_scores(
    tracker: Tracker, version: int, model: str, scores: pl.DataFrame, live: dict[str, Any] | None
) -> str | None:
    """The live scores of one registered version, in its run `live <model> v<version>` of the experiment
    `musictrend-monitoring` (None: nothing scored yet, nothing logged).

    `scores`: the version's vintages (vintage, days_scored, f_norm): metric `f_norm_<yyyymmdd>` per
    vintage, step = days scored, so its history shows the score as the days came in. `live`: the
    version's live score (f_norm, scored_days, step = days since its training data ended, as_of, ...):
    metric `live_f_norm` at `step`, timestamped with the newest actual day, and `live_*` tags on the
    registered version. Only changed values are logged, so a rerun on the same data adds nothing.
    The metrics are linked to the version's logged model.
    """
    scored = scores.drop_nulls("f_norm")
    if scored.is_empty() and not (live and live.get("f_norm") is not None):
        return None
    mv = _retry(tracker.client.get_model_version, REGISTERED_MODEL, str(version))
    with _quiet():
        experiment_id = _monitoring_experiment(tracker)
        found = _retry(
            tracker.client.search_runs,
            [experiment_id],
            max_results=1,
            filter_string=f"tags.model_version = '{version}'",
        )
        if found:
            run_id, latest = found[0].info.run_id, found[0].data.metrics
        else:
            tags = {
                MONITORING_TAG: "live",
                "model": model,
                "model_version": str(version),
                "registered_model": REGISTERED_MODEL,
                "source_run_id": mv.run_id,
                **owner_tags(),
            }
            run = _retry(tracker.client.create_run, experiment_id, run_name=f"live {model} v{version}", tags=tags)
            run_id, latest = run.info.run_id, {}
            _retry(tracker.client.set_terminated, run_id, "FINISHED")
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"f_norm_{_ymd(row['vintage'])}", row["f_norm"], now, int(row["days_scored"]), model_id=mv.model_id)
        for row in scored.iter_rows(named=True)
        if latest.get(f"f_norm_{_ymd(row['vintage'])}") != row["f_norm"]
    ]
    if live and live.get("f_norm") is not None:
        if latest.get("live_f_norm") != live["f_norm"]:
            stamp = int(time.mktime(live["as_of"].timetuple()) * 1000)
            metrics.append(Metric("live_f_norm", live["f_norm"], stamp, int(live["step"]), model_id=mv.model_id))
        tag_model_version(tracker, version, {f"live_{k}": v for k, v in live.items() if k != "step"})
    for chunk in _chunks(metrics, _MAX_METRICS):
        _retry(tracker.client.log_batch, run_id, metrics=chunk)
    return run_id
