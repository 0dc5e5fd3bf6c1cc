"""The competition file: artist_id,Plays,Ds with no header, integer plays, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl


def submission_frame(forecast: pl.DataFrame) -> pl.DataFrame:
    """Round to whole plays (never negative) and format Ds as yyyymmdd."""
    if forecast.filter(~pl.col("plays").is_finite()).height:
        raise ValueError("forecast has non-finite plays")
    return forecast.sort("artist_id", "ds").select(
        "artist_id",
        Plays=pl.col("plays").clip(lower_bound=0).round(0).cast(pl.Int64),
        Ds=pl.col("ds").dt.strftime("%Y%m%d"),
    )


def write_submission(forecast: pl.DataFrame, path: Path) -> int:
    """Write next to the target and rename over it, so readers never see a truncated file."""
    frame = submission_frame(forecast)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.write_csv(tmp, include_header=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return frame.height


def read_submission(path: Path) -> pl.DataFrame:
    """Parse a submission file strictly (no header; integer plays; yyyymmdd days)."""
    frame = pl.read_csv(
        path,
        has_header=False,
        new_columns=["artist_id", "Plays", "Ds"],
        schema_overrides={"artist_id": pl.String, "Plays": pl.Int64, "Ds": pl.String},
    )
    return frame.select("artist_id", ds=pl.col("Ds").str.strptime(pl.Date, "%Y%m%d"), plays=pl.col("Plays"))
