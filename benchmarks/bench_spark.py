"""The data layer (ingest + every SQL model) on DuckDB, Spark local[2] and a standalone cluster (2 workers x 1 core).

    python benchmarks/bench_spark.py [--rows 100000000] [--data-dir DIR]

One synthetic log (``musictrend sample --synthetic``, seed 0), each side in its own worker
process, one after the other, side by side in one run: wall time of ingest + SQL models,
rows per second per core (cores = DuckDB's threads, local[N]'s N, the cluster's executor
cores), and the peak RSS of every process the side ran: the Python driver, Spark's driver
JVM, each executor JVM (standalone), from ``VmHWM`` (``benchmarks/memory.py``) read just
before the session stops. The cluster is the one the tests use
(``core.data.engines.cluster.LocalCluster``: the pyspark distribution's master and workers on
127.0.0.1); its daemons' own RSS is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak_rss_mb

MEMORY_LIMIT = "4GB"
SIDES = ("duckdb", "spark_local2", "spark_standalone")


def _vmhwm_mb(pid: int) -> float | None:
    try:
        return peak_rss_mb(Path(f"/proc/{pid}/status"))
    except (OSError, ValueError):
        return None


def _java_peaks(roots: list[int]) -> dict[str, float]:
    """Peak RSS of every JVM under the given processes (the driver JVM, executors), by role."""
    import psutil

    found = {}
    for root in roots:
        try:
            procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if "java" not in cmd:
                continue
            role = (
                "executor"
                if "CoarseGrainedExecutorBackend" in cmd
                else "master"
                if "deploy.master.Master" in cmd
                else "worker daemon"
                if "deploy.worker.Worker" in cmd
                else "driver JVM"
            )
            peak = _vmhwm_mb(p.pid)
            if peak is not None:
                found[f"{role} {p.pid}"] = round(peak, 1)
    return found


def worker(side: str, raw_dir: Path, master: str, daemons: list[int]) -> dict:
    import psutil

    from musictrend_dagster.core.data import ingest, sql_models, warehouse

    engine, cores = None, os.cpu_count() or 1
    if side != "duckdb":
        from pyspark.sql import SparkSession

        from musictrend_dagster.core.data.engines.spark import SparkEngine, spark_config

        builder = SparkSession.builder
        conf = {**spark_config(master), "spark.ui.enabled": "false"}
        if side == "spark_standalone":
            conf.update({"spark.executor.memory": "1g", "spark.cores.max": "2"})
        for k, v in conf.items():
            builder = builder.config(k, v)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        engine = SparkEngine(session)
        cores = 2
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for f in raw_dir.iterdir():
            os.link(f, raw / f.name)
        con = warehouse.connect(Path(tmp) / "warehouse.duckdb", memory_limit=MEMORY_LIMIT)
        t0 = time.perf_counter()
        reports = ingest.ingest_raw_dir(con, raw, Path(tmp) / "lake", engine=engine).files
        t_ingest = time.perf_counter() - t0
        built = sql_models.build_all(con, engine=engine)
        seconds = time.perf_counter() - t0
        daily = con.execute("SELECT count(*), sum(plays) FROM artist_daily").fetchone()
        con.close()
    rows = sum(r.lines_read for r in reports if r.kind == "actions")
    peaks = {"python driver": round(peak_rss_mb(), 1)}
    if engine is not None:
        peaks.update(_java_peaks([os.getpid(), *daemons]))
        session.stop()
    return {
        "side": side,
        "seconds": seconds,
        "ingest_s": t_ingest,
        "rows": rows,
        "cores": cores,
        "rows_per_s_per_core": rows / seconds / cores,
        "artist_daily": list(daily),
        "models": {m: b.rows for m, b in built.items()},
        "peak_rss_mb": peaks,
        "load": os.getloadavg(),
        "cpu_count": psutil.cpu_count(),
    }


def _run(side: str, raw: Path, master: str = "", daemons: list[int] = (), env: dict | None = None) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            side,
            "--raw",
            str(raw),
            "--master",
            master,
            "--daemons",
            ",".join(map(str, daemons)),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000_000, help="rows of the synthetic log")
    ap.add_argument("--data-dir", type=Path, default=None, help="cache for the generated log")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--master", default="", help=argparse.SUPPRESS)
    ap.add_argument("--daemons", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        daemons = [int(p) for p in args.daemons.split(",") if p]
        print(json.dumps(worker(args.worker, args.raw, args.master, daemons)))
        return

    from musictrend_dagster.core.data.engines.cluster import LocalCluster
    from musictrend_dagster.core.sample import generate_synthetic
    from musictrend_dagster.core.settings import ACTIONS_PREFIX

    tmp = tempfile.TemporaryDirectory(prefix="bench-spark-")
    data_dir = args.data_dir or Path(tmp.name)
    raw = data_dir / f"synthetic_{args.rows}"
    if not (raw / f"{ACTIONS_PREFIX}.csv").is_file():
        print(f"writing {args.rows:,} synthetic rows into {raw} ...", file=sys.stderr, flush=True)
        generate_synthetic(raw, rows=args.rows, seed=0, progress=False)
    results = []
    for side in args.sides.split(","):
        print(f"running {side} ...", file=sys.stderr, flush=True)
        if side == "spark_standalone":
            with LocalCluster(Path(tmp.name) / "cluster", workers=2, cores=1, memory="2g") as cluster:
                daemons = [p.pid for p, _ in cluster.procs]
                results.append(_run(side, raw, cluster.master_url, daemons, cluster.env()))
        else:
            results.append(_run(side, raw, "local[2]" if side == "spark_local2" else ""))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)

    same = {json.dumps([r["artist_daily"], r["models"]]) for r in results}
    print(
        f"\n{args.rows:,} synthetic rows, {os.cpu_count()} cores; every side's artist_daily "
        f"{'identical (rows, total plays, model row counts)' if len(same) == 1 else 'DIFFERS'}\n"
    )
    print("| side | wall s | of which ingest s | rows/s per core | peak RSS per process (MB) |")
    print("|---|---|---|---|---|")
    for r in results:
        peaks = ", ".join(f"{k}: {v:,.0f}" for k, v in r["peak_rss_mb"].items())
        print(
            f"| {r['side']} ({r['cores']} cores) | {r['seconds']:.1f} | {r['ingest_s']:.1f} | "
            f"{r['rows_per_s_per_core']:,.0f} | {peaks} |"
        )
    base = results[0]["seconds"]
    for r in results[1:]:
        print(f"{r['side']}: {r['seconds'] / base:.1f}x the wall time of {results[0]['side']}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
