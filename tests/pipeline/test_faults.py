"""Kill -9 a `musictrend run` / `musictrend ingest` at its worst moments; the next run must succeed
on a consistent warehouse and lake.

The run is the real CLI (`musictrend_dagster.cli.main([verb, ...])`) in a subprocess, with two
additions injected by a small driver: one-epoch training of the smallest networks (the launchpad
config a user would type) and, optionally, a fault point. A fault point wraps one product function
so that the process prints a marker and sleeps at the most damaging place: ingest while a file's Parquet is
written aside (before anything is published), after the new files were moved into the lake but
before the manifest COMMIT, after the COMMIT but before the replaced files are deleted, inside
the transaction that removes a deleted drop's rows; a SQL model after CREATE OR REPLACE but
before COMMIT, a backtest between two origins with TensorFlow mid-training, MLflow between
create_run and set_terminated, the submission after the temp file is written but before the
rename. The test SIGKILLs the process on the marker, so the kill lands inside the step every time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from test_pipeline import SERVICE_MODELS, tiny_training

from musictrend_dagster.core.data import sql_models
from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.service.outputs import read_submission
from musictrend_dagster.core.service.store import query
from musictrend_dagster.core.service.tracking import CHAMPION_ALIAS
from musictrend_dagster.core.settings import MLFLOW_EXPERIMENT, REGISTERED_MODEL, Paths

pytestmark = pytest.mark.slow  # whole runs of the graph

ARTISTS, DAYS, ROWS, SEED = 5, 150, 40_000, 3
MARKER = "FAULT-POINT"
RUN_TIMEOUT_S = 300
STALL_S = 90  # no run is silent this long (the slowest step logs every few seconds)

# argv: home, fault ("" = none), extra run config (JSON), asset selection (comma-separated, "" = all), verb,
# the training ops' config (JSON). Prints "FAULT-POINT <fault>" on stdout when the fault point is reached,
# then sleeps there.
DRIVER = r"""
import json, os, sys, time
home, fault, extra, selection, verb = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
training = json.loads(sys.argv[6])

def hit():
    print("FAULT-POINT " + fault, flush=True)
    time.sleep(3600)

import dagster as dg

_execute = dg.JobDefinition.execute_in_process

def execute_in_process(self, run_config=None, **kwargs):
    run_config = dict(run_config or {})
    ops = dict(training)
    for op, cfg in [*run_config.get("ops", {}).items(), *extra.get("ops", {}).items()]:
        ops[op] = {"config": {**ops.get(op, {}).get("config", {}), **cfg["config"]}}
    if selection:  # the CLI runs the data and models, then the vintage partition: each gets its chosen assets
        from musictrend_dagster.definitions import defs
        graph = defs.resolve_asset_graph()
        chosen = [dg.AssetKey.from_user_string(k) for k in selection.split(",")]
        mine = [k for k in chosen if graph.get(k).is_partitioned == (kwargs.get("partition_key") is not None)]
        kwargs["asset_selection"] = mine or kwargs.get("asset_selection")
    if kwargs.get("asset_selection"):
        ops = {op: cfg for op, cfg in ops.items() if dg.AssetKey(op.split("__")) in kwargs["asset_selection"]}
    # daily_forecast has no backtests
    ops = {op: cfg for op, cfg in ops.items() if op in {node.name for node in self.graph.nodes}}
    return _execute(self, run_config={**run_config, "ops": ops}, **kwargs)

dg.JobDefinition.execute_in_process = execute_in_process

if fault == "ingest":  # the bulk file's Parquet written aside, nothing published
    from musictrend_dagster.core.data.engines import duckdb as engine
    _write_good = engine._write_good
    def write_then_die(con, fmt, *args, **kwargs):
        loaded = _write_good(con, fmt, *args, **kwargs)
        if fmt.kind == "actions":
            hit()
        return loaded
    engine._write_good = write_then_die
elif fault == "lake_place":  # new files moved into the lake, the manifest not yet swapped
    from musictrend_dagster.core.data.lake import Lake
    _place = Lake.place
    def place_then_die(self, dataset, *args, **kwargs):
        placed = _place(self, dataset, *args, **kwargs)
        if dataset.name == "user_actions":
            hit()
        return placed
    Lake.place = place_then_die
