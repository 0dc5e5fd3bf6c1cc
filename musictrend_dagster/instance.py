"""The Dagster instance under $MUSICTREND_HOME/dagster, written on first use.

Pool limits serialise every step that opens the DuckDB warehouse (one writer per file)
and every training step (two cores; one MLflow SQLite writer), across all runs.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

DUCKDB_POOL = "duckdb"
TRAINING_POOL = "training"

DAGSTER_YAML = """\
# Written by musictrend on first use; edit freely, it is not overwritten.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
    granularity: op
  runs:
    max_concurrent_runs: 4
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 30
nux:
  enabled: false
"""


def ensure_instance(dagster_home: Path) -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml unless one exists; return its path.

    The instance's SQLite storage is created here too, under a file lock: two processes
    creating it at once leave two alembic heads and an instance nothing can open again.
    """
    import dagster as dg

    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    with FileLock(str(dagster_home / ".init.lock")):
        if not path.exists():
            tmp = path.with_suffix(".yaml.tmp")
            tmp.write_text(DAGSTER_YAML)
            tmp.replace(path)
        with dg.DagsterInstance.from_config(str(dagster_home)):
            pass
    return path
