"""Every registered model and the off-the-shelf peers a user would pick instead, backtested in one run.

Tables (markdown): the 3 reported tianchi-s1 origins (f_norm per origin, mean, seconds, 80%
interval coverage), the generalisation check on 6 rolling origins 12 days apart, the mean
f_norm on synthetic logs of different shapes, and the bounds: what the champion would score
given the level it cannot know (its forecast rescaled to the actual first 7 or 14 test days,
and the hindsight per-artist constant) on all 7 of those origins. Peers (statsforecast AutoETS, AutoTheta,
WindowAverage(14) on log1p) need the `bench` extra: pip install -e '.[bench]'.
With --e2e, also the wall time of `musictrend sample` + `musictrend run` on a fresh MUSICTREND_HOME.

    .venv/bin/python benchmarks/bench_models.py [--models median14,global_ensemble] [--no-peers]
        [--sets reported,rolling6,synthetic,bounds] [--e2e]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
from musictrend_dagster.core.forecast.intervals import coverage
from musictrend_dagster.core.forecast.metric import artist_scores, f_norm
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA, FitInfo
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, make_model, required_history
from musictrend_dagster.core.sample import generate_synthetic, packaged_history

LAST_DAY = date(2015, 8, 30)
MODELS = {name: partial(make_model, name) for name in MODEL_NAMES}
# Synthetic logs of different shapes: (artists, days, rows, seed).
SHAPES = [(50, 183, 2_000_000, 3), (20, 120, 400_000, 11), (100, 183, 2_000_000, 5)]
BOUNDED = "global_ensemble"  # the champion whose ceiling the bounds table measures
NOWCAST_DAYS = (7, 14)


@dataclass(eq=False)
class Peer:
    """A statsforecast model behind the project's Forecaster interface (fit keeps the series; predict forecasts)."""

    name: str
    build: object  # () -> statsforecast model
    log1p: bool = False

    def params(self) -> dict:
        return {"peer": self.name, "log1p": self.log1p}

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        y = pl.col("plays").cast(pl.Float64)
        self._frame = history.select(
            unique_id="artist_id", ds=pl.col("ds").cast(pl.Datetime), y=y.log1p() if self.log1p else y
        ).sort("unique_id", "ds")
        self._last = history["ds"].max()
        return FitInfo()

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        from statsforecast import StatsForecast

        offset = (start - self._last).days - 1
        model = self.build()
        out = StatsForecast(models=[model], freq="1d", n_jobs=1).forecast(df=self._frame, h=offset + horizon)
        value = pl.col(out.columns[-1]).fill_nan(0.0).fill_null(0.0)
        return (
            out.select(
                artist_id="unique_id", ds=pl.col("ds").cast(pl.Date), plays=value.exp() - 1 if self.log1p else value
            )
            .filter(pl.col("ds") >= start)
            .with_columns(pl.col("plays").clip(lower_bound=0.0))
            .cast(FORECAST_SCHEMA)
        )


def peers() -> dict[str, partial]:
    from statsforecast.models import AutoETS, AutoTheta, WindowAverage

    return {
        "AutoETS (peer)": partial(Peer, "AutoETS (peer)", partial(AutoETS, season_length=7)),
        "AutoTheta (peer)": partial(Peer, "AutoTheta (peer)", partial(AutoTheta, season_length=7)),
        "WindowAverage14 log1p (peer)": partial(
            Peer, "WindowAverage14 log1p (peer)", partial(WindowAverage, window_size=14), log1p=True
        ),
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--no-peers", action="store_true", help="skip the statsforecast peers")
    parser.add_argument(
        "--sets",
        default="reported,rolling6,synthetic,bounds",
        help="which tables: reported, rolling6, synthetic, bounds",
    )
    parser.add_argument("--e2e", action="store_true", help="also time `musictrend sample` + `musictrend run`")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    factories = {name: MODELS[name] for name in names}
    if not args.no_peers:
        try:
            factories.update(peers())
        except ImportError:
            parser.error("the peers need statsforecast: pip install -e '.[bench]' (or pass --no-peers)")
    sets = args.sets.split(",")

    history, songs = packaged_history()
    t0 = time.perf_counter()
    if "reported" in sets:
        results = run_set(factories, history, songs, rolling_origins(LAST_DAY), 60, "reported")
        print(f"## tianchi-s1, the 3 reported origins ({history['artist_id'].n_unique()} artists, 60-day windows)\n")
        print(table(results, 60))
        print("\n" + beats_median14(results) + "\n")
    rolling = plan_backtest(history["ds"].min(), LAST_DAY, required_history(), horizon=60, max_origins=6, step=12)
    if "rolling6" in sets:
        results = run_set(factories, history, songs, rolling.origins, rolling.window, "rolling6")
        print("## tianchi-s1, generalisation: 6 rolling origins 12 days apart, 60-day windows\n")
        print(table(results, rolling.window))
        print("\n" + beats_median14(results) + "\n")
    if "synthetic" in sets:
        rows = {}
        for shape in SHAPES:
            with tempfile.TemporaryDirectory(prefix="musictrend-synth-") as tmp:
                synth, synth_songs = synthetic_history(shape, Path(tmp))
            plan = plan_backtest(synth["ds"].min(), synth["ds"].max(), required_history(), horizon=60)
            label = f"{shape[0]} artists x {shape[1]} days, {shape[2]:,} rows, seed {shape[3]}"
            for r in run_set(factories, synth, synth_songs, plan.origins, plan.window, label):
                rows.setdefault(r.model, {})[label] = r.mean_f_norm
        labels = [f"{s[0]} artists x {s[1]} days, {s[2]:,} rows, seed {s[3]}" for s in SHAPES]
        print("## synthetic logs of different shapes: mean f_norm over the plan's origins\n")
        print("| model | " + " | ".join(labels) + " |\n|" + "---|" * (len(labels) + 1))
        for model, by in sorted(rows.items(), key=lambda kv: -np.mean(list(kv[1].values()))):
            print(f"| {model} | " + " | ".join(f"{by[label]:.4f}" for label in labels) + " |")
    if "bounds" in sets:
        reported = rolling_origins(LAST_DAY)
        origins = sorted({*reported, *rolling.origins})
        champion = run_set({BOUNDED: MODELS[BOUNDED]}, history, songs, origins, 60, "bounds")[0]
        rows = [champion, *(nowcast_oracle(champion, d) for d in NOWCAST_DAYS), hindsight_constant(champion)]
        print(f"## How far a better level could go: {BOUNDED} given what it cannot know (tianchi-s1, 60-day windows)\n")
        print(bounds_table(rows, reported) + "\n")
    print(f"\nbacktest wall time: {time.perf_counter() - t0:.1f} s")
    if args.e2e:
        print(end_to_end())
    return 0


if __name__ == "__main__":
    sys.exit(main())
