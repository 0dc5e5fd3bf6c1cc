"""Ingest + artist_daily through the project's code vs bare DuckDB on the same raw file; a one-day drop after it.

    python benchmarks/bench_ingest.py [--rows 50000000] [--skip-synthetic] [--data-dir DIR] [--repeat 3]

Bare DuckDB (the headline baseline) = ``read_csv`` with an explicit typed schema, joined
to the songs file and grouped by artist and day with the same aggregates as the
``artist_daily`` model, all in memory. "Bare + persist" = the same typed ``read_csv``
stored in a fresh database file, then the same GROUP BY from that table: what a warehouse
costs without validation. The project side = ``ingest_raw_dir`` into a fresh warehouse
file and Parquet lake (validation, quarantine accounting, bookkeeping, all persisted) + building
stg_songs, stg_user_actions, artist_day_actions and artist_daily; then the remaining SQL models
(the "full load" of the one-day-drop target), then, untimed, ``musictrend sample --next-day``
writes the next day's drop (about 1/183 of the rows) and the drop's ingest + every SQL model
(incremental) is timed: the target is < 5% of the full load. The raw files are hard-linked
into a private raw folder (the drop must not land in the cached data set). Each run is its own subprocess so its peak
RSS is its own; the sides alternate run by run so a busy machine slows them alike, and
every run's wall time is printed (the spread is the noise). Peak RSS is the worker's own
(``benchmarks/memory.py``: VmHWM, not ``ru_maxrss``, which a child inherits from its parent). Ratios use the best run of
each side; CPU seconds (user + system) are less sensitive to other load than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak_rss_mb

MEMORY_LIMIT = "4GB"
ARTIST_DAILY_DEPS = ("stg_songs", "stg_user_actions", "artist_day_actions", "artist_daily")

ACTIONS_CSV = """read_csv($actions, header = false, delim = ',', auto_detect = false, dateformat = '%Y%m%d',
    columns = {'user_id': 'VARCHAR', 'song_id': 'VARCHAR', 'gmt_create': 'BIGINT', 'action_type': 'UTINYINT',
               'ds': 'DATE'})"""
SONGS_CSV = """read_csv($songs, header = false, delim = ',', auto_detect = false, dateformat = '%Y%m%d',
    columns = {'song_id': 'VARCHAR', 'artist_id': 'VARCHAR', 'publish_time': 'DATE', 'song_init_plays': 'BIGINT',
               'language': 'INTEGER', 'gender': 'INTEGER'})"""
GROUP_BY_SQL = """
CREATE TABLE artist_daily AS
SELECT s.artist_id, a.ds,
       count(*) FILTER (WHERE a.action_type = 1) AS plays,
       count(*) FILTER (WHERE a.action_type = 2) AS downloads,
       count(*) FILTER (WHERE a.action_type = 3) AS collects,
       count(DISTINCT a.user_id) AS listeners,
       count(DISTINCT a.song_id) AS active_songs
FROM {actions} AS a
JOIN {songs} AS s ON s.song_id = a.song_id
GROUP BY s.artist_id, a.ds
"""
SIDES = ("bare", "bare_persist", "project")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _usage(cpu0: float) -> dict[str, float]:
    """CPU seconds since ``cpu0`` (imports excluded) and this worker's own peak RSS."""
    return {"cpu_s": _cpu_s() - cpu0, "peak_rss_mb": peak_rss_mb()}


def _connect_bare(path: str):
    import duckdb

    con = duckdb.connect(path)
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    return con


def worker_bare(raw_dir: Path) -> dict:
    from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

    con = _connect_bare(":memory:")
    t0, cpu0 = time.perf_counter(), _cpu_s()
    con.execute(
        GROUP_BY_SQL.format(actions=ACTIONS_CSV, songs=SONGS_CSV),
        {"actions": str(raw_dir / f"{ACTIONS_PREFIX}.csv"), "songs": str(raw_dir / SONGS_FILE)},
    )
    return {"seconds": time.perf_counter() - t0, **_usage(cpu0)}


def worker_bare_persist(raw_dir: Path) -> dict:
    from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
        con = _connect_bare(str(Path(tmp) / "bare.duckdb"))
        t0, cpu0 = time.perf_counter(), _cpu_s()
        con.execute(
            f"CREATE TABLE actions AS SELECT * FROM {ACTIONS_CSV}", {"actions": str(raw_dir / f"{ACTIONS_PREFIX}.csv")}
        )
        con.execute(f"CREATE TABLE songs AS SELECT * FROM {SONGS_CSV}", {"songs": str(raw_dir / SONGS_FILE)})
        t_load = time.perf_counter() - t0
        con.execute(GROUP_BY_SQL.format(actions="actions", songs="songs"))
        seconds = time.perf_counter() - t0
        con.close()
    return {"seconds": seconds, "ingest_s": t_load, **_usage(cpu0)}