elif fault == "lake_commit":  # the manifest committed, the replaced files not yet deleted
    from musictrend_dagster.core.data.lake import Lake
    _delete = Lake.delete
    def delete_then_die(self, paths):
        if any(p.startswith("user_actions/") for p in paths):
            hit()
        return _delete(self, paths)
    Lake.delete = delete_then_die
elif fault == "lake_remove":  # inside the transaction that removes a deleted drop's rows
    from musictrend_dagster.core.data.lake import Lake
    _swap = Lake.swap
    def swap_then_die(self, con, dataset, source_file, load_id, placed, change):
        superseded = _swap(self, con, dataset, source_file, load_id, placed, change)
        if change == "removed":
            hit()
        return superseded
    Lake.swap = swap_then_die
elif fault == "sql":
    from musictrend_dagster.core.data import sql_models
    _build_model = sql_models.build_model
    class StopBeforeCommit:
        def __init__(self, con):
            self.con = con
        def execute(self, sql, *args):
            if sql.strip().upper().startswith("COMMIT"):
                hit()
            return self.con.execute(sql, *args)
    def build_then_die(con, model, *args, **kwargs):
        return _build_model(StopBeforeCommit(con) if model.name == "artist_daily" else con, model, *args, **kwargs)
    sql_models.build_model = build_then_die
elif fault == "train":
    from musictrend_dagster.defs.assets import models
    _backtest = models.backtest
    def backtest_then_die(factory, history, songs, origins, on_origin=None, **kwargs):
        def first_origin_done(result):
            on_origin(result)
            hit()
        return _backtest(factory, history, songs, origins, on_origin=first_origin_done, **kwargs)
    models.backtest = backtest_then_die
elif fault == "mlflow":
    from musictrend_dagster.core.service.tracking import Tracker
    def files_then_die(self, run_id, result, plot_png):
        hit()
    Tracker._log_result_files = files_then_die
elif fault == "submission":
    _replace = os.replace
    def replace_then_die(src, dst, *args, **kwargs):
        if str(dst).endswith("mars_tianchi_artist_plays_predict.csv"):
            hit()
        return _replace(src, dst, *args, **kwargs)
    os.replace = replace_then_die
elif fault:
    raise SystemExit(f"unknown fault {fault!r}")

from musictrend_dagster import cli
# a selection of training steps is a retrain: only the full path (refresh_all) holds them
retrain = verb == "run" and any(s.startswith("backtest/") or s == "champion" for s in selection.split(","))
sys.exit(cli.main([verb, "--home", home] + ["--retrain"] * retrain))
"""


@dataclass(frozen=True)
class Sandbox:
    """A test's MUSICTREND_HOME plus the cwd, $HOME and $TMPDIR its runs get, and a log folder; the raw
    folder is home/raw, or beside home (given as MUSICTREND_RAW_DIR) with `raw_outside_home`."""

    root: Path
    raw_outside_home: bool = False

    @property
    def paths(self) -> Paths:
        home = self.root / "home"
        return Paths.from_env(home=home, raw_dir=self.root / "raw" if self.raw_outside_home else home / "raw")

    def env(self) -> dict[str, str]:
        """This interpreter's environment minus anything pointing musictrend elsewhere; the service's candidates."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTREND_", "DAGSTER_", "MLFLOW_"))}
        env.update(
            HOME=str(self.root / "user"),
            TMPDIR=str(self.root / "tmp"),
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            MUSICTREND_MODELS=SERVICE_MODELS,
        )
        if self.raw_outside_home:
            env["MUSICTREND_RAW_DIR"] = str(self.paths.raw_dir)
        return env


