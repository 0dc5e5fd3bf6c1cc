"""Every registered model, the statsforecast peers among them, backtested side by side in one run.

Every model is backtested once on the 7 tianchi-s1 origins (the 3 reported and 6 rolling ones 12 days
apart share one) and on each synthetic shape's plan. Tables (markdown), per set: f_norm per origin and
mean, seconds, 80% interval coverage; the per-horizon table (f_norm, WAPE, coverage over the first
7/14/28/60 days, MASE over 60); the targets (is the champion at or above every peer at every window,
and by how much it misses where not); the per-horizon champion check (models per segment of days
chosen on earlier origins only, scored on the next). Then the bounds: what the champion would score
given the level it cannot know. Development sets (rolling origins, synthetic shapes) print before
the reported origins.
With --e2e, also the wall time of `musictrend sample` + `musictrend run` on a fresh MUSICTREND_HOME.

    .venv/bin/python benchmarks/bench_models.py [--models median14,global_ensemble] [--epochs N]
        [--sets rolling6,synthetic,reported,bounds] [--e2e]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.backtest import (
    BacktestResult,
    OriginResult,
    backtest,
    plan_backtest,
    rolling_origins,
)
from musictrend_dagster.core.forecast.evaluation import horizon_means, horizon_scores, nested_segment_check
from musictrend_dagster.core.forecast.intervals import coverage
from musictrend_dagster.core.forecast.metric import artist_scores, f_norm
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, make_model, required_history, spec
from musictrend_dagster.core.sample import generate_synthetic, packaged_history

LAST_DAY = date(2015, 8, 30)
MODELS = {name: partial(make_model, name) for name in MODEL_NAMES}
PEER_NAMES = [name for name in MODEL_NAMES if name.endswith(("_log1p", "_raw"))]
# Synthetic logs of different shapes: (artists, days, rows, seed).
SHAPES = [(50, 183, 2_000_000, 3), (20, 120, 400_000, 11), (100, 183, 2_000_000, 5)]
BOUNDED = "global_ensemble"  # the champion whose ceiling the bounds table measures
NOWCAST_DAYS = (7, 14)


def synthetic_history(shape: tuple[int, int, int, int], tmp: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Generate a synthetic raw log and aggregate it as the pipeline does: a dense artist x day frame."""
    artists, days, rows, seed = shape
    summary = generate_synthetic(tmp, artists=artists, days=days, rows=rows, seed=seed, progress=False)
    con = duckdb.connect()
    songs = con.sql(
        f"SELECT column0 AS song_id, column1 AS artist_id, strptime(column2, '%Y%m%d')::DATE AS publish_time "
        f"FROM read_csv('{summary.songs_file}', header=false, all_varchar=true)"
    ).pl()
    con.register("songs", songs)
    daily = con.sql(
        f"""SELECT s.artist_id, strptime(a.column4, '%Y%m%d')::DATE AS ds,
               count(*) FILTER (WHERE a.column3 = '1') AS plays,
               count(*) FILTER (WHERE a.column3 = '2') AS downloads,
               count(DISTINCT a.column0) AS listeners
            FROM read_csv('{summary.actions_file}', header=false, all_varchar=true) a
            JOIN songs s ON s.song_id = a.column1
            GROUP BY ALL"""
    ).pl()
    calendar = pl.DataFrame({"ds": pl.date_range(daily["ds"].min(), daily["ds"].max(), eager=True)})
    dense = (
        daily.select("artist_id")
        .unique()
        .join(calendar, how="cross")
        .join(daily, on=["artist_id", "ds"], how="left")
        .fill_null(0)
        .sort("artist_id", "ds")
    )
    return dense, songs


