"""Described sources: what the checks cost over bare DuckDB on the same files.

    python benchmarks/bench_sources.py [--events 2000000] [--series 10000] [--days 365] [--repeat 2]

1. Parquet events (Hive folders ``dt=YYYY-MM-DD/part-0.parquet``, typed columns: ``uid, sid,
   singer, ts`` TIMESTAMP WITH TIME ZONE, ``action``): the project's ingest (the description's
   checks, every row's rules, the lake, bookkeeping) + the SQL models up to ``artist_daily``,
   vs bare DuckDB: ``read_parquet`` of the same files + the same GROUP BY (artist and local day:
   plays, downloads, collects, distinct listeners, active songs) into a fresh database file.
2. Daily counts, ``--series`` x ``--days`` rows in the long format (``unique_id,ds,y`` CSV):
   the ingest alone (target < 10 s at 10,000 x 365) and ingest + ``artist_daily``.

Synthetic data, seeded. Each side runs in a fresh warehouse and lake; sides alternate run by run
so a busy machine slows them alike; wall and CPU (user + system of this process) seconds of the
best run are printed, with the load average. Both sides run in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from musictrend_dagster.core.data import ingest, source, sql_models, warehouse
from musictrend_dagster.core.sample.shapes import TOMLS

FIRST = date(2025, 1, 1)  # every day in the past (a future day is quarantined)
TO_ARTIST_DAILY = ("stg_songs", "stg_user_actions", "stg_daily_plays", "artist_day_actions", "artist_daily")
EVENTS_TOML = TOMLS["events-parquet"]  # the sample shape's description: same columns as write_events
BARE_EVENTS = """
CREATE TABLE artist_daily AS
SELECT singer AS artist_id, CAST(ts AT TIME ZONE 'Asia/Shanghai' AS DATE) AS ds,
       count(*) FILTER (WHERE action = 'play') AS plays,
       count(*) FILTER (WHERE action = 'download') AS downloads,
       count(*) FILTER (WHERE action = 'collect') AS collects,
       count(DISTINCT uid) AS listeners,
       count(DISTINCT sid) AS active_songs
FROM read_parquet($files, hive_partitioning = false)
GROUP BY ALL
"""


def write_events(folder: Path, rows: int, days: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per_day = rows // days
    songs = np.array([f"song{i:05d}" for i in range(5000)])
    artists = np.array([f"artist{i % 100:03d}" for i in range(5000)])
    users = np.array([f"user{i:06d}" for i in range(200_000)])
    actions = np.array(["play", "download", "collect"])
    released = pa.array([FIRST - timedelta(days=int(d)) for d in rng.integers(0, 3000, len(songs))], pa.date32())
    catalogue = pa.table({"sid": pa.array(songs), "singer": pa.array(artists), "released": released})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(catalogue, folder.parent / "catalogue.parquet")  # the shape's catalogue: publish dates
    for d in range(days):
        day = FIRST + timedelta(days=d)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        song = rng.zipf(1.3, per_day) % len(songs)
        ts = np.sort(rng.integers(0, 86400, per_day)) + int(start)
        out = folder / f"dt={day.isoformat()}"
        out.mkdir(parents=True)
        table = pa.table(
            {
                "uid": pa.array(users[rng.integers(0, len(users), per_day)]),
                "sid": pa.array(songs[song]),
                "singer": pa.array(artists[song]),
                "ts": pa.array(ts * 1_000_000, pa.timestamp("us", tz="UTC")),
                "action": pa.array(actions[rng.choice(3, per_day, p=[0.9, 0.06, 0.04])]),
            }
        )
        pq.write_table(table, out / "part-0.parquet", compression="zstd")


def write_daily(path: Path, series: int, days: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.array([f"s{i:05d}" for i in range(series)]), days)
    ds = np.tile(np.array([(FIRST + timedelta(days=d)).isoformat() for d in range(days)]), series)
    y = rng.poisson(50, series * days)
    con = duckdb.connect()
    con.register("t", pa.table({"unique_id": ids, "ds": ds, "y": y}))
    con.execute(f"COPY t TO '{path}' (HEADER, DELIMITER ',')")
    con.close()


def timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), os.times()
    fn()
    c1 = os.times()
    return time.perf_counter() - t0, (c1.user - c0.user) + (c1.system - c0.system)


def project(folder: Path, work: Path, models: bool) -> None:
    config = source.load_config(folder / "musictrend.toml")
    con = warehouse.connect(work / "wh.duckdb")
    ingest.ingest_raw_dir(con, None, work / "lake", config=config)
    if models:
        by_name = {m.name: m for m in sql_models.load_models()}
        for name in TO_ARTIST_DAILY:
            sql_models.build_model(con, by_name[name])
    con.close()


def bare(folder: Path, work: Path) -> None:
    files = sorted(str(p) for p in (folder / "events").rglob("*.parquet"))
    con = warehouse.connect(work / "bare.duckdb")
    con.execute(BARE_EVENTS, {"files": files})
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    print(f"load before: {os.getloadavg()}")

    events = root / "events-project"
    write_events(events / "events", args.events)
    (events / "musictrend.toml").write_text(EVENTS_TOML)
    best: dict[str, tuple[float, float]] = {}
    for run in range(args.repeat):
        for side in ("bare", "project"):
            work = root / f"{side}-{run}"
            work.mkdir()
            wall, cpu = timed(lambda s=side, w=work: bare(events, w) if s == "bare" else project(events, w, True))
            print(f"  events {side:8s} run {run}: {wall:6.2f} s wall, {cpu:6.2f} CPU-s")
            best[side] = min(best.get(side, (1e9, 1e9)), (wall, cpu))
    ratio = best["project"][0] / best["bare"][0]
    print(
        f"Parquet events, {args.events:,} rows: bare {best['bare'][0]:.2f} s ({best['bare'][1]:.2f} CPU-s), "
        f"project {best['project'][0]:.2f} s ({best['project'][1]:.2f} CPU-s): {ratio:.2f}x bare"
    )

    daily = root / "daily-project"
    daily.mkdir()
    write_daily(daily / "plays.csv", args.series, args.days)
    (daily / "musictrend.toml").write_text('[source]\nkind = "daily"\npath = "plays.csv"\n')
    for run in range(args.repeat):
        for models in (False, True):
            work = root / f"daily-{run}-{models}"
            work.mkdir()
            wall, cpu = timed(lambda w=work, m=models: project(daily, w, m))
            what = "ingest + artist_daily" if models else "ingest"
            print(f"  daily {args.series:,} x {args.days} {what}: {wall:6.2f} s wall, {cpu:6.2f} CPU-s")
    print(f"load after: {os.getloadavg()}  (data in {root})")


if __name__ == "__main__":
    main()