def make_sandbox(root: Path, rows: int = ROWS, raw_outside_home: bool = False) -> Sandbox:
    box = Sandbox(root, raw_outside_home)
    for sub in ("cwd", "user", "tmp", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    generate_synthetic(box.paths.raw_dir, artists=ARTISTS, days=DAYS, rows=rows, seed=SEED, progress=False)
    return box


class Run:
    """One `musictrend run` subprocess (one-epoch training, optional fault point, config and selection),
    or any other command (`argv`) run in the sandbox."""

    def __init__(
        self,
        box: Sandbox,
        fault: str = "",
        config: dict | None = None,
        select: list[str] | None = None,
        argv: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        verb: str = "run",
    ) -> None:
        self.box = box
        stamp = time.time_ns()
        self.out_path = box.root / "logs" / f"{stamp}.stdout"
        self.err_path = box.root / "logs" / f"{stamp}.stderr"
        argv = argv or [
            sys.executable,
            "-c",
            DRIVER,
            str(box.paths.home),
            fault,
            json.dumps(config or {}),
            ",".join(select or []),
            verb,
            json.dumps(tiny_training(epochs=1, models=SERVICE_MODELS)["ops"]),
        ]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=err,
                env=box.env() | (extra_env or {}),
                cwd=box.root / "cwd",
                start_new_session=True,
            )

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, marker: str | None = None, timeout: float = RUN_TIMEOUT_S, stall: float = STALL_S) -> int | None:
        """Exit code, or None when `marker` showed up on stdout first. When every run of the sandbox
        is silent for `stall` seconds (nobody is making progress: a run waits for a slot nobody
        will free) or this run passes `timeout`, it is killed and the test fails with its log."""
        started = time.monotonic()
        last_size, last_change = -1, started
        while True:
            code = self.proc.poll()
            if marker and marker in self.stdout():
                return None
            if code is not None:
                return code
            now = time.monotonic()
            size = sum(p.stat().st_size for p in self.err_path.parent.iterdir())  # any run of the sandbox
            if size != last_size:
                last_size, last_change = size, now
            if now - last_change > stall or now - started > timeout:
                self.kill()
                pytest.fail(
                    f"musictrend run pid {self.proc.pid} {'silent' if now - started <= timeout else 'running'} for "
                    f"{now - last_change:.0f}s; Dagster pool slots claimed: "
                    f"{claimed_slots(self.box.paths)}\n--- log tail ---\n{self.stderr()[-3000:]}"
                )
            time.sleep(0.2)


def claimed_slots(paths: Paths) -> list[tuple[str, str, str]]:
    """(pool, run id, step) of every claimed Dagster pool slot: who a silent run is waiting for."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        storage = instance.event_log_storage
        claimed = [
            (pool, s.run_id, s.step_key)
            for pool in storage.get_concurrency_keys()
            for s in storage.get_concurrency_info(pool).claimed_slots
        ]
    return claimed


def run_ok(box: Sandbox, **kwargs) -> Run:
    run = Run(box, **kwargs)
    code = run.wait()
    assert code == 0, f"musictrend run exited {code}:\n{run.stdout()}\n{run.stderr()[-4000:]}"
    return run


def kill_at(box: Sandbox, fault: str, **kwargs) -> Run:
    """Start a run (or `verb=...`) and SIGKILL it the moment it reaches the fault point."""
    run = Run(box, fault, **kwargs)
    code = run.wait(marker=f"{MARKER} {fault}")
    if code is not None:
        pytest.fail(f"run exited {code} before fault point {fault!r}:\n{run.stderr()[-4000:]}")
    run.kill()
    return run


def read_only(paths: Paths) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(paths.warehouse), read_only=True)


def count_lines(path: Path) -> int:
    """Lines on disk of a raw source (its plain or gzip file), counted here, not by the product."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            data = candidate.read_bytes()
            data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            return data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
    return -1


