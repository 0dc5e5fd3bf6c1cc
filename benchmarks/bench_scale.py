"""Forecasting cost against catalogue size: the full and the daily path on synthetic artist-daily frames.

Each size runs in its own worker process (peak RSS = that worker's VmHWM, benchmarks/memory.py).
The frames come straight from the synthetic generator's per artist-day intensities
(core/sample/synthetic.py: popularity, weekly cycle, trend, releases, bot bursts), drawn as
Poisson counts, so the event expansion and ingest are skipped: they are the data layer's cost,
measured by bench_ingest.py.

full path   every registered model's rolling-origin backtest on the plan of the history, then
            the champion (best mean f_norm) fitted on the whole history and its 60-day forecast;
daily path  the fitted champion observes the history plus one new day and forecasts 60 days.

    nice .venv/bin/python benchmarks/bench_scale.py [--sizes 1000x183,10000x365] [--epochs N]

--epochs N caps the neural models' epochs (default: their real defaults), for quick runs only.

    nice .venv/bin/python benchmarks/bench_scale.py --spark 2 --sizes 1000x183 --models median14,global_direct

    nice .venv/bin/python benchmarks/bench_scale.py --held-out 3 --sizes 1000x183 --models global_direct

--held-out K measures the sample's accuracy instead: each network fitted on its default sample and on every
series (seeds 0..K-1), at the plan's newest origin, both scored (f_norm) on the series outside the sample.

--spark N measures the Spark side instead (core/forecast/distributed.py): a standalone cluster of N
one-core workers on 127.0.0.1, every series forecast on it and on this machine, required identical.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import peak_rss_mb

PLAYS_PER_ARTIST_DAY = 110  # the 20M actions over 1,000 artists x 183 days
TARGETS = {  # (artists, days): (full path s, daily path s, peak RSS MB)
    (1_000, 183): (300, 30, 3_000),
    (10_000, 365): (1_800, 120, 8_000),
    (100_000, 365): (10_800, 600, 16_000),
}


def synthetic_daily(
    artists: int, days: int, seed: int = 0, start: date = date(2015, 3, 1)
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(history, songs) as the models read them: one row per artist and day with plays, downloads and
    listeners, drawn from the synthetic generator's world (its artists, songs and intensities)."""
    from musictrend_dagster.core.sample.synthetic import _build_world, ids_to_str

    rows = artists * days * PLAYS_PER_ARTIST_DAY
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    world = _build_world(rng, artists, days, rows, start)
    volume = world.normal.copy()
    for a, d, _, factor in world.bursts:
        volume[int(a), int(d)] += factor * world.normal[int(a), int(d)]
    expected = volume / volume.sum(axis=0, keepdims=True) * (rows / days)
    draw = np.random.default_rng(np.random.SeedSequence([seed, 0xDA1]))
    plays = draw.poisson(expected)
    downloads = draw.binomial(plays, (world.p_play_dl - world.p_play)[:, None])
    listeners = draw.binomial(plays, draw.uniform(0.3, 0.8, artists)[:, None])
    artist_ids = ids_to_str(world.artist_tab)
    history = pl.DataFrame(
        {
            "artist_id": pl.Series(artist_ids).gather(np.repeat(np.arange(artists), days)),
            "ds": pl.date_range(start, start + timedelta(days=days - 1), eager=True).gather(
                np.tile(np.arange(days), artists)
            ),
            "plays": plays.reshape(-1),
            "downloads": downloads.reshape(-1),
            "listeners": listeners.reshape(-1),
        }
    ).filter(pl.col("plays") > 0)
    songs = world.songs.select("song_id", "artist_id", pl.col("publish_time").cast(pl.String).str.to_date("%Y%m%d"))
    return history, songs


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/self/status has no {key}")


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process so far: steadier than wall on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(artists: int, days: int, epochs: int, models: list[str]) -> dict:
    """One size in this process: the full path, then the daily path of every model kind; figures as a dict."""
    from musictrend_dagster.core.forecast.backtest import backtest
    from musictrend_dagster.core.forecast.models.registry import backtest_plan, make_model, spec

    started = time.perf_counter()
    frame, songs = synthetic_daily(artists, days + 1)
    history = frame.filter(pl.col("ds") < pl.col("ds").max())  # the next day is the daily path's new day
    out: dict = {"artists": artists, "days": days, "epochs": epochs or "defaults"}
    out["generate_s"] = time.perf_counter() - started
    out["data_rss_mb"] = _status_mb("VmRSS")
    plan = backtest_plan(history, 60)
    out["plan"] = plan.describe()
    full_started, full_cpu = time.perf_counter(), _cpu_s()
    fitted, scores = {}, {}
    for name in models:
        s = spec(name)
        overrides = {"epochs": epochs} if epochs and s.uses_tensorflow else {}
        if s.skip_reason({**s.defaults, **overrides}, plan.train_days):
            continue
        made = []

        def build(name=name, overrides=overrides, made=made):
            made.append(make_model(name, **overrides))
            return made[-1]

        t0, c0 = time.perf_counter(), _cpu_s()
        result = backtest(build, history, songs, plan.origins, horizon=plan.window)
        scores[name] = result.mean_f_norm
        out[f"backtest_s/{name}"], out[f"backtest_cpu_s/{name}"] = time.perf_counter() - t0, _cpu_s() - c0
        fitted[name] = made[-1]  # fitted on the days before the newest origin: serves the daily path's timing
    champion = max(scores, key=scores.get)
    t0 = time.perf_counter()
    overrides = {"epochs": epochs} if epochs and spec(champion).uses_tensorflow else {}
    model = make_model(champion, **overrides)
    model.fit(history, songs)
    model.predict(history["ds"].max() + timedelta(days=1), 60)
    out["champion_fit_forecast_s"] = time.perf_counter() - t0
    out["full_s"], out["full_cpu_s"] = time.perf_counter() - full_started, _cpu_s() - full_cpu
    out["champion"] = champion
    out["f_norm"] = scores
    fitted[champion] = model
    new_day = frame["ds"].max()
    for name, m in fitted.items():
        t0, c0 = time.perf_counter(), _cpu_s()
        m.observe(frame, songs)
        m.predict(new_day + timedelta(days=1), 60)
        out[f"daily_s/{name}"], out[f"daily_cpu_s/{name}"] = time.perf_counter() - t0, _cpu_s() - c0
    out["daily_s"], out["daily_cpu_s"] = out[f"daily_s/{champion}"], out[f"daily_cpu_s/{champion}"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def held_out(artists: int, days: int, models: list[str], seeds: int, epochs: int = 0) -> list[dict]:
    """The bounded sample against every series, on the series the sample never saw: per network and seed,
    f_norm of the default `train_series` fit and of the fit on every artist, over the artists outside that
    sample, at the plan's newest origin (60 test days); CPU seconds of each fit + forecast."""
    from musictrend_dagster.core.forecast.features import plays_matrix
    from musictrend_dagster.core.forecast.metric import f_norm
    from musictrend_dagster.core.forecast.models.registry import backtest_plan, make_model
    from musictrend_dagster.core.forecast.sampling import stratified_sample

    history, songs = synthetic_daily(artists, days)
    origin = backtest_plan(history, 60).origins[-1]
    train = history.filter(pl.col("ds") < origin)
    actual = history.filter((pl.col("ds") >= origin) & (pl.col("ds") < origin + timedelta(days=60)))
    names, _, plays = plays_matrix(train)
    rows = []
    for name in models:
        for seed in range(seeds):
            overrides = {"seed": seed, **({"epochs": epochs} if epochs else {})}
            size = make_model(name, **overrides).train_series
            held = set(names) - {names[i] for i in stratified_sample(plays, size, seed)}
            if not held:
                raise SystemExit(f"{artists:,} series are no more than {name}'s sample of {size}: nothing is held out")
            row: dict = {"model": name, "seed": seed, "train_series": size, "held_out": len(held)}
            for label, n in (("sample", size), ("all", artists)):
                c0 = _cpu_s()
                model = make_model(name, **overrides, train_series=n)
                model.fit(train, songs)
                forecast = model.predict(origin, 60).filter(pl.col("artist_id").is_in(held))
                row[label] = f_norm(forecast, actual.filter(pl.col("artist_id").is_in(held)).select(forecast.columns))
                row[f"{label}_cpu_s"] = _cpu_s() - c0
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def held_out_table(rows: list[dict]) -> str:
    lines = [
        "| model | seeds | sample (series) | held-out series | f_norm: sample | f_norm: every series | sample - every "
        "| spread of every-series fits | CPU s: sample / every |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r["model"] for r in rows):
        own = [r for r in rows if r["model"] == name]
        sample, every = np.array([r["sample"] for r in own]), np.array([r["all"] for r in own])
        lines.append(
            f"| {name} | {len(own)} | {own[0]['train_series']} | {own[0]['held_out']} | {sample.mean():.4f} "
            f"| {every.mean():.4f} | {sample.mean() - every.mean():+.4f} | {every.max() - every.min():.4f} "
            f"| {np.mean([r['sample_cpu_s'] for r in own]):.0f} / {np.mean([r['all_cpu_s'] for r in own]):.0f} |"
        )
    return "\n".join(lines)


def dense(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame on a dense calendar (every artist every day, 0 where it had no row), as artist_daily is."""
    calendar = pl.DataFrame({"ds": pl.date_range(frame["ds"].min(), frame["ds"].max(), eager=True)})
    full = frame.select("artist_id").unique().join(calendar, how="cross")
    return full.join(frame, on=["artist_id", "ds"], how="left").fill_null(0).sort("artist_id", "ds")


def spark_worker(artists: int, days: int, models: list[str], workers: int, batch: int) -> dict:
    """The Spark side (core/forecast/distributed.py) on a standalone cluster of `workers` one-core workers
    started here: per model, fit + forecast of every series on this machine, then with the forecasts on
    the cluster (networks fitted here), both timed and required to be equal bit for bit; then the daily
    path (the fitted network reads one day more) both ways. `batch` series per task."""
    import tempfile

    from pyspark.sql import SparkSession

    from musictrend_dagster.core.data.engines.cluster import LocalCluster
    from musictrend_dagster.core.data.engines.spark import spark_config
    from musictrend_dagster.core.forecast import distributed, sampling
    from musictrend_dagster.core.forecast.models.registry import make_model, spec

    sampling.BATCH_SERIES = batch
    frame, songs = synthetic_daily(artists, days + 1)
    frame = dense(frame)
    history = frame.filter(pl.col("ds") < pl.col("ds").max())
    start = frame["ds"].max()
    out: dict = {"artists": artists, "days": days, "workers": workers, "batch": batch}
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(tmp, workers=workers, cores=1, memory="2g") as cluster:
        os.environ.update({k: v for k, v in cluster.env().items() if k.startswith("SPARK_")})
        os.environ["PYSPARK_PYTHON"] = sys.executable
        builder = SparkSession.builder
        conf = {
            **spark_config(cluster.master_url),
            "spark.executor.memory": "1500m",
            "spark.executorEnv.PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
        }
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        try:
            for name in models:
                tf = spec(name).uses_tensorflow
                for where, session in (("local", None), ("spark", spark)):
                    t0 = time.perf_counter()
                    _, forecast, fit_s = distributed.fit_forecast(
                        make_model(name), history, songs, start, 60, spark=session
                    )
                    out[f"{where}_s/{name}"] = time.perf_counter() - t0
                    out[f"{where}_fit_s/{name}"] = fit_s
                    out[f"{where}_forecast/{name}"] = forecast
                same = distributed.same_forecast(out.pop(f"local_forecast/{name}"), out.pop(f"spark_forecast/{name}"))
                out[f"identical/{name}"] = same
                if tf:
                    model = make_model(name)
                    model.fit(history, songs)
                    daily = {}
                    for where, session in (("local", None), ("spark", spark)):
                        t0 = time.perf_counter()
                        daily[where] = distributed.observe_forecast(
                            model, frame, songs, start + timedelta(days=1), 60, spark=session
                        )
                        out[f"daily_{where}_s/{name}"] = time.perf_counter() - t0
                    out[f"daily_identical/{name}"] = distributed.same_forecast(daily["local"], daily["spark"])
        finally:
            spark.stop()
    out["driver_peak_rss_mb"] = peak_rss_mb()
    out["load"] = os.getloadavg()[0]
    return out


def run_size(artists: int, days: int, epochs: int, models: list[str]) -> dict:
    """`worker` in a fresh process (its own peak RSS), under nice."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_scale; "
        f"print(json.dumps(bench_scale.worker({artists}, {days}, {epochs}, {models!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    if done.returncode:
        raise SystemExit(f"{artists} x {days} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = [
        "| series x days | full path wall (CPU) | daily path wall (CPU) | peak RSS | champion | load (1 min) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        target = TARGETS.get((r["artists"], r["days"]))
        goal = f" (< {target[0]:,} s / {target[1]} s / {target[2]:,} MB)" if target else ""
        lines.append(
            f"| {r['artists']:,} x {r['days']}{goal} | {r['full_s']:.0f} s ({r['full_cpu_s']:.0f} s) "
            f"| {r['daily_s']:.1f} s ({r['daily_cpu_s']:.1f} s) "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['champion']} | {r['load']:.1f} |"
        )
    lines += ["", "Per model: backtest over the plan's origins, wall (CPU); daily = observe + 60-day forecast:"]
    for r in results:
        names = [k.split("/")[1] for k in r if k.startswith("backtest_s/")]
        parts = [
            f"{n} {r['backtest_s/' + n]:.0f} s ({r['backtest_cpu_s/' + n]:.0f} s) / "
            f"daily {r['daily_s/' + n]:.1f} s ({r['daily_cpu_s/' + n]:.1f} s)"
            for n in names
        ]
        lines.append(f"- {r['artists']:,} x {r['days']}: " + "; ".join(parts))
    lines += ["", "Cost curve (CPU and memory per 1,000 series: flat where cost grows with the catalogue)"]
    for r in results:
        k = r["artists"] / 1000
        lines.append(
            f"- {r['artists']:,} x {r['days']}: full {r['full_cpu_s'] / k:.0f} CPU s, daily {r['daily_cpu_s'] / k:.2f} "
            f"CPU s, peak RSS {r['peak_rss_mb'] / k:,.0f} MB (RSS with the frame alone {r['data_rss_mb']:,.0f} MB)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from musictrend_dagster.core.forecast.models.registry import candidates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x183,10000x365", help="comma-separated ARTISTSxDAYS")
    parser.add_argument("--epochs", type=int, default=0, help="cap the neural models' epochs (0 = their defaults)")
    parser.add_argument(
        "--models",
        default=",".join(s.name for s in candidates()),
        help="comma-separated registry names (default: the candidates, MUSICTREND_MODELS)",
    )
    parser.add_argument(
        "--spark", type=int, default=0, help="N: the Spark side instead, on a standalone cluster of N one-core workers"
    )
    parser.add_argument("--batch", type=int, default=250, help="series per Spark task (--spark only)")
    parser.add_argument(
        "--held-out", type=int, default=0, help="K: the sample's accuracy on unseen series instead, seeds 0..K-1"
    )
    args = parser.parse_args(argv)
    if args.held_out:
        for size in args.sizes.split(","):
            artists, days = (int(v) for v in size.lower().split("x"))
            print(f"\n{artists:,} x {days}, load {os.getloadavg()[0]:.1f} at the end:\n")
            print(held_out_table(held_out(artists, days, args.models.split(","), args.held_out, args.epochs)))
        return 0
    if args.spark:
        for size in args.sizes.split(","):
            artists, days = (int(v) for v in size.lower().split("x"))
            print(json.dumps(spark_worker(artists, days, args.models.split(","), args.spark, args.batch)), flush=True)
        return 0
    results = []
    for size in args.sizes.split(","):
        artists, days = (int(v) for v in size.lower().split("x"))
        result = run_size(artists, days, args.epochs, args.models.split(","))
        result["load"] = os.getloadavg()[0]
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{os.cpu_count()} cores; epochs: {args.epochs or 'model defaults'}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
