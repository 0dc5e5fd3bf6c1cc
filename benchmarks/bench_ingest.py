"""Ingest + artist_daily through the project's code vs bare DuckDB on the same raw file.

    python benchmarks/bench_ingest.py [--rows 50000000] [--skip-synthetic] [--data-dir DIR]

Bare DuckDB = ``read_csv`` with an explicit typed schema, joined to the songs file and
grouped by artist and day with the same aggregates as the ``artist_daily`` model. The
project side = ``ingest_raw_dir`` into a fresh warehouse file (validation, quarantine
accounting, bookkeeping, all persisted) + building stg_songs, stg_user_actions and
artist_daily. Each side runs in its own subprocess so its peak RSS is its own; the best
of ``--repeat`` runs is kept for each side (the figures are wall-clock, so a busy machine
inflates both; CPU seconds are printed too).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEMORY_LIMIT = "4GB"
ARTIST_DAILY_DEPS = ("stg_songs", "stg_user_actions", "artist_daily")

BARE_SQL = """
CREATE TABLE artist_daily AS
SELECT s.artist_id, a.ds,
       count(*) FILTER (WHERE a.action_type = 1) AS plays,
       count(*) FILTER (WHERE a.action_type = 2) AS downloads,
       count(*) FILTER (WHERE a.action_type = 3) AS collects,
       count(DISTINCT a.user_id) AS listeners,
       count(DISTINCT a.song_id) AS active_songs
FROM read_csv($actions, header = false, delim = ',', auto_detect = false, dateformat = '%Y%m%d',
              columns = {'user_id': 'VARCHAR', 'song_id': 'VARCHAR', 'gmt_create': 'BIGINT',
                         'action_type': 'UTINYINT', 'ds': 'DATE'}) AS a
JOIN read_csv($songs, header = false, delim = ',', auto_detect = false, dateformat = '%Y%m%d',
              columns = {'song_id': 'VARCHAR', 'artist_id': 'VARCHAR', 'publish_time': 'DATE',
                         'song_init_plays': 'BIGINT', 'language': 'INTEGER', 'gender': 'INTEGER'}) AS s
  ON s.song_id = a.song_id
GROUP BY s.artist_id, a.ds
"""


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": r.ru_utime + r.ru_stime, "peak_rss_mb": r.ru_maxrss / 1024}


def worker_bare(raw_dir: Path) -> dict:
    import duckdb

    from musictrend_dagster.settings import ACTIONS_PREFIX, SONGS_FILE

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order = false")
    t0 = time.perf_counter()
    con.execute(BARE_SQL, {"actions": str(raw_dir / f"{ACTIONS_PREFIX}.csv"), "songs": str(raw_dir / SONGS_FILE)})
    return {"seconds": time.perf_counter() - t0, **_usage()}


def worker_project(raw_dir: Path) -> dict:
    from musictrend_dagster.core import ingest, sql_models

    models = {m.name: m for m in sql_models.load_models()}
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as tmp:
        con = ingest.connect(Path(tmp) / "warehouse.duckdb", memory_limit=MEMORY_LIMIT)
        t0 = time.perf_counter()
        reports = ingest.ingest_raw_dir(con, raw_dir)
        t_ingest = time.perf_counter() - t0
        for name in ARTIST_DAILY_DEPS:
            sql_models.build_model(con, models[name])
        seconds = time.perf_counter() - t0
        con.close()
    rows = sum(r.lines_read for r in reports[1:])
    quarantined = sum(r.quarantined for r in reports)
    return {"seconds": seconds, "ingest_s": t_ingest, "rows": rows, "quarantined": quarantined, **_usage()}


def _run_worker(side: str, raw_dir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", side, "--raw", str(raw_dir)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(side: str, raw_dir: Path, repeat: int) -> dict:
    runs = [_run_worker(side, raw_dir) for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"]) | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def _dataset(data_dir: Path, name: str, rows: int | None) -> Path:
    from musictrend_dagster.core.sample import expand_tianchi_s1, generate_synthetic
    from musictrend_dagster.settings import ACTIONS_PREFIX

    out = data_dir / name
    if not (out / f"{ACTIONS_PREFIX}.csv").is_file():
        print(f"writing {name} into {out} ...", file=sys.stderr, flush=True)
        if rows is None:
            expand_tianchi_s1(out, seed=0, progress=False)
        else:
            generate_synthetic(out, rows=rows, seed=0, progress=False)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000_000, help="rows of the synthetic log")
    ap.add_argument("--skip-synthetic", action="store_true", help="only the tianchi-s1 sample")
    ap.add_argument("--data-dir", type=Path, default=None, help="cache for generated samples")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side on tianchi-s1 (best kept)")
    ap.add_argument("--worker", choices=("bare", "project"), help=argparse.SUPPRESS)
    ap.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps((worker_bare if args.worker == "bare" else worker_project)(args.raw)))
        return

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-ingest-")
        args.data_dir = Path(tmp.name)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    datasets = [("tianchi-s1", _dataset(args.data_dir, "tianchi_s1", None), args.repeat)]
    if not args.skip_synthetic:
        datasets.append((f"synthetic {args.rows:,}", _dataset(args.data_dir, f"synthetic_{args.rows}", args.rows), 1))

    lines = ["| data | rows | bare DuckDB s | project s (ingest + artist_daily) | ratio | bare rows/s | "
             "project rows/s | bare peak RSS MB | project peak RSS MB | bare CPU s | project CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, raw_dir, repeat in datasets:
        bare = _best("bare", raw_dir, repeat)
        proj = _best("project", raw_dir, repeat)
        ratio = proj["seconds"] / bare["seconds"]
        print(f"{label}: bare {bare} | project {proj} | ratio {ratio:.2f}", file=sys.stderr, flush=True)
        lines.append(
            f"| {label} | {proj['rows']:,} | {bare['seconds']:.2f} | {proj['seconds']:.2f} "
            f"(ingest {proj['ingest_s']:.2f}) | {ratio:.2f}x | {proj['rows'] / bare['seconds']:,.0f} | "
            f"{proj['rows'] / proj['seconds']:,.0f} | {bare['peak_rss_mb']:,.0f} | {proj['peak_rss_mb']:,.0f} | "
            f"{bare['cpu_s']:.1f} | {proj['cpu_s']:.1f} |")
    print("\n".join(lines))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