def warehouse_problems(paths: Paths, complete: bool = True) -> list[str]:
    """Everything inconsistent in the warehouse and the lake: empty list = consistent.

    Always (also right after a kill): every file the manifest lists exists and holds the rows it
    says; each source's rows in the views and quarantine entries match its `ingested_files` row;
    no rows from a source that is not recorded; model_features has a row per artist_daily row.
    After a complete run (`complete`) also: the lake holds no file the manifest does not list,
    every recorded source's line count is the line count of the file on disk now, and every SQL
    table model equals a fresh rebuild from its SELECT (incremental ones included). (A kill
    between ingest and the SQL models leaves the models a step behind: derived, not corrupt.)
    """
    import pyarrow.parquet as pq

    problems: list[str] = []
    con = read_only(paths)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        manifest = con.execute("SELECT path, rows FROM lake_files").fetchall()
        for rel, rows in manifest:
            path = paths.lake / rel
            if not path.is_file():
                problems.append(f"lake_files lists {rel}, which does not exist")
            elif pq.read_metadata(path).num_rows != rows:
                problems.append(f"{rel}: {pq.read_metadata(path).num_rows} rows, lake_files says {rows}")
        on_disk = {str(p.relative_to(paths.lake)) for p in paths.lake.rglob("*") if p.is_file()}
        if complete and on_disk != {rel for rel, _ in manifest}:
            problems.append(
                f"lake files the manifest does not list: {sorted(on_disk - {rel for rel, _ in manifest})[:5]}"
            )
        for kind, table, quarantine in (
            ("songs", "raw_songs", "quarantine_songs"),
            ("actions", "raw_user_actions", "quarantine_user_actions"),
        ):
            files = query(
                con, "SELECT file, lines_read, loaded, quarantined FROM ingested_files WHERE kind = ?", [kind]
            )
            got = dict(con.execute(f"SELECT source_file, count(*) FROM {table} GROUP BY ALL").fetchall())
            bad = dict(con.execute(f"SELECT source_file, count(*) FROM {quarantine} GROUP BY ALL").fetchall())
            for row in files.iter_rows(named=True):
                name = row["file"]
                if got.get(name, 0) != row["loaded"]:
                    problems.append(
                        f"{table}: {got.get(name, 0)} rows from {name}, ingested_files says {row['loaded']}"
                    )
                if bad.get(name, 0) != row["quarantined"]:
                    problems.append(
                        f"{quarantine}: {bad.get(name, 0)} rows from {name}, ingested_files says {row['quarantined']}"
                    )
                if row["loaded"] + row["quarantined"] != row["lines_read"]:
                    problems.append(f"{name}: loaded + quarantined != lines read in {row}")
                on_disk_lines = count_lines(paths.raw_dir / name)
                if complete and row["lines_read"] != on_disk_lines:
                    problems.append(f"{name}: {on_disk_lines} lines on disk, ingested_files {row}")
            for name in (set(got) | set(bad)) - set(files["file"].to_list()):
                problems.append(f"{table}: rows from {name}, which ingested_files does not record")
        for model in sql_models.load_models(sql_models.SQL_DIR) if complete else []:
            if model.materialized == "view" or model.name not in tables:
                continue
            body = sql_models.full_select(model)
            for a, b in (("t", "fresh"), ("fresh", "t")):
                diff = con.execute(
                    f'WITH fresh AS ({body}), t AS (SELECT * FROM "{model.name}") '
                    f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})"
                ).fetchone()[0]
                if diff:
                    problems.append(f"{model.name}: {diff} rows in {a} but not in {b}")
        if "model_features" in tables:
            (features,) = con.execute("SELECT count(*) FROM model_features").fetchone()
            (daily,) = con.execute("SELECT count(*) FROM artist_daily").fetchone()
            if features != daily:
                problems.append(f"model_features has {features} rows, artist_daily {daily}")
    finally:
        con.close()
    return problems


def submission_problems(paths: Paths) -> list[str]:
    """The submission parses and covers every artist for 60 consecutive days after the log."""
    if not paths.submission.is_file():
        return [f"{paths.submission} missing"]
    frame = read_submission(paths.submission)
    con = read_only(paths)
    try:
        artists = sorted(r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall())
        (last,) = con.execute("SELECT max(ds) FROM artist_daily").fetchone()
    finally:
        con.close()
    problems = []
    if sorted(frame["artist_id"].unique().to_list()) != artists:
        problems.append("submission artists differ from artist_daily")
    if frame.height != len(artists) * 60 or frame.select("artist_id", "ds").is_duplicated().any():
        problems.append(f"submission has {frame.height} rows, expected {len(artists) * 60} distinct")
    if frame["ds"].min() != last + timedelta(days=1) or frame["ds"].max() != last + timedelta(days=60):
        problems.append(f"submission days {frame['ds'].min()}..{frame['ds'].max()}, log ends {last}")
    if (frame["plays"] < 0).any():
        problems.append("submission has negative plays")
    return problems


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SNAPSHOT = {
    name: f"SELECT * FROM {name} ORDER BY ALL"
    for name in ("raw_user_actions", "artist_daily", "artist_rolling_stats", "model_features", "forecast")
} | {
    "backtest_scores": "SELECT model, origin, f_norm, params FROM backtest_scores ORDER BY ALL"
}  # not timings, run ids


def tables_snapshot(paths: Paths) -> dict[str, pl.DataFrame]:
    con = read_only(paths)
    try:
        return {name: query(con, sql) for name, sql in SNAPSHOT.items()}
    finally:
        con.close()