def worker_project(raw_dir: Path) -> dict:
    from musictrend_dagster.core.data import ingest, sql_models, warehouse
    from musictrend_dagster.core.sample import write_next_day

    models = sql_models.topo_order(sql_models.load_models())
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for f in raw_dir.iterdir():
            os.link(f, raw / f.name)
        con = warehouse.connect(Path(tmp) / "warehouse.duckdb", memory_limit=MEMORY_LIMIT)
        t0, cpu0 = time.perf_counter(), _cpu_s()
        reports = ingest.ingest_raw_dir(con, raw, Path(tmp) / "lake").files
        t_ingest = time.perf_counter() - t0
        for model in models:
            if model.name in ARTIST_DAILY_DEPS:
                sql_models.build_model(con, model)
        seconds = time.perf_counter() - t0
        for model in models:
            if model.name not in ARTIST_DAILY_DEPS:
                sql_models.build_model(con, model)
        full_s = time.perf_counter() - t0
        usage = _usage(cpu0)
        drop = write_next_day(raw, seed=0)
        t1 = time.perf_counter()
        drop_report = ingest.ingest_raw_dir(con, raw, Path(tmp) / "lake").report(drop.name)
        built = {m.name: sql_models.build_model(con, m) for m in models}
        drop_s = time.perf_counter() - t1
        con.close()
    assert built["artist_day_actions"].mode == "incremental", built
    rows = sum(r.lines_read for r in reports[1:])
    quarantined = sum(r.quarantined for r in reports)
    return {
        "seconds": seconds,
        "ingest_s": t_ingest,
        "rows": rows,
        "quarantined": quarantined,
        **usage,
        "full_load_s": full_s,
        "drop_s": drop_s,
        "drop_rows": drop_report.lines_read,
    }


def _run_worker(side: str, raw_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--raw", str(raw_dir)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _interleaved(raw_dir: Path, repeat: int) -> dict[str, dict]:
    """Best run per side (peak RSS: the largest), sides alternating run by run."""
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(repeat):
        for side in SIDES:
            runs[side].append(_run_worker(side, raw_dir))
    return {
        side: min(rs, key=lambda r: r["seconds"])
        | {"peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "all_s": [round(r["seconds"], 2) for r in rs]}
        for side, rs in runs.items()
    }


def _drop_line(label: str, proj: dict) -> str:
    share = proj["drop_s"] / proj["full_load_s"]
    return (
        f"| {label} | {proj['drop_rows']:,} | {proj['full_load_s']:.2f} | {proj['drop_s']:.2f} | {share:.1%} | "
        f"{'met' if share < 0.05 else 'NOT met'} |"
    )


def _dataset(data_dir: Path, name: str, rows: int | None) -> Path:
    from musictrend_dagster.core.sample import expand_tianchi_s1, generate_synthetic
    from musictrend_dagster.core.settings import ACTIONS_PREFIX

    out = data_dir / name
    if not (out / f"{ACTIONS_PREFIX}.csv").is_file():
        print(f"writing {name} into {out} ...", file=sys.stderr, flush=True)
        if rows is None:
            expand_tianchi_s1(out, seed=0, progress=False)
        else:
            generate_synthetic(out, rows=rows, seed=0, progress=False)
    return out


WORKERS = {"bare": worker_bare, "bare_persist": worker_bare_persist, "project": worker_project}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000_000, help="rows of the synthetic log")
    ap.add_argument("--skip-synthetic", action="store_true", help="only the tianchi-s1 sample")
    ap.add_argument("--data-dir", type=Path, default=None, help="cache for generated samples")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side on tianchi-s1 (best kept)")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.raw)))
        return

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-ingest-")
        args.data_dir = Path(tmp.name)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    datasets = [("tianchi-s1", _dataset(args.data_dir, "tianchi_s1", None), args.repeat)]
    if not args.skip_synthetic:
        datasets.append((f"synthetic {args.rows:,}", _dataset(args.data_dir, f"synthetic_{args.rows}", args.rows), 1))

    import platform

    import duckdb

    print(f"machine: {os.cpu_count()} cores, python {platform.python_version()}, duckdb {duckdb.__version__}")
    lines = [
        "| data | rows | bare DuckDB s | bare + persist s | project s (ingest + artist_daily) | ratio vs bare | "
        "ratio vs bare + persist | bare rows/s | project rows/s | bare / project peak RSS MB | "
        "bare / project CPU s | all runs s (bare; persist; project) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    drop_lines = []
    for label, raw_dir, repeat in datasets:
        best = _interleaved(raw_dir, repeat)
        bare, persist, proj = best["bare"], best["bare_persist"], best["project"]
        drop_lines.append(_drop_line(label, proj))
        print(f"{label}: {json.dumps(best)}", file=sys.stderr, flush=True)
        lines.append(
            f"| {label} | {proj['rows']:,} | {bare['seconds']:.2f} | {persist['seconds']:.2f} | {proj['seconds']:.2f} "
            f"(ingest {proj['ingest_s']:.2f}) | {proj['seconds'] / bare['seconds']:.2f}x | "
            f"{proj['seconds'] / persist['seconds']:.2f}x | {proj['rows'] / bare['seconds']:,.0f} | "
            f"{proj['rows'] / proj['seconds']:,.0f} | {bare['peak_rss_mb']:,.0f} / {proj['peak_rss_mb']:,.0f} | "
            f"{bare['cpu_s']:.1f} / {proj['cpu_s']:.1f} | {bare['all_s']}; {persist['all_s']}; {proj['all_s']} |"
        )
    print("\n".join(lines))
    print(
        "\n| data | drop rows | full load s (ingest + every SQL model) | one-day drop s (ingest + every SQL model) "
        "| drop / full | target < 5% |\n|---|---:|---:|---:|---:|---|"
    )
    print("\n".join(drop_lines))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
