"""`musictrend`: make sample data, run the whole graph through Dagster, print where things are."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import cast

from musictrend_dagster.core.service.owner import HOST_TAG, PID_TAG, owner_gone, owner_tags
from musictrend_dagster.core.settings import Paths


def _sample(args: argparse.Namespace) -> int:
    from musictrend_dagster.core.sample import write_next_day, write_sample

    out = Path(args.out)
    if args.shape:
        from musictrend_dagster.core.sample.shapes import write_shape

        if args.source != "tianchi-s1" or args.next_day:
            raise ValueError("--as writes the tianchi-s1 data (--source tianchi-s1, no --next-day)")
        toml = write_shape(args.shape, out, seed=args.seed)
        print(f"wrote tianchi-s1 as {args.shape} in {out}\n  run it with: musictrend run --config {toml}")
        return 0
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


def _init(args: argparse.Namespace) -> int:
    from musictrend_dagster.core.data.source import write_example

    path = write_example(Path(args.dir), args.kind)
    print(f"wrote {path}: edit [source] path and the column names, then: musictrend run")
    return 0


def _point_environment(home: str | None, raw_dir: str | None, config: str | None = None) -> Paths:
    """Make this process and everything it starts agree on MUSICTREND_HOME, the source description and friends."""
    from musictrend_dagster.core.data.source import CONFIG_ENV, find_config, load_config

    found = find_config(config)
    if found is not None:
        load_config(found)  # a description that cannot work stops here, naming the key
        os.environ[CONFIG_ENV] = str(found)
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
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
            tags={HOST_TAG: socket.gethostname()},
        )
    )
    for record in records:
        run = record.dagster_run
        if owner_gone(run.tags):
            instance.report_run_failed(run, f"musictrend run process {run.tags[PID_TAG]} is gone (killed?)")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    return reaped


def _start(paths: Paths, verb: str) -> int | None:
    """Checks before any run: configuration, and a raw folder to ingest (else a hint)."""
    from musictrend_dagster.core.data.rawdir import IngestError, list_raw_dir, list_source
    from musictrend_dagster.core.data.source import load_config
    from musictrend_dagster.core.settings import check_environment

    check_environment()
    described = load_config()
    try:
        if described.source.kind == "tianchi":
            list_raw_dir(described.source.path or paths.raw_dir)
        else:
            assert described.source.path is not None, "load_config requires a path for this kind"
            list_source(described.source.path, described.source.kind, None)
    except IngestError as exc:
        print(
            f"musictrend {verb}: {exc}\n"
            f"  (make sample data with: musictrend sample --source tianchi-s1 --out {paths.raw_dir})",
            file=sys.stderr,
        )
        return 2
    return None


def _execute(
    paths: Paths,
    verb: str,
    groups: tuple[str, ...] = (),
    run_config: dict | None = None,
    job_name: str = "refresh_all",
    tags: dict[str, str] | None = None,
    instance=None,
    selection=None,
    partition_key: str | None = None,
):
    """Run a job (or the asset groups or keys given) in the project's Dagster instance, for a vintage partition
    when the selection holds partitioned assets: (result or None on failure, seconds)."""
    import dagster as dg

    from musictrend_dagster.definitions import defs

    if instance is None:
        with _instance(paths, verb) as instance:
            return _execute(paths, verb, groups, run_config, job_name, tags, instance, selection, partition_key)
    started = time.perf_counter()
    job = defs.resolve_job_def(job_name)
    if groups:
        selection = list(dg.AssetSelection.groups(*groups).resolve(defs.resolve_asset_graph()))
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={**(tags or {}), **owner_tags()},
        asset_selection=selection,
        partition_key=partition_key,
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
            elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.asset_check_evaluation_data.passed:
                evaluation = event.asset_check_evaluation_data
                print(
                    f"  check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} "
                    f"failed: {evaluation.metadata}",
                    file=sys.stderr,
                )
        return None, elapsed
    return result, elapsed


def _execute_path(paths: Paths, verb: str, job_name: str, tags: dict[str, str], instance, run_config=None):
    """A job as two runs: its data and model assets (unpartitioned), then the vintage partition of the day after
    the data they left (forecast, submission, monitoring): ([results] or None on failure, seconds)."""
    from musictrend_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
    vintage = [k for k in keys if graph.get(k).is_partitioned]
    data = [k for k in keys if k not in vintage]
    results, took = [], 0.0
    for selection in (data, vintage):
        key = _newest_vintage_key(paths) if selection is vintage else None  # known once the data run is done
        result, elapsed = _execute(
            paths,
            verb,
            run_config=run_config,
            job_name=job_name,
            tags=tags,
            instance=instance,
            selection=selection,
            partition_key=key,
        )
        took += elapsed
        if result is None:
            return None, took
        results.append(result)
    return results, took


def _newest_vintage_key(paths: Paths) -> str:
    """The partition of the vintage that reads every day the warehouse holds."""
    from musictrend_dagster.defs.partitions import vintage_key
    from musictrend_dagster.defs.resources import default_resources

    with default_resources(paths)["warehouse"].connect() as con:
        (newest,) = con.execute("SELECT max(ds) FROM model_features").fetchone()
    return vintage_key(newest)


@contextlib.contextmanager
def _instance(paths: Paths, verb: str):
    """The project's Dagster instance, after freeing what dead runs of this host left claimed."""
    from musictrend_dagster.instance import ensure_instance

    ensure_instance(paths.dagster_home)

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for run_id in _reap_dead_runs(instance):
            print(
                f"musictrend {verb}: marked run {run_id} failed (its process is gone) and freed its pool slots",
                file=sys.stderr,
            )
        yield instance


