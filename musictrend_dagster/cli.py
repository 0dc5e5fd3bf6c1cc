"""`musictrend`: make sample data, run the whole graph through Dagster, print where things are."""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from musictrend_dagster.core.owner import HOST_TAG, PID_TAG, owner_gone, owner_tags
from musictrend_dagster.settings import Paths


def _sample(args: argparse.Namespace) -> int:
    from musictrend_dagster.core.sample import write_next_day, write_sample

    out = Path(args.out)
    if args.next_day:
        path = write_next_day(out, seed=args.seed)
        print(f"wrote {path}")
        return 0
    summary = write_sample(args.source, out, seed=args.seed, artists=args.artists, days=args.days, rows=args.rows)
    print(
        f"wrote {summary.rows:,} actions of {summary.artists} artists and {summary.songs:,} songs, "
        f"{summary.first_day}..{summary.last_day}:\n  {summary.actions_file}\n  {summary.songs_file}"
    )
    return 0


def _point_environment(home: str | None, raw_dir: str | None) -> Paths:
    """Make this process and everything it starts agree on MUSICTREND_HOME and friends."""
    paths = Paths.from_env(home=home, raw_dir=raw_dir)
    os.environ["MUSICTREND_HOME"] = str(paths.home)
    os.environ["MUSICTREND_RAW_DIR"] = str(paths.raw_dir)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    # Libraries' own caches stay under MUSICTREND_HOME too: a run writes nothing else.
    os.environ.setdefault("KERAS_HOME", str(paths.home / "cache" / "keras"))
    os.environ.setdefault("MPLCONFIGDIR", str(paths.home / "cache" / "matplotlib"))
    return paths


def _reap_dead_runs(instance) -> list[str]:
    """Fail this host's earlier `musictrend run` runs whose process is gone, freeing their pool slots.

    A run killed with SIGKILL (OOM killer, kill -9, power loss) stays STARTED in the instance and
    keeps its `duckdb`/`training` pool slot for ever, so every later run would wait on it silently.
    """
    import dagster as dg

    reaped = []
    records = instance.get_run_records(dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
        tags={HOST_TAG: socket.gethostname()},
    ))
    for record in records:
        run = record.dagster_run
        if owner_gone(run.tags):
            instance.report_run_failed(run, f"musictrend run process {run.tags[PID_TAG]} is gone (killed?)")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    return reaped


def _start(paths: Paths, verb: str) -> int | None:
    """Checks before any run: configuration, and a raw folder to ingest (else a hint)."""
    from musictrend_dagster.core.rawdir import IngestError, list_raw_dir
    from musictrend_dagster.settings import check_environment

    check_environment()
    try:
        list_raw_dir(paths.raw_dir)
    except IngestError as exc:
        print(f"musictrend {verb}: {exc}\n  (make sample data with: musictrend sample --source tianchi-s1 --out {paths.raw_dir})", file=sys.stderr)
        return 2
    return None