def champion_version(paths: Paths) -> int | None:
    """The registry version the `champion` alias points at (None before the first forecast)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    try:
        return int(client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS).version)
    except MlflowException:
        return None


def mlflow_runs_by_status(paths: Paths) -> dict[str, int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=paths.mlflow_uri)
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    return dict(Counter(run.info.status for run in client.search_runs([experiment.experiment_id], max_results=5000)))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def watched_folders(box: Sandbox) -> dict[str, Path]:
    """Where a run must not write: its cwd, $HOME (library caches included), $TMPDIR and the raw folder."""
    return {name: box.root / name for name in ("cwd", "user", "tmp")} | {"raw": box.paths.raw_dir}


@dataclass(frozen=True)
class Baseline:
    """A home after a first run killed inside ingest and a second, complete run; what it held then."""

    box: Sandbox
    after_kill: tuple[int, int]  # (actions files recorded, raw rows) right after the ingest kill
    after_kill_problems: list[str]
    outside_home: dict[str, list[str]]  # per watched folder, the files the complete run added, changed or removed
    tables: dict[str, pl.DataFrame]
    submission: str
    champion: int
    mlflow_kills: list[str] = field(default_factory=list)  # kills that left an MLflow run RUNNING

    def assert_unchanged(self) -> None:
        """A killed run changed nothing a reader can see: tables, submission bytes, champion alias.
        Files it wrote aside and never listed may remain until the next ingest collects them (the SQL
        models' tables are lake files now); `test_the_run_after_the_kills_...` checks they go."""
        paths = self.box.paths
        assert warehouse_problems(paths, complete=False) == []
        now = tables_snapshot(paths)
        for name, frame in self.tables.items():
            assert now[name].equals(frame), f"{name} changed"
        assert paths.submission.is_file() and digest(paths.submission) == self.submission
        assert champion_version(paths) == self.champion


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Baseline:
    box = make_sandbox(tmp_path_factory.mktemp("faults"), raw_outside_home=True)
    paths = box.paths
    kill_at(box, "ingest")
    con = read_only(paths)
    try:
        after_kill = (
            con.execute("SELECT count(*) FROM ingested_files WHERE kind = 'actions'").fetchone()[0],
            con.execute("SELECT count(*) FROM raw_user_actions").fetchone()[0],
        )
    finally:
        con.close()
    problems = warehouse_problems(paths, complete=False)
    watched = watched_folders(box)
    before = {name: snapshot(folder) for name, folder in watched.items()}
    run_ok(box)
    after = {name: snapshot(folder) for name, folder in watched.items()}
    outside = {
        name: sorted(k for k in before[name].keys() | after[name].keys() if before[name].get(k) != after[name].get(k))
        for name in watched
    }
    return Baseline(
        box, after_kill, problems, outside, tables_snapshot(paths), digest(paths.submission), champion_version(paths)
    )


def test_kill_inside_ingest_leaves_nothing_half_loaded_and_the_rerun_loads_once(baseline):
    assert baseline.after_kill == (0, 0), "the killed ingest left rows behind"
    assert baseline.after_kill_problems == []
    paths = baseline.box.paths
    assert warehouse_problems(paths) == []
    assert submission_problems(paths) == []
    assert baseline.tables["raw_user_actions"].height == ROWS


def test_a_full_run_writes_only_under_musictrend_home(baseline):
    """(A safety claim, checked on this module's complete run.) cwd, $HOME (library caches included),
    $TMPDIR and the raw folder (outside home here) are as before: nothing added, changed or removed."""
    assert baseline.outside_home == {name: [] for name in ("cwd", "user", "tmp", "raw")}


def test_kill_inside_a_sql_model_rebuild_keeps_the_previous_table(baseline):
    kill_at(baseline.box, "sql", select=["artist_daily"])
    baseline.assert_unchanged()


@pytest.mark.parametrize(("fault", "model"), [("train", "global_direct"), ("mlflow", "best_constant")])
def test_kill_during_a_backtest_keeps_scores_champion_and_submission(baseline, fault, model):
    kill_at(baseline.box, fault, select=[f"backtest/{model}"])
    if fault == "mlflow":  # killed between create_run and set_terminated: one run left RUNNING
        baseline.mlflow_kills.append(model)
    baseline.assert_unchanged()


def test_kill_while_replacing_the_submission_keeps_the_old_file(baseline):
    kill_at(baseline.box, "submission", select=["submission"])
    baseline.assert_unchanged()


def test_a_failing_model_keeps_the_previous_champion_and_submission(baseline):
    run = Run(
        baseline.box,
        config={"ops": {"backtest__median14": {"config": {"window": 0}}}},
        select=["backtest/median14", "champion", "forecast", "submission"],
    )
    assert run.wait() == 1
    summary = run.stderr().partition("musictrend run FAILED")[2]
    assert "step backtest__median14:" in summary
    assert "window must be a positive number of days, got 0" in summary, "the CLI hides the model's own error"
    baseline.assert_unchanged()


def test_the_run_after_the_kills_succeeds_and_reproduces_the_first(baseline):
    """Same input, a fresh process: identical tables, forecast and submission bytes. Nothing is due, so
    it is the daily path: the same registered champion makes the same vintage again."""
    run = run_ok(baseline.box)
    assert "musictrend run succeeded" in run.stdout()
    paths = baseline.box.paths
    assert warehouse_problems(paths) == []
    assert submission_problems(paths) == []
    now = tables_snapshot(paths)
    for name, frame in baseline.tables.items():
        assert now[name].equals(frame), f"{name} differs from the first complete run"
    assert digest(paths.submission) == baseline.submission
    assert champion_version(paths) == baseline.champion
    assert "daily path" in run.stdout() and "full path" not in run.stdout()
    statuses = mlflow_runs_by_status(paths)
    assert statuses.get("RUNNING", 0) == 0, "the killed MLflow logging left a run RUNNING"
    assert statuses.get("KILLED", 0) == len(baseline.mlflow_kills), (
        "each run a kill left RUNNING, and no other, is KILLED"
    )


# ---------------------------------------------------------------------------- the lake, through `musictrend ingest`


def ingest_ok(box: Sandbox) -> Run:
    run = Run(box, verb="ingest")
    assert run.wait() == 0, f"musictrend ingest failed:\n{run.stdout()}\n{run.stderr()[-4000:]}"
    assert "musictrend ingest succeeded" in run.stdout()
    return run


def raw_lake_files(paths) -> set:
    """The raw datasets' Parquet files (the SQL models' files under lake/models are rebuilt by every ingest)."""
    return {p for p in paths.lake.rglob("*.parquet") if not p.is_relative_to(paths.lake / "models")}


def visible_rows(paths: Paths) -> dict[str, int]:
    con = read_only(paths)
    try:
        return dict(con.execute("SELECT source_file, count(*) FROM raw_user_actions GROUP BY 1").fetchall())
    finally:
        con.close()


def test_kills_while_a_drop_is_replaced_or_removed_show_old_or_new_never_half(tmp_path):
    """The lake's publish and removal, killed at each step, then `musictrend ingest` again: after every
    kill the views show the old or the new rows of the file, consistently; the rerun cleans up."""
    from musictrend_dagster.core.sample import write_next_day

    box = make_sandbox(tmp_path, rows=20_000)
    paths = box.paths
    ingest_ok(box)
    drop = write_next_day(paths.raw_dir, seed=1)
    ingest_ok(box)
    bulk = {f"{s}": n for s, n in visible_rows(paths).items() if s != drop.name}
    old = count_lines(drop)
    lines = drop.read_bytes().splitlines(keepends=True)
    drop.write_bytes(b"".join(lines[: len(lines) // 2]))  # the drop rewritten: half its lines
    new = count_lines(drop)

    kill_at(box, "lake_place", verb="ingest")
    assert warehouse_problems(paths, complete=False) == []
    assert visible_rows(paths) == {**bulk, drop.name: old}, "killed before the commit: the old rows"
    kill_at(box, "lake_commit", verb="ingest")
    assert warehouse_problems(paths, complete=False) == []
    assert visible_rows(paths) == {**bulk, drop.name: new}, "killed after the commit: the new rows"
    leftovers = raw_lake_files(paths)
    ingest_ok(box)
    assert warehouse_problems(paths) == [], "the rerun deletes what the kills left"
    assert raw_lake_files(paths) < leftovers

    drop.unlink()
    kill_at(box, "lake_remove", verb="ingest")
    assert warehouse_problems(paths, complete=False) == []
    assert visible_rows(paths) == {**bulk, drop.name: new}, "killed inside the removal: nothing removed"
    run = ingest_ok(box)
    assert drop.name in run.stdout() and "removed" in run.stdout()
    assert visible_rows(paths) == bulk
    assert warehouse_problems(paths) == []