def _run(args: argparse.Namespace) -> int:
    """The daily path when a champion is registered, the full path (retraining) when there is none, when
    asked (--retrain) or when the daily run leaves it due (cadence, growth, degraded live score)."""
    paths = _point_environment(args.home, args.raw_dir, args.config)
    if (code := _start(paths, "run")) is not None:
        return code
    from musictrend_dagster.core.service.serving import horizon_changed
    from musictrend_dagster.core.settings import horizon, retrain_every_days
    from musictrend_dagster.defs.automation import due_reasons, service_state
    from musictrend_dagster.defs.resources import default_resources
    from musictrend_dagster.defs.tags import PATH_TAG, REASON_TAG, TRIGGER_TAG

    cadence = retrain_every_days()
    mlflow = default_resources(paths)["mlflow"]
    runs = []
    with _instance(paths, "run") as instance:
        state = service_state(instance, mlflow)
        # a champion chosen for another horizon cannot serve this one: straight to the full path
        if args.retrain or state.selection is None or horizon_changed(state.selection, horizon()):
            reasons = ["requested: musictrend run --retrain"] if args.retrain else due_reasons(state, cadence)
        else:
            results, elapsed = _execute_path(
                paths,
                "run",
                "daily_forecast",
                {PATH_TAG: "daily", TRIGGER_TAG: "cli", REASON_TAG: "musictrend run"},
                instance,
            )
            if results is None:
                return 1
            runs.append(("daily path", results, elapsed))
            state = service_state(instance, mlflow)  # what the daily run left
            reasons = due_reasons(state, cadence)
        if reasons:
            results, elapsed = _execute_path(
                paths,
                "run",
                "refresh_all",
                {PATH_TAG: "retrain", TRIGGER_TAG: "cli", REASON_TAG: "; ".join(reasons)},
                instance,
            )
            if results is None:
                return 1
            runs.append(("full path", results, elapsed))
        not_due = None if reasons else _not_due(state)  # nothing ran since `state` was read
    _print_summary(paths, runs, reasons, not_due)
    return 0


