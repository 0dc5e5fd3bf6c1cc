"""The official Tianchi score (docs/models-and-scores.md, "The score"): sqrt-volume-weighted relative error.

sigma_j = sqrt(mean over days with T>0 of ((S-T)/T)^2), phi_j = sqrt(sum T),
F = sum_j (1 - sigma_j) * phi_j, f_norm = F / sum_j phi_j. Days with T = 0 are left
out of sigma's mean; phi uses every day. An artist with no positive day has phi = 0
and so adds nothing.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import polars as pl


def artist_scores(forecast: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    """Per-artist sigma, phi and contribution; every actual (artist, day) must be forecast."""
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
