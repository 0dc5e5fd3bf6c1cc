"""Resources: the DuckDB warehouse (one process at a time), the MLflow store, the outputs and the service's
policy. Every setting is a resource field filled through `dg.EnvVar`, so the UI's Resources page names
the variable, and a run reads the variable's value when it starts (no code change, no reload)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
from filelock import FileLock
from pydantic import Field

from musictrend_dagster.core import settings
from musictrend_dagster.core.data import warehouse
from musictrend_dagster.core.data.engines import Engine, duckdb_engine
from musictrend_dagster.core.settings import (
    ENGINE_VAR,
    MAX_QUARANTINE_SHARE_VAR,
    MLFLOW_UI_URL_VAR,
    RETRAIN_EVERY_DAYS_VAR,
    SPARK_MASTER_VAR,
    ConfigError,
    Paths,
)


def _value(field: str) -> str:
    """A field's value; a resource used outside a run (the CLI's summary) still holds its dg.EnvVar."""
    return (field.get_value("") or "") if isinstance(field, dg.EnvVar) else field


class WarehouseResource(dg.ConfigurableResource):
    """DuckDB warehouse file, the raw-file folder and the Parquet lake it mirrors them into.

    DuckDB allows one process per database file, so every connection (read or write)
    holds an inter-process file lock next to the database; a second run waits instead
    of failing with "Could not set lock on file". The `duckdb` concurrency pool keeps
    Dagster from even starting competing steps.
    """

    database: str = Field(description="Path of the DuckDB warehouse file.")
    raw_dir: str = Field(description="Folder holding mars_tianchi_*.csv raw files.")
    lake_dir: str = Field(
        default="",
        description="Root of the Parquet lake (Hive-partitioned by day) the raw files "
        "are mirrored into; empty: `lake` next to the database.",
    )
    memory_limit: str = Field(default="4GB", description="DuckDB memory_limit for each connection.")
    lock_timeout_s: float = Field(default=3600, description="How long to wait for another process's connection.")
    engine: str = Field(
        default="duckdb",
        description=f"What runs the ingest and the SQL models: `duckdb` (in this process) or `spark` ({ENGINE_VAR}).",
    )
    spark_master: str = Field(
        default="local[*]",
        description=f"The Spark master or Spark Connect URL when the engine is spark ({SPARK_MASTER_VAR}).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A wrong value fails the step at its start, naming the variable."""
        settings.parse_engine(_value(self.engine))
        settings.parse_spark_master(_value(self.spark_master))

    @property
    def engine_name(self) -> str:
        return settings.parse_engine(_value(self.engine))

    def data_engine(self) -> Engine:
        """The engine object the core's ingest and SQL models run on.

        Spark's session comes from dagster-pyspark's ``LazyPySparkResource`` (one per process:
        Spark's getOrCreate hands every step of an in-process run the same session).
        """
        if self.engine_name == "duckdb":
            return duckdb_engine()
        try:
            from dagster_pyspark import LazyPySparkResource
        except ImportError:
            raise ConfigError(
                f"{settings.ENGINE_VAR}=spark needs the spark extra: pip install 'musictrend[spark]'"
            ) from None
        from musictrend_dagster.core.data.engines.spark import SparkEngine, check_java, spark_config

        master = settings.parse_spark_master(_value(self.spark_master))
        if not master.startswith("sc://"):  # a Connect client needs no JVM
            check_java()
        return SparkEngine(LazyPySparkResource(spark_config=spark_config(master)).spark_session)

    @property
    def engine_metadata(self) -> dict[str, str]:
        """What the UI shows next to each materialisation: which engine made it, and where."""
        name = self.engine_name
        return {
            "engine": name,
            **({"spark_master": settings.parse_spark_master(_value(self.spark_master))} if name == "spark" else {}),
        }

    @property
    def lake(self) -> Path:
        return Path(self.lake_dir) if self.lake_dir else Path(self.database).parent / "lake"

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        path = Path(self.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path) + ".lock", timeout=self.lock_timeout_s)
            lock.acquire()
        except PermissionError as exc:
            raise ConfigError(
                f"{exc.filename or path.parent}: cannot write there (permission denied); "
                "point MUSICTREND_HOME at a writable folder"
            ) from None
        try:
            try:
                con = warehouse.connect(path, memory_limit=self.memory_limit)
            except duckdb.IOException as exc:
                raise ConfigError(f"{path}: cannot open the warehouse: {exc}") from None
            try:
                yield con
            finally:
                con.close()
        finally:
            lock.release()