def _not_due(state) -> str:
    from musictrend_dagster.core.settings import retrain_every_days

    selection = state.selection
    every = retrain_every_days()
    cadence = f"{(state.data_through - selection.data_through).days} of {every} days" if every else "cadence off"
    return (
        f"not due: v{selection.model_version} selected on data through {selection.data_through} "
        f"({selection.history_days} days); {cadence} of new data, history +"
        f"{state.history_days / selection.history_days - 1:.0%} of +30%, live score not degraded"
    )


def _ingest(args: argparse.Namespace) -> int:
    """The data layer only: the lake and the SQL models brought up to date with the raw folder."""
    paths = _point_environment(args.home, args.raw_dir, args.config)
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
        print(
            f"  {r['file']:<46} {r['status']:<10} {r['lines_read']:>12,} {r['loaded']:>12,} "
            f"{r['quarantined']:>12,} {r['removed']:>10,}"
        )
    print(f"  lake              {paths.lake}")
    print(f"  warehouse         {paths.warehouse}")
    return 0


def _metadata(runs: list) -> dict[str, dict]:
    """Every asset's materialization metadata over the runs (the later run's wins), as plain values."""
    found: dict[str, dict] = {}
    for _, results, _ in runs:
        for event in (e for result in results for e in result.get_asset_materialization_events()):
            materialization = event.event_specific_data.materialization
            found[materialization.asset_key.to_user_string()] = {
                k: v.value for k, v in materialization.metadata.items()
            }
    return found


def _print_summary(paths: Paths, runs: list, reasons: list[str], not_due: str | None) -> None:
    """What the runs did: the full path's backtests and registration, the vintage, monitoring, retraining;
    and the champion that serves now, as the registry records it (the one champion record)."""
    from musictrend_dagster.core.service.tracking import current_champion
    from musictrend_dagster.core.settings import FORECASTS_CSV, REGISTERED_MODEL, mlflow_ui_url
    from musictrend_dagster.defs.resources import default_resources

    meta = _metadata(runs)
    mlflow = default_resources(paths)["mlflow"]
    serving = current_champion(mlflow.tracking_uri)
    with default_resources(paths)["warehouse"].connect() as con:  # waits for any other run's connection
        loaded = con.execute("SELECT count(*) FROM raw_user_actions").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone()[0]
    took = " + ".join(f"{label} {elapsed:.0f}s" for label, _, elapsed in runs)
    ids = ", ".join(result.run_id for _, results, _ in runs for result in results)
    print(f"\nmusictrend run succeeded in {sum(e for _, _, e in runs):.0f}s ({took}; Dagster run {ids})")
    print(f"  rows ingested     {loaded:,} ({quarantined:,} quarantined)")
    if "registered_champion" in meta:
        print(f"  retrained         {'; '.join(reasons)}")
        _print_backtests(paths)
        champion = meta["registered_champion"]
        print(
            f"  registered        {champion['champion']} as musictrend-forecaster v{champion['model_version']} "
            f"(previous: {champion['previous_champion']})"
        )
    if serving is not None:
        score = "" if serving.backtest_f_norm is None else f", backtest f_norm {serving.backtest_f_norm:.4f}"
        print(
            f"  champion          {REGISTERED_MODEL}@champion = v{serving.model_version} ({serving.model}), trained "
            f"through {serving.data_through} on {serving.history_days} days{score}"
        )
    vintage = meta["forecast"]
    print(
        f"  vintage           {vintage['vintage']}: {vintage['horizon']} days x "
        f"{vintage['dagster/row_count'] // vintage['horizon']} "
        f"artists by {vintage['champion']} v{vintage['model_version']}, from the data through {vintage['data_through']}"
    )
    print(f"  refit             {vintage['refit']}")
    monitoring = meta.get("forecast_monitoring", {})
    if "verdict" in monitoring:
        print(f"  monitoring        {monitoring['vintages_scored']} vintage(s) scored; {monitoring['verdict']}")
    if not_due:
        print(f"  retraining        {not_due}")
    print(f"  forecasts         {paths.output_dir / FORECASTS_CSV} (and .parquet)")
    if "submission" in meta:
        print(f"  submission        {paths.submission}")
    print(f"  Dagster UI        make ui       (http://127.0.0.1:3000, runs under {paths.dagster_home})")
    print(f"  MLflow UI         make mlflow-ui ({mlflow_ui_url()}, store {paths.mlflow_uri})")
    print(f"    the runs        {mlflow.runs_url(mlflow.tracker().experiment_id)}")


