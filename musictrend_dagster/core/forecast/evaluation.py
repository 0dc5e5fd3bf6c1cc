"""Per-horizon scores of a backtest: f_norm, WAPE, MASE and 80% interval coverage over the first
7, 14, 28 and 60 days of every origin's window (capped at the window; the window itself always
counts), so models compare at every lead time, not only over the whole horizon.

Coverage uses the intervals' own honest method (core/forecast/intervals.py): each origin's
intervals come from a calibration on the other origins (in-sample with one origin).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from musictrend_dagster.core.forecast.backtest import BacktestResult
from musictrend_dagster.core.forecast.intervals import calibrate, log_errors
from musictrend_dagster.core.forecast.metric import f_norm, mase, seasonal_naive_scale, wape

WINDOWS = (7, 14, 28, 60)
METRICS = ("f_norm", "wape", "mase", "coverage")
# Which way is better, per metric (the champion metric setting picks one of the first two).
HIGHER_IS_BETTER = {"f_norm": True, "wape": False, "mase": False}


def windows(horizon: int) -> list[int]:
    """The scored lead-time windows of a `horizon`-day backtest: 7, 14, 28, 60 below it, and the horizon."""
    if horizon < 1:
        raise ValueError(f"horizon must be positive, got {horizon}")
    return sorted({w for w in WINDOWS if w < horizon} | {horizon})


def _hits(result: BacktestResult, horizon: int) -> pl.DataFrame:
    """origin, day, hit (the actual inside its 80% interval), every origin calibrated on the others."""
    errors = log_errors(result)
    origins = [o.origin for o in result.origins]
    frames = []
    for origin in origins:
        held = errors.filter(pl.col("origin") == origin)
        rest = errors.filter(pl.col("origin") != origin) if len(origins) > 1 else held
        frames.append(
            held.join(calibrate(rest, horizon), on="day").select(
                "origin", "day", hit=(pl.col("err") >= pl.col("lo")) & (pl.col("err") <= pl.col("hi"))
            )
        )
    return pl.concat(frames)


def horizon_scores(result: BacktestResult, history: pl.DataFrame) -> pl.DataFrame:
    """One row per origin and window: origin, window, f_norm, wape, mase, coverage.

    MASE's scale is each artist's seasonal-naive-7 MAE on the days before the origin (the
    backtest's training part), read from `history`.
    """
    horizon = max(o.actual["ds"].n_unique() for o in result.origins)
    hits = _hits(result, horizon)
    rows = []
    for o in result.origins:
        scale_history = history.filter(pl.col("ds") < o.origin).select("artist_id", "ds", "plays")
        scale = seasonal_naive_scale(scale_history)
        for w in windows(horizon):
            end = o.origin + timedelta(days=w)
            actual = o.actual.filter(pl.col("ds") < end)
            forecast = o.forecast.filter(pl.col("ds") < end)
            hit = hits.filter((pl.col("origin") == o.origin) & (pl.col("day") < w))["hit"]
            rows.append(
                {
                    "origin": o.origin,
                    "window": w,
                    "f_norm": f_norm(forecast, actual),
                    "wape": wape(forecast, actual),
                    "mase": mase(forecast, actual, scale_history, scale=scale),
                    "coverage": float(hit.mean()),
                }
            )
    return pl.DataFrame(rows, schema_overrides={"window": pl.Int32})


def horizon_means(scores: pl.DataFrame) -> pl.DataFrame:
    """window -> each metric's mean over origins (scores: `horizon_scores` rows, optionally with a model column)."""
    keys = [c for c in ("model", "window") if c in scores.columns]
    return scores.group_by(keys).agg(pl.col(m).mean() for m in METRICS).sort(keys)


def flat_metrics(scores: pl.DataFrame) -> dict[str, float]:
    """{metric_h<window>: mean over origins}: names that compare across models (MLflow, Dagster metadata)."""
    return {f"{m}_h{row['window']}": row[m] for row in horizon_means(scores).iter_rows(named=True) for m in METRICS}