def run_set(
    factories: dict, history: pl.DataFrame, songs: pl.DataFrame, origins, window: int, label: str
) -> list[BacktestResult]:
    results = []
    for name, factory in factories.items():
        started = time.perf_counter()
        result = backtest(factory, history, songs, origins, horizon=window)
        result.model = name
        results.append(result)
        print(f"[{label}] {name}: {result.mean_f_norm:.4f} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return results


def subset(results: list[BacktestResult], origins) -> list[BacktestResult]:
    """The same backtests restricted to `origins` (each model fit once per origin, whichever sets use it)."""
    return [BacktestResult(r.model, r.params, [o for o in r.origins if o.origin in set(origins)]) for r in results]


def table(results: list[BacktestResult], window: int, timings: bool = True) -> str:
    origins = [o.origin for o in results[0].origins]
    head = ["model", *(o.isoformat() for o in origins), "mean f_norm"]
    if timings:
        head += ["fit+predict s / origin", "80% coverage"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: -r.mean_f_norm):
        n = len(r.origins)
        cells = [r.model, *(f"{o.f_norm:.4f}" for o in r.origins), f"**{r.mean_f_norm:.4f}**"]
        if timings:
            cover = coverage(r, window)
            cells += [f"{sum(o.fit_seconds + o.predict_seconds for o in r.origins) / n:.2f}", f"{cover.overall:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def horizon_frame(results: list[BacktestResult], history: pl.DataFrame) -> pl.DataFrame:
    """model, window, mean f_norm / wape / mase / coverage over the results' origins."""
    return horizon_means(pl.concat([horizon_scores(r, history).with_columns(model=pl.lit(r.model)) for r in results]))


def horizon_table(means: pl.DataFrame) -> str:
    """Rows: models (best 60-day f_norm first); columns: f_norm, WAPE and coverage per window, MASE over the last."""
    wins = sorted(means["window"].unique().to_list())
    last = wins[-1]
    head = ["model", *(f"f_norm {w}" for w in wins), *(f"WAPE {w}" for w in wins), f"MASE {last}"]
    head += [f"cover {w}" for w in wins]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["model"], r["window"]): r for r in means.iter_rows(named=True)}
    models = sorted(means["model"].unique(), key=lambda m: -by[(m, last)]["f_norm"])
    for m in models:
        cells = [m, *(f"{by[(m, w)]['f_norm']:.4f}" for w in wins), *(f"{by[(m, w)]['wape']:.3f}" for w in wins)]
        cells += [f"{by[(m, last)]['mase']:.3f}", *(f"{by[(m, w)]['coverage']:.1%}" for w in wins)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(means: pl.DataFrame, label: str) -> str:
    """The champion (best mean f_norm over the whole window, as the pipeline picks it) against the best peer
    at every window, and whether the 80% intervals cover 75-85% at every window."""
    last = means["window"].max()
    full = means.filter(pl.col("window") == last).sort(["f_norm", "model"], descending=[True, False])
    champ = full["model"][0]
    lines = [f"{label}: champion {champ}"]
    for w in sorted(means["window"].unique()):
        at = means.filter(pl.col("window") == w)
        own = at.filter(pl.col("model") == champ).row(0, named=True)
        peer = at.filter(pl.col("model").is_in(PEER_NAMES) & (pl.col("model") != champ)).sort("f_norm").tail(1)
        gap = own["f_norm"] - peer["f_norm"][0]
        verdict = "holds" if gap >= 0 else "MISSES"
        cover = "" if 0.75 <= own["coverage"] <= 0.85 else f"; coverage {own['coverage']:.1%} outside 75-85%"
        lines.append(
            f"  {w:>2} days: {verdict} ({own['f_norm']:.4f} vs best peer {peer['model'][0]} {peer['f_norm'][0]:.4f}, "
            f"{gap:+.4f}){cover}"
        )
    return "\n".join(lines)


def segment_check(results: list[BacktestResult], min_choose: int) -> str:
    """The nested per-horizon champion check as a markdown table."""
    rows = nested_segment_check({r.model: r for r in results}, min_choose)
    lines = [
        "| held-out origin | single model (chosen before) | its f_norm | models for days 1-7, 8-28, 29-60 | composed |",
        "|---|---|---|---|---|",
    ]
    for r in rows.iter_rows(named=True):
        lines.append(
            f"| {r['origin']} | {r['single']} | {r['single_f_norm']:.4f} | {r['segments']} | "
            f"{r['composed_f_norm']:.4f} ({r['composed_f_norm'] - r['single_f_norm']:+.4f}) |"
        )
    return "\n".join(lines)


def beats_median14(results: list[BacktestResult]) -> str:
    by = {r.model: r for r in results}
    if "median14" not in by:
        return ""
    base = [o.f_norm for o in by["median14"].origins]
    lines = []
    for r in sorted(results, key=lambda r: -r.mean_f_norm):
        wins = sum(o.f_norm >= b for o, b in zip(r.origins, base, strict=False))
        lines.append(f"{r.model}: >= median14 on {wins}/{len(base)} origins")
    return "\n".join(lines)


def _bounded(result: BacktestResult, label: str, forecast_of) -> BacktestResult:
    """`result` with every origin's forecast replaced by forecast_of(origin result), rescored."""
    origins = []
    for o in result.origins:
        forecast = forecast_of(o)
        scores = artist_scores(forecast, o.actual)
        origins.append(OriginResult(o.origin, f_norm(forecast, o.actual), 0.0, 0.0, forecast, scores, o.actual))
    return BacktestResult(model=label, params={}, origins=origins)


def nowcast_oracle(result: BacktestResult, days: int) -> BacktestResult:
    """The forecasts given a perfect nowcast: each artist's curve scaled by the factor that minimises
    its relative error over the actual first `days` test days (k = sum(S/T) / sum((S/T)^2), days
    with plays); an artist without plays in those days keeps its forecast."""

    def rescaled(o: OriginResult) -> pl.DataFrame:
        counted = (pl.col("ds") < o.origin + timedelta(days=days)) & (pl.col("plays") > 0)
        ratio = (pl.col("plays_forecast") / pl.col("plays")).filter(counted)
        scale = (
            o.actual.join(o.forecast, on=["artist_id", "ds"], suffix="_forecast")
            .group_by("artist_id")
            .agg(k=ratio.sum() / (ratio**2).sum())
        )
        return (
            o.forecast.join(scale, on="artist_id", how="left")
            .select("artist_id", "ds", plays=pl.col("plays") * pl.col("k").fill_nan(1.0).fill_null(1.0))
            .cast(FORECAST_SCHEMA)
        )

    return _bounded(result, f"{result.model} at the actual level of test days 1-{days}", rescaled)


def hindsight_constant(result: BacktestResult) -> BacktestResult:
    """The perfect level: per artist, the constant minimising its relative error over the whole test window."""

    def constant(o: OriginResult) -> pl.DataFrame:
        x = pl.col("plays").cast(pl.Float64).filter(pl.col("plays") > 0)
        level = o.actual.group_by("artist_id").agg(level=(1.0 / x).sum() / (1.0 / x**2).sum())
        return (
            o.forecast.join(level, on="artist_id", how="left")
            .select("artist_id", "ds", plays=pl.col("level").fill_nan(0.0).fill_null(0.0))
            .cast(FORECAST_SCHEMA)
        )

    return _bounded(result, "hindsight per-artist constant", constant)


def bounds_table(results: list[BacktestResult], reported: list[date]) -> str:
    origins = [o.origin for o in results[0].origins]
    others = len(origins) - len(reported)
    head = ["forecast", *(o.isoformat() for o in origins), "mean, 3 reported", f"mean, other {others}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        scores = {o.origin: o.f_norm for o in r.origins}
        means = [np.mean([v for o, v in scores.items() if (o in reported) == inside]) for inside in (True, False)]
        cells = [r.model, *(f"{scores[o]:.4f}" for o in origins), *(f"**{m:.4f}**" for m in means)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def end_to_end() -> str:
    """Time the user's path on a fresh home: make the raw sample, then materialise everything."""
    cli = Path(sys.executable).with_name("musictrend")
    if not cli.exists():
        raise SystemExit(f"{cli} not found: install the project (pip install -e .) first")
    env = {
        k: v for k, v in os.environ.items() if k not in {"MLFLOW_TRACKING_URI", "DAGSTER_HOME", "MUSICTREND_RAW_DIR"}
    }
    with tempfile.TemporaryDirectory(prefix="musictrend-bench-") as tmp:
        home = Path(tmp) / "home"
        env["MUSICTREND_HOME"] = str(home)
        times = {}
        for step, cmd in (
            ("sample", [str(cli), "sample", "--source", "tianchi-s1", "--out", str(home / "raw")]),
            ("run", [str(cli), "run", "--home", str(home)]),
        ):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            times[step] = time.perf_counter() - t0
            if done.returncode:
                raise SystemExit(
                    f"`{' '.join(cmd)}` failed ({done.returncode}) after {times[step]:.1f} s:\n{done.stderr[-4000:]}"
                )
    total = sum(times.values())
    return f"end-to-end on a fresh home: sample {times['sample']:.1f} s + run {times['run']:.1f} s = {total:.1f} s"


def report(results: list[BacktestResult], history: pl.DataFrame, window: int, label: str, min_choose: int) -> None:
    """Every table of one set of origins."""
    print(f"## {label}\n")
    print(table(results, window) + "\n")
    print(beats_median14(results) + "\n")
    means = horizon_frame(results, history)
    print(f"### per horizon (mean over the {len(results[0].origins)} origins)\n")
    print(horizon_table(means) + "\n")
    print("```\n" + targets(means, label) + "\n```\n")
    if len(results[0].origins) > min_choose:
        print("### per-horizon champion, chosen on the earlier origins only\n")
        print(segment_check(results, min_choose) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--epochs", type=int, default=0, help="cap the neural models' epochs (0: their defaults)")
    parser.add_argument(
        "--sets",
        default="rolling6,synthetic,reported,bounds",
        help="which tables: rolling6, synthetic, reported, bounds (development sets first, reported last)",
    )
    parser.add_argument("--e2e", action="store_true", help="also time `musictrend sample` + `musictrend run`")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    capped = {"epochs": args.epochs} if args.epochs else {}
    factories = {name: partial(make_model, name, **(capped if spec(name).uses_tensorflow else {})) for name in names}
    sets = args.sets.split(",")
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min), {os.cpu_count()} cores; epochs: {args.epochs or 'defaults'}")

    history, songs = packaged_history()
    t0 = time.perf_counter()
    reported = rolling_origins(LAST_DAY)
    rolling = plan_backtest(history["ds"].min(), LAST_DAY, required_history(), horizon=60, max_origins=6, step=12)
    wanted = set()
    if {"reported", "bounds"} & set(sets):
        wanted |= set(reported)
    if {"rolling6", "bounds"} & set(sets):
        wanted |= set(rolling.origins)
    tianchi = run_set(factories, history, songs, sorted(wanted), 60, "tianchi-s1") if wanted else []
    if "rolling6" in sets:
        report(
            subset(tianchi, rolling.origins),
            history,
            rolling.window,
            "tianchi-s1, development: 6 rolling origins 12 days apart, 60-day windows",
            min_choose=3,
        )
    if "synthetic" in sets:
        for shape in SHAPES:
            with tempfile.TemporaryDirectory(prefix="musictrend-synth-") as tmp:
                synth, synth_songs = synthetic_history(shape, Path(tmp))
            plan = plan_backtest(synth["ds"].min(), synth["ds"].max(), required_history(), horizon=60)
            label = f"synthetic {shape[0]} artists x {shape[1]} days, {shape[2]:,} rows, seed {shape[3]}"
            results = run_set(factories, synth, synth_songs, plan.origins, plan.window, label)
            report(results, synth, plan.window, f"{label} ({len(plan.origins)} origins)", min_choose=2)
    if "reported" in sets:
        report(
            subset(tianchi, reported),
            history,
            60,
            f"tianchi-s1, the 3 reported origins ({history['artist_id'].n_unique()} artists, 60-day windows)",
            min_choose=2,
        )
    if "bounds" in sets and BOUNDED in names:
        champion = next(r for r in tianchi if r.model == BOUNDED)
        rows = [champion, *(nowcast_oracle(champion, d) for d in NOWCAST_DAYS), hindsight_constant(champion)]
        print(f"## How far a better level could go: {BOUNDED} given what it cannot know (tianchi-s1, 60-day windows)\n")
        print(bounds_table(rows, reported) + "\n")
    print(f"\nbacktest wall time: {time.perf_counter() - t0:.1f} s; load after: {os.getloadavg()[0]:.1f} (1-min)")
    if args.e2e:
        print(end_to_end())
    return 0


if __name__ == "__main__":
    sys.exit(main())
