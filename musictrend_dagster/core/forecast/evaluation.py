"""Per-horizon scores of a backtest: f_norm, WAPE, MASE and 80% interval coverage over the first
7, 14, 28 and 60 days of every origin's window (capped at the window; the window itself always
counts), so models compare at every lead time, not only over the whole horizon.

Coverage uses the intervals' own honest method (core/forecast/intervals.py): each origin's
intervals come from a calibration on the other origins (in-sample with one origin).
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

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
                    "coverage": float(cast(float, hit.mean())),
                }
            )
    return pl.DataFrame(rows, schema_overrides={"window": pl.Int32})


def horizon_means(scores: pl.DataFrame) -> pl.DataFrame:
    """window -> each metric's mean over origins (scores: `horizon_scores` rows, optionally with a model column)."""
    keys = [c for c in ("model", "window") if c in scores.columns]
    return scores.group_by(keys).agg(pl.col(m).mean() for m in METRICS).sort(keys)


def window_leaders(scores: pl.DataFrame, champion: str, metric: str = "f_norm") -> pl.DataFrame:
    """Per window, the model with the best mean `metric` and the champion's lead over it (negative: the
    champion is beaten at that window). scores: `horizon_scores` rows with a model column."""
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    means = horizon_means(scores).select("model", "window", metric)
    own = means.filter(pl.col("model") == champion).select("window", champion=pl.col(metric))
    return (
        means.sort(["window", metric, "model"], descending=[False, HIGHER_IS_BETTER[metric], False])
        .group_by("window", maintain_order=True)
        .agg(best=pl.col("model").first(), best_score=pl.col(metric).first())
        .join(own, on="window", how="left")
        .with_columns(champion_lead=sign * (pl.col("champion") - pl.col("best_score")))
        .sort("window")
    )


def flat_metrics(scores: pl.DataFrame) -> dict[str, float]:
    """{metric_h<window>: mean over origins}: names that compare across models (MLflow, Dagster metadata)."""
    return {f"{m}_h{row['window']}": row[m] for row in horizon_means(scores).iter_rows(named=True) for m in METRICS}


# Days ahead a per-horizon champion may hand to different models: 1-7, 8-28, 29-horizon.
SEGMENTS = ((1, 7), (8, 28), (29, None))


def _segment(frame: pl.DataFrame, origin, first: int, last: int | None) -> pl.DataFrame:
    """Rows of days `first`..`last` ahead (1 = the origin; None = to the end)."""
    day = (pl.col("ds") - pl.lit(origin)).dt.total_days() + 1
    return frame.filter((day >= first) & (day <= last) if last is not None else day >= first)


def segment_f_norm(results: dict[str, BacktestResult], origins: list) -> pl.DataFrame:
    """model, segment (index into SEGMENTS), f_norm: each model's mean f_norm over `origins` on each segment's days."""
    rows = []
    for model, result in results.items():
        by_origin = {o.origin: o for o in result.origins}
        for k, (first, last) in enumerate(SEGMENTS):
            scores = [
                f_norm(_segment(o.forecast, o.origin, first, last), _segment(o.actual, o.origin, first, last))
                for o in (by_origin[d] for d in origins)
                if not _segment(o.actual, o.origin, first, last).is_empty()
            ]
            if scores:
                rows.append({"model": model, "segment": k, "f_norm": sum(scores) / len(scores)})
    return pl.DataFrame(rows)


def composed_f_norm(results: dict[str, BacktestResult], choice: dict[int, str], origin) -> float:
    """f_norm over the whole window at `origin` of the forecast that takes segment k's days from model choice[k]."""
    parts, actual = [], None
    for k, (first, last) in enumerate(SEGMENTS):
        o = next(o for o in results[choice[k]].origins if o.origin == origin)
        parts.append(_segment(o.forecast.select("artist_id", "ds", "plays"), origin, first, last))
        actual = o.actual
    assert actual is not None, "a backtest origin always holds its actuals"
    return f_norm(pl.concat(parts), actual)


def nested_segment_check(results: dict[str, BacktestResult], min_choose: int = 3) -> pl.DataFrame:
    """Does a per-horizon champion beat the best single model on origins it was not chosen on?

    For every origin after the first `min_choose` (oldest first), choose on the origins before it only:
    the single model with the best mean f_norm over the whole window, and per segment (SEGMENTS) the
    model with the best mean f_norm on that segment's days; then score both on the held-out origin.
    One row per held-out origin: origin, single, single_f_norm, segments (models per segment), composed_f_norm.
    """
    origins = sorted({o.origin for r in results.values() for o in r.origins})
    rows = []
    for k in range(min_choose, len(origins)):
        earlier, held = origins[:k], origins[k]
        means = {m: sum(o.f_norm for o in r.origins if o.origin in earlier) / len(earlier) for m, r in results.items()}
        single = max(sorted(means), key=lambda m: means[m])
        seg = segment_f_norm(results, earlier).sort(["segment", "f_norm", "model"], descending=[False, True, False])
        choice = {s: seg.filter(pl.col("segment") == s)["model"][0] for s in seg["segment"].unique()}
        choice = {s: choice.get(s, single) for s in range(len(SEGMENTS))}
        single_score = next(o.f_norm for o in results[single].origins if o.origin == held)
        rows.append(
            {
                "origin": held,
                "single": single,
                "single_f_norm": single_score,
                "segments": " / ".join(choice[s] for s in range(len(SEGMENTS))),
                "composed_f_norm": composed_f_norm(results, choice, held),
            }
        )
    return pl.DataFrame(rows)
