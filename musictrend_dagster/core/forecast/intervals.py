"""80% prediction intervals per artist and day, calibrated on a model's own backtests.

Split conformal on log-ratio errors, by horizon day: for every backtest forecast S of an
actual T, e = log((T + 1) / (S + 1)); the interval of a forecast S at horizon day h is
(S + 1) * exp(q) - 1 for q the 10% and 90% quantiles of the errors at days h-3..h+3 (pooled,
so 50 artists x 1 origin still give 350 errors per day). Log ratios make one calibration fit
artists of every size; the +1 keeps zero-play days finite. Days past the backtest window
(a short history scores 7..59 days) reuse the last calibrated day's quantiles.

Coverage is measured honestly: with two or more origins, each origin's intervals come from a
calibration on the other origins only (leave one origin out); with one origin it can only be
in-sample, and is reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.backtest import BacktestResult

LEVEL = 0.8
POOL_DAYS = 3
_LO, _HI = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2


def log_errors(result: BacktestResult) -> pl.DataFrame:
    """origin, artist_id, day (0 = the origin), err = log((T + 1) / (S + 1)) of every backtest forecast."""
    frames = []
    for o in result.origins:
        frames.append(
            o.actual.join(o.forecast, on=["artist_id", "ds"], suffix="_forecast").select(
                pl.lit(o.origin).alias("origin"),
                "artist_id",
                day=(pl.col("ds") - pl.lit(o.origin)).dt.total_days().cast(pl.Int32),
                err=((pl.col("plays").cast(pl.Float64) + 1) / (pl.col("plays_forecast") + 1)).log(),
            )
        )
    return pl.concat(frames)


def calibrate(errors: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """day 0..horizon-1 -> (lo <= 0 <= hi) log-ratio quantiles; days past the errors reuse the last day's."""
    if errors.is_empty():
        raise ValueError("no backtest errors to calibrate intervals on")
    by_day = errors.group_by("day").agg(pl.col("err")).sort("day")
    seen = dict(zip(by_day["day"].to_list(), by_day["err"].to_list(), strict=False))
    last = max(seen)
    rows = []
    for day in range(min(horizon, last + 1)):
        pooled = np.concatenate([seen[d] for d in range(day - POOL_DAYS, day + POOL_DAYS + 1) if d in seen])
        # clamped around 0 so the interval always holds the forecast itself (c*-style forecasts
        # sit below most actuals: their 10% error quantile can be above 0)
        rows.append((day, min(float(np.quantile(pooled, _LO)), 0.0), max(float(np.quantile(pooled, _HI)), 0.0)))
    rows += [(day, rows[-1][1], rows[-1][2]) for day in range(len(rows), horizon)]
    return pl.DataFrame(rows, schema={"day": pl.Int32, "lo": pl.Float64, "hi": pl.Float64}, orient="row")


def with_interval(forecast: pl.DataFrame, calibration: pl.DataFrame) -> pl.DataFrame:
    """The forecast plus plays_lo / plays_hi (>= 0, lo <= plays <= hi) from a calibration; days
    past the calibration's last day reuse its quantiles."""
    start, last = forecast["ds"].min(), cast(int, calibration["day"].max())
    return (
        forecast.with_columns(day=(pl.col("ds") - pl.lit(start)).dt.total_days().clip(upper_bound=last).cast(pl.Int32))
        .join(calibration, on="day", how="left")
        .with_columns(
            # min / max with the forecast: with a quantile of exactly 0, (plays + 1) * 1 - 1 can round past plays
            plays_lo=pl.min_horizontal((pl.col("plays") + 1) * pl.col("lo").exp() - 1, "plays").clip(lower_bound=0.0),
            plays_hi=pl.max_horizontal((pl.col("plays") + 1) * pl.col("hi").exp() - 1, "plays"),
        )
        .drop("day", "lo", "hi")
    )


@dataclass(frozen=True)
class Coverage:
    """Share of backtest actuals inside their 80% interval, per origin and overall."""

    per_origin: dict
    overall: float
    method: str  # "leave-one-origin-out" or "in-sample (one origin)"


def coverage(result: BacktestResult, horizon: int) -> Coverage:
    errors = log_errors(result)
    origins = [o.origin for o in result.origins]
    per_origin, inside, total = {}, 0, 0
    for origin in origins:
        held = errors.filter(pl.col("origin") == origin)
        rest = errors.filter(pl.col("origin") != origin) if len(origins) > 1 else held
        cal = calibrate(rest, horizon)
        hit = held.join(cal, on="day").select(((pl.col("err") >= pl.col("lo")) & (pl.col("err") <= pl.col("hi"))).sum())
        n_hit, n = int(hit.item()), held.height
        per_origin[origin] = n_hit / n
        inside, total = inside + n_hit, total + n
    method = "leave-one-origin-out" if len(origins) > 1 else "in-sample (one origin)"
    return Coverage(per_origin=per_origin, overall=inside / total, method=method)
