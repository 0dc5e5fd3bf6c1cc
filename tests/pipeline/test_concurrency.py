"""Overlapping runs on one MUSICTREND_HOME: both `musictrend run`s started at the same instant on a
fresh home, plus a schedule-like `dagster job execute refresh_all` started while they train.

Every run must finish successfully (waiting for the others where it has to), never with DuckDB's
"Could not set lock on file" or SQLite's "database is locked", and the warehouse must look as if
the runs had gone one after the other: every file ingested once, models equal to a rebuild.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from musictrend_dagster.core.settings import MLFLOW_EXPERIMENT, REGISTERED_MODEL

sys.path.insert(0, str(Path(__file__).parent))
from test_faults import (
    ROWS,
    Run,
    Sandbox,
    champion_version,
    make_sandbox,
    read_only,
    submission_problems,
    warehouse_problems,
)
from test_pipeline import SERVICE_MODELS, newest_vintage, tiny_training

pytestmark = pytest.mark.slow  # whole runs of the graph

OVERLAP_TIMEOUT_S = 1200
LOCK_ERRORS = ("Could not set lock on file", "database is locked", "Conflicting lock")
RETRY_NOTICE = "retrying"  # tracking._retry's warning: a wait, not an error
# Three runs overlap on two cores: a network's origins in processes of their own would only add TensorFlow
# start-ups (test_faults runs them with the default).
SERIAL_ORIGINS = {"MUSICTREND_BACKTEST_WORKERS": "1"}


def scheduled_run(box: Sandbox) -> Run:
    """What a sensor's run request does, minus the daemon: the refresh_all job from the code location, for the
    newest vintage partition, in another process."""
    path = box.root / "logs" / "scheduled.json"
    path.write_text(json.dumps(tiny_training(epochs=1, models=SERVICE_MODELS)))
    paths = box.paths
    dagster = str(Path(sys.executable).with_name("dagster"))
    return Run(
        box,
        argv=[
            dagster,
            *("job", "execute", "-m", "musictrend_dagster.definitions", "-j", "refresh_all", "-c", str(path)),
            *("--tags", json.dumps({"dagster/partition": newest_vintage(paths.raw_dir)})),
        ],
        extra_env={
            "MUSICTREND_HOME": str(paths.home),
            "MUSICTREND_RAW_DIR": str(paths.raw_dir),
            "DAGSTER_HOME": str(paths.dagster_home),
            **SERIAL_ORIGINS,
        },
    )


def lock_errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(e in line for e in LOCK_ERRORS) and RETRY_NOTICE not in line]


@dataclass
class Overlap:
    box: Sandbox
    twins: list[Run]
    scheduled: Run
    scheduled_during_twins: bool
    codes: list[int | None]


@pytest.fixture(scope="module")
def overlap(tmp_path_factory) -> Overlap:
    box = make_sandbox(tmp_path_factory.mktemp("concurrency"))
    twins = [Run(box, extra_env=SERIAL_ORIGINS), Run(box, extra_env=SERIAL_ORIGINS)]
    deadline = time.monotonic() + 300
    while not any("backtest_" in r.stderr() for r in twins) and time.monotonic() < deadline:
        if all(r.proc.poll() is not None for r in twins):
            break
        time.sleep(0.5)
    scheduled = scheduled_run(box)
    during = any(r.proc.poll() is None for r in twins)
    try:
        # Three whole runs share the training pool one step at a time: the last to finish waits for
        # the others' training, so each may take several single-run times; a run that stops making
        # progress (a slot nobody frees) is still caught by the stall check within 90 s.
        codes = [r.wait(timeout=OVERLAP_TIMEOUT_S) for r in (*twins, scheduled)]
    finally:  # a run that timed out must not outlive the test with the others still running
        for run in (*twins, scheduled):
            run.kill()
    return Overlap(box, twins, scheduled, during, codes)


def test_two_runs_started_together_both_succeed(overlap):
    for run, code in zip(overlap.twins, overlap.codes, strict=False):
        assert code == 0, f"musictrend run exited {code}:\n{run.stderr()[-4000:]}"
        assert "musictrend run succeeded" in run.stdout()
        assert lock_errors(run.stderr()) == []


def test_a_scheduled_run_during_a_running_one_succeeds(overlap):
    assert overlap.scheduled_during_twins, "the scheduled run started after both CLI runs had finished"
    run = overlap.scheduled
    assert overlap.codes[2] == 0, f"dagster job execute exited {overlap.codes[2]}:\n{run.stderr()[-4000:]}"
    assert "RUN_SUCCESS" in run.stderr()
    assert lock_errors(run.stderr()) == []


def test_overlapping_runs_leave_the_state_of_sequential_ones(overlap):
    paths = overlap.box.paths
    assert warehouse_problems(paths) == []
    assert submission_problems(paths) == []
    con = read_only(paths)
    try:
        assert con.execute("SELECT count(*) FROM raw_user_actions").fetchone()[0] == ROWS
        assert con.execute("SELECT count(*), count(DISTINCT file) FROM ingested_files").fetchone() == (2, 2)
    finally:
        con.close()
    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(SERVICE_MODELS.split(",") * 3)
    assert {r.info.status for r in runs} == {"FINISHED"}
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert len(versions) == 3
    assert champion_version(paths) in {int(v.version) for v in versions}