class MlflowResource(dg.ConfigurableResource):
    """Where MLflow runs and models go (SQLite backend; MLflow 3 refuses the file store)."""

    tracking_uri: str = Field(description="MLflow tracking URI, e.g. sqlite:///.../mlflow.db.")
    artifact_dir: str = Field(description="Folder for run artifacts and logged models.")
    ui_url: str = Field(
        default=settings.DEFAULT_MLFLOW_UI_URL,
        description=f"Where `musictrend mlflow-ui` serves the MLflow UI (env {MLFLOW_UI_URL_VAR}); "
        "every MLflow link in Dagster starts with it.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A wrong value fails the step at its start, naming the variable."""
        settings.parse_mlflow_ui_url(_value(self.ui_url))

    @property
    def ui(self) -> str:
        return settings.parse_mlflow_ui_url(_value(self.ui_url))

    def run_url(self, experiment_id: str, run_id: str) -> str:
        from musictrend_dagster.core.service.tracking import run_page

        return run_page(self.ui, experiment_id, run_id)

    def runs_url(self, experiment_id: str) -> str:
        from musictrend_dagster.core.service.tracking import runs_page

        return runs_page(self.ui, experiment_id)

    def tracker(self):
        from musictrend_dagster.core.service.tracking import Tracker

        return Tracker(self.tracking_uri, Path(self.artifact_dir))


class ForecastSettingsResource(dg.ConfigurableResource):
    """What every forecast covers: the backtest windows, the models' curves, the interval calibration
    and the served vintage all take this horizon."""

    horizon: int = Field(
        default=settings.DEFAULT_HORIZON,
        ge=1,
        le=settings.MAX_HORIZON,
        description=f"Days ahead each forecast covers, 1..{settings.MAX_HORIZON} ({settings.HORIZON_VAR}).",
    )
    backtest_workers: str = Field(
        default=settings.DEFAULTS[settings.BACKTEST_WORKERS_VAR],
        description="Processes a network's backtest origins run in: a number, or auto = the cores "
        f"({settings.BACKTEST_WORKERS_VAR}).",
    )
    backtest_max_origins: str = Field(
        default=settings.DEFAULTS[settings.BACKTEST_MAX_ORIGINS_VAR],
        description=f"Origins of the backtest plan at most, 1..{settings.MAX_BACKTEST_ORIGINS}; fewer for a large "
        f"catalogue ({settings.BACKTEST_MAX_ORIGINS_VAR}).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A wrong value fails the step at its start, naming the variable."""
        settings.parse_backtest_workers(_value(self.backtest_workers))
        settings.parse_backtest_max_origins(_value(self.backtest_max_origins))

    @property
    def workers(self) -> int:
        return settings.parse_backtest_workers(_value(self.backtest_workers))

    @property
    def max_origins(self) -> int:
        return settings.parse_backtest_max_origins(_value(self.backtest_max_origins))


class OutputResource(dg.ConfigurableResource):
    """Where the forecasts (CSV and Parquet, every source) and the competition submission are written."""

    submission_path: str = Field(description="Path of mars_tianchi_artist_plays_predict.csv (the newest vintage's).")
    output_dir: str = Field(description="Folder of forecasts.csv and forecasts.parquet (the newest vintage's).")

    def vintage_path(self, vintage: date) -> Path:
        """Where one vintage's submission file goes: vintages/<vintage>/ next to the newest one."""
        path = Path(self.submission_path)
        return path.parent / "vintages" / vintage.isoformat() / path.name

    def forecasts_paths(self, vintage: date | None = None) -> tuple[Path, Path]:
        """(forecasts.csv, forecasts.parquet): the newest vintage's, or one vintage's under vintages/<vintage>/."""
        folder = Path(self.output_dir) if vintage is None else Path(self.output_dir) / "vintages" / vintage.isoformat()
        return folder / settings.FORECASTS_CSV, folder / settings.FORECASTS_PARQUET


class ServiceResource(dg.ConfigurableResource):
    """The service's policy: when bad input stops a run, and when the champion is re-chosen."""

    max_quarantine_share: str = Field(
        default=settings.DEFAULTS[MAX_QUARANTINE_SHARE_VAR],
        description=f"Share (0..1) of quarantined action lines above which the run stops ({MAX_QUARANTINE_SHARE_VAR}).",
    )
    retrain_every_days: str = Field(
        default=settings.DEFAULTS[RETRAIN_EVERY_DAYS_VAR],
        description=f"Days of new data after which the champion is re-chosen, 0: never ({RETRAIN_EVERY_DAYS_VAR}).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A wrong value fails the step at its start, naming the variable."""
        settings.parse_max_quarantine_share(_value(self.max_quarantine_share))
        settings.parse_retrain_every_days(_value(self.retrain_every_days))

    @property
    def quarantine_limit(self) -> float:
        return settings.parse_max_quarantine_share(_value(self.max_quarantine_share))

    @property
    def retrain_cadence(self) -> int:
        return settings.parse_retrain_every_days(_value(self.retrain_every_days))


def default_resources(paths: Paths | None = None) -> dict:
    """Resources for this process's environment. Settings are `dg.EnvVar`s (unset ones are set to their
    defaults here, so the variable is always what a run reads; the horizon is read once, as a number);
    paths derive from MUSICTREND_HOME,
    MUSICTREND_RAW_DIR and MLFLOW_TRACKING_URI, or from `paths` (the CLI's --home, a test's folder).
    A wrong value fails here, naming the variable."""
    paths = paths or Paths.from_env()
    for var in settings.DEFAULTS:
        if not os.environ.get(var):
            os.environ[var] = settings.default_for(var)
    settings.check_environment()
    return {
        "warehouse": WarehouseResource(
            database=str(paths.warehouse),
            raw_dir=str(paths.raw_dir),
            lake_dir=str(paths.lake),
            engine=dg.EnvVar(ENGINE_VAR),
            spark_master=dg.EnvVar(SPARK_MASTER_VAR),
        ),
        "mlflow": MlflowResource(
            tracking_uri=paths.mlflow_uri,
            artifact_dir=str(paths.mlflow_artifacts),
            ui_url=dg.EnvVar(MLFLOW_UI_URL_VAR),
        ),
        "output": OutputResource(
            submission_path=str(paths.submission),
            output_dir=str(paths.output_dir),
        ),
        "service": ServiceResource(
            max_quarantine_share=dg.EnvVar(MAX_QUARANTINE_SHARE_VAR),
            retrain_every_days=dg.EnvVar(RETRAIN_EVERY_DAYS_VAR),
        ),
        "forecasting": ForecastSettingsResource(
            horizon=settings.horizon(),
            backtest_workers=dg.EnvVar(settings.BACKTEST_WORKERS_VAR),
            backtest_max_origins=dg.EnvVar(settings.BACKTEST_MAX_ORIGINS_VAR),
        ),
    }
