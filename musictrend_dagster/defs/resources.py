"""Resources: the DuckDB warehouse (one process at a time) and the MLflow store."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from filelock import FileLock
from pydantic import Field

from musictrend_dagster.core import ingest
from musictrend_dagster.settings import Paths


class WarehouseResource(dg.ConfigurableResource):
    """DuckDB file plus the raw-file folder it is loaded from.

    DuckDB allows one process per database file, so every connection (read or write)
    holds an inter-process file lock next to the database; a second run waits instead
    of failing with "Could not set lock on file". The `duckdb` concurrency pool keeps
    Dagster from even starting competing steps.
    """

    database: str = Field(description="Path of the DuckDB warehouse file.")
    raw_dir: str = Field(description="Folder holding mars_tianchi_*.csv raw files.")
    memory_limit: str = Field(default="4GB", description="DuckDB memory_limit for each connection.")
    lock_timeout_s: float = Field(default=3600, description="How long to wait for another process's connection.")

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        path = Path(self.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=self.lock_timeout_s):
            con = ingest.connect(path, memory_limit=self.memory_limit)
            try:
                yield con
            finally:
                con.close()


class MlflowResource(dg.ConfigurableResource):
    """Where MLflow runs and models go (SQLite backend; MLflow 3 refuses the file store)."""

    tracking_uri: str = Field(description="MLflow tracking URI, e.g. sqlite:///.../mlflow.db.")
    artifact_dir: str = Field(description="Folder for run artifacts and logged models.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="Where `make mlflow-ui` serves the MLflow UI.")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def tracker(self):
        from musictrend_dagster.core.tracking import Tracker

        return Tracker(self.tracking_uri, Path(self.artifact_dir))


class OutputResource(dg.ConfigurableResource):
    """Where the competition submission file is written."""

    submission_path: str = Field(description="Path of mars_tianchi_artist_plays_predict.csv.")


def default_resources(paths: Paths | None = None) -> dict:
    """Resources for this process's environment (MUSICTREND_HOME, MUSICTREND_RAW_DIR, MLFLOW_TRACKING_URI)."""
    paths = paths or Paths.from_env()
    return {
        "warehouse": WarehouseResource(database=str(paths.warehouse), raw_dir=str(paths.raw_dir)),
        "mlflow": MlflowResource(tracking_uri=paths.mlflow_uri, artifact_dir=str(paths.mlflow_artifacts)),
        "output": OutputResource(submission_path=str(paths.submission)),
    }
