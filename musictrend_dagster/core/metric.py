"""The official Tianchi score (see README "The score"): sqrt-volume-weighted relative error.

sigma_j = sqrt(mean over days with T>0 of ((S-T)/T)^2), phi_j = sqrt(sum T),
F = sum_j (1 - sigma_j) * phi_j, f_norm = F / sum_j phi_j. Days with T = 0 are left
out of sigma's mean; phi uses every day. An artist with no positive day has phi = 0
and so adds nothing.
"""
from __future__ import annotations

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
    total_phi = scores["phi"].sum()
    if not total_phi:
        raise ValueError("actuals have no plays: the score is undefined")
    return float(scores["score"].sum() / total_phi)