def _execute(paths: Paths, verb: str, groups: tuple[str, ...] = (), run_config: dict | None = None):
    """Run the refresh_all job (or the asset groups given) in the project's Dagster instance; None on failure."""
    from musictrend_dagster.instance import ensure_instance

    ensure_instance(paths.dagster_home)

    import dagster as dg

    from musictrend_dagster.definitions import defs

    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        for run_id in _reap_dead_runs(instance):
            print(f"musictrend {verb}: marked run {run_id} failed (its process is gone) and freed its pool slots", file=sys.stderr)
        job = defs.resolve_job_def("refresh_all")
        selection = list(dg.AssetSelection.groups(*groups).resolve(defs.resolve_asset_graph())) if groups else None
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags=owner_tags(),
            asset_selection=selection,
            run_config={**(run_config or {}), "loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    elapsed = time.perf_counter() - started
    if not result.success:
        print(f"\nmusictrend {verb} FAILED after {elapsed:.0f}s (Dagster run {result.run_id}):", file=sys.stderr)
        for event in result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                while error is not None and error.cause is not None:  # the user's exception, not Dagster's wrapper
                    error = error.cause
                print(f"  step {event.step_key}: {error.message.strip() if error else 'failed'}", file=sys.stderr)
            elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
                evaluation = event.event_specific_data
                print(f"  check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} failed: {evaluation.metadata}", file=sys.stderr)
        return None, elapsed
    return result, elapsed


def _run(args: argparse.Namespace) -> int:
    paths = _point_environment(args.home, args.raw_dir)
    if (code := _start(paths, "run")) is not None:
        return code
    result, elapsed = _execute(paths, "run")
    if result is None:
        return 1
    _print_summary(paths, result.run_id, elapsed)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """The data layer only: the lake and the SQL models brought up to date with the raw folder."""
    paths = _point_environment(args.home, args.raw_dir)
    if (code := _start(paths, "ingest")) is not None:
        return code
    from musictrend_dagster.defs.assets.transform import MODELS

    config = {"config": {"full_refresh": bool(args.full_refresh)}}
    ops = {name: config for name in ("raw_songs", "raw_user_actions", *(m.name for m in MODELS))}
    result, elapsed = _execute(paths, "ingest", ("ingest", "transform"), {"ops": ops})
    if result is None:
        return 1
    reports = []
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() in ("raw_songs", "raw_user_actions"):
            reports += materialization.metadata["file_reports"].value
    print(f"musictrend ingest succeeded in {elapsed:.0f}s (Dagster run {result.run_id})")
    print(f"  {'file':<46} {'status':<10} {'lines':>12} {'loaded':>12} {'quarantined':>12} {'removed':>10}")
    for r in reports:
        print(f"  {r['file']:<46} {r['status']:<10} {r['lines_read']:>12,} {r['loaded']:>12,} {r['quarantined']:>12,} {r['removed']:>10,}")
    print(f"  lake              {paths.lake}")
    print(f"  warehouse         {paths.warehouse}")
    return 0


def _print_summary(paths: Paths, run_id: str, elapsed: float) -> None:
    import polars as pl

    from musictrend_dagster.core.data import leaderboard, load_history, standings
    from musictrend_dagster.core.models.registry import MODEL_NAMES
    from musictrend_dagster.defs.assets.models import backtest_plan
    from musictrend_dagster.defs.resources import default_resources
    from musictrend_dagster.settings import mlflow_ui_url

    with default_resources(paths)["warehouse"].connect() as con:  # waits for any other run's connection
        loaded = con.execute("SELECT count(*) FROM raw_user_actions").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone()[0]
        plan = backtest_plan(load_history(con)[0])
        scores, runs = standings(con, MODEL_NAMES, plan)
    board = leaderboard(scores)
    champion = board.row(0, named=True)
    print(f"\nmusictrend run succeeded in {elapsed:.0f}s (Dagster run {run_id})")
    print(f"  rows ingested     {loaded:,} ({quarantined:,} quarantined)")
    print(f"  backtest          {plan.describe()}")
    print(f"  champion          {champion['model']}  mean f_norm {champion['f_norm']:.4f}")
    print(f"    {'model':<16} {'f_norm':>7}  80% interval coverage")
    for row in board.iter_rows(named=True):
        print(f"    {row['model']:<16} {row['f_norm']:.4f}  {row['coverage']:.0%}")
    for row in runs.filter(pl.col("status") == "skipped").iter_rows(named=True):
        print(f"    {row['model']:<16} skipped: {row['reason']}")
    print(f"  submission        {paths.submission}")
    print(f"  Dagster UI        make ui       (http://127.0.0.1:3000, runs under {paths.dagster_home})")
    mlflow = default_resources(paths)["mlflow"]
    print(f"  MLflow UI         make mlflow-ui ({mlflow_ui_url()}, store {paths.mlflow_uri})")
    print(f"    the runs        {mlflow.runs_url(mlflow.tracker().experiment_id)}")


def _ui(args: argparse.Namespace) -> int:
    """`dagster dev` on 127.0.0.1 with the project's instance and workspace."""
    paths = _point_environment(args.home, args.raw_dir)
    from musictrend_dagster.instance import ensure_instance

    ensure_instance(paths.dagster_home)
    dagster = str(Path(sys.executable).with_name("dagster"))
    target = ["-w", args.workspace] if Path(args.workspace).is_file() else ["-m", "musictrend_dagster.definitions"]
    os.execv(dagster, [dagster, "dev", "-h", args.host, "-p", str(args.port), *target])


def _mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the project's store, where MUSICTREND_MLFLOW_UI_URL says (127.0.0.1:5000 by default).

    --host/--port override the setting for this server; the links Dagster stores follow the
    setting, so a different address is announced with the export that makes them agree.
    """
    from urllib.parse import urlsplit

    from musictrend_dagster.settings import MLFLOW_UI_URL_VAR, mlflow_ui_url

    paths = _point_environment(args.home, None)
    configured = urlsplit(mlflow_ui_url())
    host, port = args.host or configured.hostname, args.port or configured.port
    served = f"{configured.scheme}://{host}:{port}"
    print(f"MLflow UI on {served} (store {paths.mlflow_uri})", flush=True)
    if served != mlflow_ui_url():
        print(f"note: Dagster's links to MLflow follow {MLFLOW_UI_URL_VAR}={mlflow_ui_url()}; to make them point "
              f"here, start `musictrend ui` / `musictrend run` with\n  export {MLFLOW_UI_URL_VAR}={served}",
              file=sys.stderr, flush=True)
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    # One worker and no job runner: the MLflow UI is for one person on a 2-core machine.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(mlflow, [mlflow, "server", "--backend-store-uri", paths.mlflow_uri, "--host", host,
                      "--port", str(port), "--workers", "1"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="musictrend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sample = sub.add_parser("sample", help="write raw sample CSVs in the official formats")
    sample.add_argument("--out", required=True, help="folder to write into (usually $MUSICTREND_RAW_DIR)")
    sample.add_argument("--source", choices=["tianchi-s1", "synthetic"], default="tianchi-s1")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--artists", type=int, help="synthetic only")
    sample.add_argument("--days", type=int, help="synthetic only")
    sample.add_argument("--rows", type=int, help="synthetic only")
    sample.add_argument("--next-day", action="store_true", help="append the next day's drop file to --out")
    sample.set_defaults(func=_sample)

    run = sub.add_parser("run", help="materialise the whole asset graph in the Dagster instance under MUSICTREND_HOME")
    run.add_argument("--home", help="state folder (default $MUSICTREND_HOME or ./.musictrend)")
    run.add_argument("--raw-dir", help="raw CSV folder (default $MUSICTREND_RAW_DIR or HOME/raw)")
    run.set_defaults(func=_run)

    ingest = sub.add_parser("ingest", help="bring the Parquet lake and the SQL models up to date with the raw folder (no models)")
    ingest.add_argument("--home", help="state folder (default $MUSICTREND_HOME or ./.musictrend)")
    ingest.add_argument("--raw-dir", help="raw CSV folder (default $MUSICTREND_RAW_DIR or HOME/raw)")
    ingest.add_argument("--full-refresh", action="store_true", help="re-validate every raw file and rebuild every SQL model")
    ingest.set_defaults(func=_ingest)

    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on this project's instance")
    ui.add_argument("--home")
    ui.add_argument("--raw-dir")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--workspace", default="workspace.yaml")
    ui.set_defaults(func=_ui)

    mlflow_ui = sub.add_parser("mlflow-ui", help="open the MLflow UI on this project's tracking store")
    mlflow_ui.add_argument("--home")
    mlflow_ui.add_argument("--host", help="default: the host of $MUSICTREND_MLFLOW_UI_URL (127.0.0.1)")
    mlflow_ui.add_argument("--port", type=int, help="default: the port of $MUSICTREND_MLFLOW_UI_URL (5000)")
    mlflow_ui.set_defaults(func=_mlflow_ui)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError: it names the variable or path
        print(f"musictrend {args.command}: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"musictrend {args.command}: {exc.filename or ''}: permission denied ({exc.strerror})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
