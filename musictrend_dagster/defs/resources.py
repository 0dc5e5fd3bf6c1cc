"""Resources: the DuckDB warehouse (one process at a time) and the MLflow store."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from filelock import FileLock
from pydantic import Field

from musictrend_dagster.core import settings
from musictrend_dagster.core.data import warehouse
from musictrend_dagster.core.data.engines import Engine, duckdb_engine
from musictrend_dagster.core.settings import DEFAULT_MLFLOW_UI_URL, MLFLOW_UI_URL_VAR, ConfigError, Paths, mlflow_ui_url


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
        description="What runs the ingest and the SQL models: `duckdb` (in this "
        "process) or `spark` (MUSICTREND_ENGINE).",
    )
    spark_master: str = Field(
        default="local[*]",
        description="The Spark master or Spark Connect URL when the engine is spark (MUSICTREND_SPARK_MASTER).",
    )

    def data_engine(self) -> Engine:
        """The engine object the core's ingest and SQL models run on.

        Spark's session comes from dagster-pyspark's ``LazyPySparkResource`` (one per process:
        Spark's getOrCreate hands every step of an in-process run the same session).
        """
        if self.engine == "duckdb":
            return duckdb_engine()
        if self.engine != "spark":
            raise ConfigError(
                f"{settings.ENGINE_VAR} must be one of {', '.join(settings.ENGINES)}, got {self.engine!r}"
            )
        try:
            from dagster_pyspark import LazyPySparkResource
        except ImportError:
            raise ConfigError(
                f"{settings.ENGINE_VAR}=spark needs the spark extra: pip install 'musictrend[spark]'"
            ) from None
        from musictrend_dagster.core.data.engines.spark import SparkEngine, check_java, spark_config

        if not self.spark_master.startswith("sc://"):  # a Connect client needs no JVM
            check_java()
        return SparkEngine(LazyPySparkResource(spark_config=spark_config(self.spark_master)).spark_session)

    @property
    def engine_metadata(self) -> dict[str, str]:
        """What the UI shows next to each materialisation: which engine made it, and where."""
        return {"engine": self.engine, **({"spark_master": self.spark_master} if self.engine == "spark" else {})}

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
        default=DEFAULT_MLFLOW_UI_URL,
        description=f"Where `musictrend mlflow-ui` serves the MLflow UI (env {MLFLOW_UI_URL_VAR}); "
        "every MLflow link in Dagster starts with it.",
    )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        from musictrend_dagster.core.service.tracking import run_page

        return run_page(self.ui_url, experiment_id, run_id)

    def runs_url(self, experiment_id: str) -> str:
        from musictrend_dagster.core.service.tracking import runs_page

        return runs_page(self.ui_url, experiment_id)

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


class OutputResource(dg.ConfigurableResource):
    """Where the forecasts (CSV and Parquet, every source) and the competition submission are written."""

    submission_path: str = Field(description="Path of mars_tianchi_artist_plays_predict.csv.")
    output_dir: str = Field(description="Folder of forecasts.csv and forecasts.parquet.")

    def forecasts_paths(self) -> tuple[Path, Path]:
        """(forecasts.csv, forecasts.parquet)."""
        return Path(self.output_dir) / settings.FORECASTS_CSV, Path(self.output_dir) / settings.FORECASTS_PARQUET


def default_resources(paths: Paths | None = None) -> dict:
    """Resources for this process's environment (MUSICTREND_HOME, MUSICTREND_RAW_DIR, MLFLOW_TRACKING_URI,
    MUSICTREND_MLFLOW_UI_URL, MUSICTREND_HORIZON)."""
    paths = paths or Paths.from_env()
    return {
        "warehouse": WarehouseResource(
            database=str(paths.warehouse),
            raw_dir=str(paths.raw_dir),
            lake_dir=str(paths.lake),
            engine=settings.engine(),
            spark_master=settings.spark_master(),
        ),
        "mlflow": MlflowResource(
            tracking_uri=paths.mlflow_uri, artifact_dir=str(paths.mlflow_artifacts), ui_url=mlflow_ui_url()
        ),
        "output": OutputResource(
            submission_path=str(paths.submission),
            output_dir=str(paths.output_dir),
        ),
        "forecasting": ForecastSettingsResource(horizon=settings.horizon()),
    }