def _print_backtests(paths: Paths) -> None:
    """The backtest plan and the leaderboard of the last retrain."""
    import polars as pl

    from musictrend_dagster.core.forecast.models.registry import backtest_plan, candidate_names
    from musictrend_dagster.core.service.store import leaderboard, load_history, standings
    from musictrend_dagster.core.settings import champion_metric, horizon
    from musictrend_dagster.defs.resources import default_resources

    with default_resources(paths)["warehouse"].connect() as con:
        plan = backtest_plan(load_history(con)[0], horizon())
        scores, runs = standings(con, candidate_names(), plan)
    board = leaderboard(scores, champion_metric())  # ranked as the champion was chosen
    champion = board.row(0, named=True)
    print(f"  backtest          {plan.describe()}")
    print(f"  champion          {champion['model']}  mean f_norm {champion['f_norm']:.4f}")
    print(f"    {'model':<16} {'f_norm':>7}  80% interval coverage")
    for row in board.iter_rows(named=True):
        print(f"    {row['model']:<16} {row['f_norm']:.4f}  {row['coverage']:.0%}")
    for row in runs.filter(pl.col("status") == "skipped").iter_rows(named=True):
        print(f"    {row['model']:<16} skipped: {row['reason']}")


def _replay(args: argparse.Namespace) -> int:
    """Hold back the last --days days of the raw folder's log, then let the service's own automation run
    on the rest (observation, data, retraining, vintage) and on each held-back day as it lands: the runs
    Dagster's automation requests, executed in this process tick after tick (`run_requested`)."""
    from musictrend_dagster.core.data.rawdir import IngestError
    from musictrend_dagster.core.data.source import load_config
    from musictrend_dagster.core.service.replay import hold_back
    from musictrend_dagster.core.settings import check_environment

    described = load_config(args.config)
    if described.source.kind != "tianchi":
        raise ValueError(
            f"{described.file}: replay holds back the competition's daily drop files; "
            f"a {described.source.kind} source is not replayed yet"
        )
    source = described.source.path or Paths.from_env(raw_dir=args.raw_dir).raw_dir
    home = Path(args.home).expanduser().resolve() if args.home else Paths.from_env().home / "replay"
    if home.exists() and any(home.iterdir()):
        print(
            f"musictrend replay: {home} is not empty: a replay starts from a new home (remove it or pass --home)",
            file=sys.stderr,
        )
        return 2
    paths = _point_environment(str(home), str(home / "raw"))
    check_environment()
    try:
        drops = hold_back(source, paths.raw_dir, home / "held_back", args.days)
    except (IngestError, ValueError) as exc:
        for made in (paths.raw_dir, home / "held_back"):  # leave the home as empty as it was
            shutil.rmtree(made, ignore_errors=True)
        print(f"musictrend replay: {exc}", file=sys.stderr)
        return 2
    # Imported once the environment points at the replay's home: the definitions' resources read it.
    from musictrend_dagster.definitions import defs
    from musictrend_dagster.defs.automation import run_requested
    from musictrend_dagster.defs.tags import TRIGGER_TAG

    print(
        f"musictrend replay: {source} without its last {len(drops)} days -> {paths.raw_dir}; "
        f"{drops[0].name}..{drops[-1].name} held back in {drops[0].parent}"
    )
    started = time.perf_counter()
    tags = {TRIGGER_TAG: "replay"}
    with _instance(paths, "replay") as instance:
        cursor, runs = run_requested(defs, instance, tags=tags)
        if not _replay_report("history", runs):
            return 1
        for k, drop in enumerate(drops, 1):
            drop.rename(paths.raw_dir / drop.name)
            cursor, runs = run_requested(defs, instance, cursor, tags=tags)
            if not _replay_report(f"{k}/{len(drops)} {drop.name}", runs):
                return 1
    plot = _write_monitoring_plot(paths)
    print(
        f"\nmusictrend replay succeeded in {time.perf_counter() - started:.0f}s: {len(drops)} days replayed in {home}"
    )
    print(f"  monitoring plot   {plot}")
    print(f"  Dagster UI        musictrend ui --home {home}")
    print(f"  MLflow UI         musictrend mlflow-ui --home {home}")
    return 0


