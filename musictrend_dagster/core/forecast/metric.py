"""The official Tianchi score (docs/models-and-scores.md, "The score"): sqrt-volume-weighted relative error.

sigma_j = sqrt(mean over days with T>0 of ((S-T)/T)^2), phi_j = sqrt(sum T),
F = sum_j (1 - sigma_j) * phi_j, f_norm = F / sum_j phi_j. Days with T = 0 are left
out of sigma's mean; phi uses every day. An artist with no positive day has phi = 0
and so adds nothing.

Beside it, the scores a forecaster outside the competition compares: WAPE = sum|S-T| / sum T
over every artist-day, and MASE = per artist the mean |S-T| over the test days divided by the
in-sample mean |y_t - y_{t-7}| of a seasonal-naive-7 forecast on its training history, averaged
over artists (artists whose training history is exactly weekly-periodic, scale 0, or no longer
than a week have no MASE and are left out of that mean).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import polars as pl

SEASON = 7


def _joined(forecast: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    """artist_id, ds, t (actual), s (forecast); every actual (artist, day) must be forecast."""
    joined = actual.select("artist_id", "ds", pl.col("plays").cast(pl.Float64).alias("t")).join(
        forecast.select("artist_id", "ds", pl.col("plays").cast(pl.Float64).alias("s")),
        on=["artist_id", "ds"],
        how="left",
    )
    missing = joined.filter(pl.col("s").is_null())
    if missing.height:
        first = missing.row(0, named=True)
        raise ValueError(
            f"forecast misses {missing.height} artist-days of the actuals, e.g. {first['artist_id']} on {first['ds']}"
        )
    return joined


def artist_scores(forecast: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    """Per-artist sigma, phi and contribution; every actual (artist, day) must be forecast."""
    joined = _joined(forecast, actual)
    rel2 = pl.when(pl.col("t") > 0).then(((pl.col("s") - pl.col("t")) / pl.col("t")) ** 2)
    return (
        joined.group_by("artist_id")
        .agg(sigma=rel2.mean().sqrt().fill_null(0.0), phi=pl.col("t").sum().sqrt(), days=pl.len())
        .with_columns(score=(1 - pl.col("sigma")) * pl.col("phi"))
        .sort("artist_id")
    )


def f_norm(forecast: pl.DataFrame, actual: pl.DataFrame) -> float:
    """F / sum(phi): 1.0 is perfect, 0 is as bad as forecasting nothing, negative is worse."""
    scores = artist_scores(forecast, actual)
    total_phi = cast(float, scores["phi"].sum())
    if not total_phi:
        raise ValueError("actuals have no plays: the score is undefined")
    return float(cast(float, scores["score"].sum()) / total_phi)


def c_star(x: np.ndarray) -> np.ndarray:
    """Row-wise c*, the constant minimising this score's summed squared relative error on the days
    given: sum(1/x) / sum(1/x^2); 0-play days floored at 1 (the hardest day, not infinity)."""
    x = np.maximum(x, 1.0)
    return (1 / x).sum(axis=-1) / (1 / x**2).sum(axis=-1)


def c_star_expr(plays: pl.Expr) -> pl.Expr:
    """`c_star` as a polars aggregation (per group)."""
    x = plays.clip(lower_bound=1.0)
    return (1.0 / x).sum() / (1.0 / x**2).sum()


def wape(forecast: pl.DataFrame, actual: pl.DataFrame) -> float:
    """sum |S - T| / sum T over every actual artist-day: 0 is perfect."""
    joined = _joined(forecast, actual)
    total = cast(float, joined["t"].sum())
    if not total:
        raise ValueError("actuals have no plays: WAPE is undefined")
    return float(cast(float, (joined["s"] - joined["t"]).abs().sum()) / total)


def seasonal_naive_scale(history: pl.DataFrame, season: int = SEASON) -> pl.DataFrame:
    """artist_id, scale: the in-sample MAE of a seasonal-naive forecast (y_t predicted by y_{t-season})
    over each artist's history (dense days, one row per artist and day); null for an artist with no
    more than `season` days (a new series: nothing to scale by)."""
    frame = history.select("artist_id", "ds", pl.col("plays").cast(pl.Float64)).sort("artist_id", "ds")
    return (
        frame.with_columns(err=(pl.col("plays") - pl.col("plays").shift(season).over("artist_id")).abs())
        .group_by("artist_id")
        .agg(scale=pl.col("err").mean())
        .sort("artist_id")
    )


def mase(
    forecast: pl.DataFrame,
    actual: pl.DataFrame,
    history: pl.DataFrame,
    season: int = SEASON,
    scale: pl.DataFrame | None = None,
) -> float:
    """Mean over artists of (test MAE / in-sample seasonal-naive MAE of `history`): 1 is as good as
    repeating last week in-sample, below 1 better; NaN when no artist has a scale.
    `scale`: `seasonal_naive_scale(history)` if already made."""
    errors = _joined(forecast, actual).group_by("artist_id").agg(mae=(pl.col("s") - pl.col("t")).abs().mean())
    scale = seasonal_naive_scale(history, season) if scale is None else scale
    scaled = errors.join(scale.with_columns(seen=pl.lit(True)), on="artist_id", how="left")
    unseen = scaled.filter(pl.col("seen").is_null())
    if unseen.height:
        raise ValueError(f"MASE: artist {unseen['artist_id'][0]} of the actuals has no training history")
    ratios = scaled.filter(pl.col("scale") > 0).select(pl.col("mae") / pl.col("scale"))
    if not ratios.height:  # every history exactly weekly or too short: no scale, reported as NaN, never a crash
        return float("nan")
    return float(cast(float, ratios.to_series().mean()))