def _replay_report(label: str, runs: list) -> bool:
    """One line per run the automation requested (what it ran, why, what came out); False after a failure."""
    for run in runs:
        result, took = run.result, run.seconds
        meta = _metadata([(None, [result], took)])
        line = f"replay {label}: {', '.join(run.assets) if len(run.assets) <= 3 else f'{len(run.assets)} assets'}"
        line += f" [{run.partition_key}]" if run.partition_key else ""
        line += f" {took:.0f}s ({run.reason})"
        if "forecast" in meta:
            vintage = meta["forecast"]
            line += f"; vintage {vintage['vintage']} by {vintage['champion']} v{vintage['model_version']}"
        if "verdict" in meta.get("forecast_monitoring", {}):
            line += f"; {meta['forecast_monitoring']['verdict']}"
        print(line)
        if not result.success:
            print(f"musictrend replay FAILED: Dagster run {result.run_id} ({', '.join(run.assets)})", file=sys.stderr)
            return False
    return True


def _write_monitoring_plot(paths: Paths) -> Path:
    """The monitoring chart of the whole replay as a PNG next to the submission."""
    from musictrend_dagster.core.service import plots
    from musictrend_dagster.core.service.monitoring import TOLERANCE, selections_frame
    from musictrend_dagster.core.service.store import load_live_history, query
    from musictrend_dagster.core.service.tracking import registered_versions
    from musictrend_dagster.defs.resources import default_resources

    resources = default_resources(paths)
    with resources["warehouse"].connect() as con:
        scores = query(con, "SELECT * FROM forecast_monitoring ORDER BY vintage")
        history = load_live_history(con)
    selections = selections_frame(registered_versions(resources["mlflow"].tracking_uri))
    return plots.plot_monitoring(scores, history, selections, TOLERANCE, path=paths.output_dir / "monitoring.png")


def _show(args: argparse.Namespace) -> int:
    """One series: its last four weeks, the vintage's forecast and 80% interval, and a PNG of the same."""
    from datetime import date

    from musictrend_dagster.core.service import plots
    from musictrend_dagster.core.service.show import chart_path, load_series, series_table
    from musictrend_dagster.defs.resources import default_resources

    paths = _point_environment(args.home, None)
    try:
        vintage = date.fromisoformat(args.vintage) if args.vintage else None
    except ValueError:
        raise ValueError(f"--vintage must be a day, YYYY-MM-DD; got {args.vintage!r}") from None
    if not paths.warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {paths.warehouse}: make a forecast first with `musictrend run`")
    with default_resources(paths)["warehouse"].connect() as con:
        view = load_series(con, args.series_id, vintage)
    print(series_table(view))
    path = plots.plot_series(view.history, view.forecast, view.title, path=chart_path(paths.output_dir, view))
    print(f"\nchart: {path}")
    return 0


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

    from musictrend_dagster.core.settings import MLFLOW_UI_URL_VAR, mlflow_ui_url

    paths = _point_environment(args.home, None)
    configured = urlsplit(mlflow_ui_url())
    host, port = (
        cast(str, args.host or configured.hostname),
        args.port or configured.port,
    )  # mlflow_ui_url() checked the host
    served = f"{configured.scheme}://{host}:{port}"
    print(f"MLflow UI on {served} (store {paths.mlflow_uri})", flush=True)
    if served != mlflow_ui_url():
        print(
            f"note: Dagster's links to MLflow follow {MLFLOW_UI_URL_VAR}={mlflow_ui_url()}; to make them point "
            f"here, start `musictrend ui` / `musictrend run` with\n  export {MLFLOW_UI_URL_VAR}={served}",
            file=sys.stderr,
            flush=True,
        )
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    # One worker and no job runner: the MLflow UI is for one person on a 2-core machine.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(
        mlflow,
        [
            mlflow,
            "server",
            "--backend-store-uri",
            paths.mlflow_uri,
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
    )


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
    sample.add_argument(
        "--as",
        dest="shape",
        choices=["events-csv", "events-parquet", "daily-artist", "daily-song"],
        help="tianchi-s1 in another shape, with its musictrend.toml (docs/your-own-data.md)",
    )
    sample.set_defaults(func=_sample)

    init = sub.add_parser("init", help="write a commented example musictrend.toml (never over an existing one)")
    init.add_argument("--kind", choices=["daily", "events"], default="daily")
    init.add_argument("--dir", default=".", help="where to write it (default: here)")
    init.set_defaults(func=_init)

    run = sub.add_parser(
        "run",
        help="the daily path (a new forecast vintage from the registered champion), or the "
        "full path (retraining) when none is registered, when due or with --retrain",
    )
    run.add_argument("--home", help="state folder (default $MUSICTREND_HOME or ./.musictrend)")
    run.add_argument("--raw-dir", help="raw CSV folder (default $MUSICTREND_RAW_DIR or HOME/raw)")
    run.add_argument(
        "--config", help="the source description (default $MUSICTREND_CONFIG or ./musictrend.toml; none: tianchi)"
    )
    run.add_argument(
        "--retrain", action="store_true", help="re-choose the champion now (backtests, selection, registration)"
    )
    run.set_defaults(func=_run)

    ingest = sub.add_parser(
        "ingest", help="bring the Parquet lake and the SQL models up to date with the raw folder (no models)"
    )
    ingest.add_argument("--home", help="state folder (default $MUSICTREND_HOME or ./.musictrend)")
    ingest.add_argument("--raw-dir", help="raw CSV folder (default $MUSICTREND_RAW_DIR or HOME/raw)")
    ingest.add_argument(
        "--config", help="the source description (default $MUSICTREND_CONFIG or ./musictrend.toml; none: tianchi)"
    )
    ingest.add_argument(
        "--full-refresh", action="store_true", help="re-validate every raw file and rebuild every SQL model"
    )
    ingest.set_defaults(func=_ingest)

    replay = sub.add_parser(
        "replay",
        help="hold back the log's last days and feed them one drop file a day through "
        "the daily path, in a new home: a real monitoring history",
    )
    replay.add_argument(
        "--days", type=int, required=True, help="how many of the log's last days to hold back and replay"
    )
    replay.add_argument("--raw-dir", help="the log to replay (default $MUSICTREND_RAW_DIR or $MUSICTREND_HOME/raw)")
    replay.add_argument(
        "--config", help="the source description (default $MUSICTREND_CONFIG or ./musictrend.toml; none: tianchi)"
    )
    replay.add_argument("--home", help="the replay's own state folder, new or empty (default $MUSICTREND_HOME/replay)")
    replay.set_defaults(func=_replay)

    show = sub.add_parser(
        "show", help="one series: its last four weeks, its forecast and 80%% interval, and a PNG chart of them"
    )
    show.add_argument("series_id", help="the series (artist) id, or the start of one")
    show.add_argument("--vintage", help="the forecast's first day, YYYY-MM-DD (default: the newest vintage)")
    show.add_argument("--home", help="state folder (default $MUSICTREND_HOME or ./.musictrend)")
    show.set_defaults(func=_show)

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
