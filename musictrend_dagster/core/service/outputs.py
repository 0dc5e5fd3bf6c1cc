"""The files a forecast vintage is published as, each written atomically (temp file, fsync, rename):

- output/forecasts.csv and output/forecasts.parquet, for every source: one row per series and day in
  the long format the forecasting libraries share (`unique_id, ds` as in the input), with the forecast,
  its 80% interval, the model, its registered version and the last day of data the vintage read;
- the competition file (tianchi source only): artist_id,Plays,Ds with no header, integer plays.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

FORECASTS_COLUMNS = ["unique_id", "ds", "forecast", "lo80", "hi80", "model", "model_version", "data_through"]
FORECASTS_SCHEMA = {
    "unique_id": pl.String,
    "ds": pl.Date,
    "forecast": pl.Float64,
    "lo80": pl.Float64,
    "hi80": pl.Float64,
    "model": pl.String,
    "model_version": pl.Int32,
    "data_through": pl.Date,
}


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write next to the target and rename over it, so readers never see a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def forecasts_frame(forecasts: pl.DataFrame) -> pl.DataFrame:
    """The published columns, typed and sorted by series and day; refuses a frame that is not one
    forecast (missing or extra columns, non-finite values, a series-day twice, lo80 <= forecast <= hi80 broken)."""
    if sorted(forecasts.columns) != sorted(FORECASTS_COLUMNS):
        raise ValueError(f"forecasts need exactly the columns {FORECASTS_COLUMNS}, got {forecasts.columns}")
    if forecasts.is_empty():
        raise ValueError("no forecast rows to publish")
    frame = forecasts.select(pl.col(c).cast(t) for c, t in FORECASTS_SCHEMA.items()).sort("unique_id", "ds")
    lo, hi, value = pl.col("lo80"), pl.col("hi80"), pl.col("forecast")
    fine = (
        value.is_finite()
        & (lo.is_null() == hi.is_null())  # an interval, or none (a forecast made without one)
        & (lo.is_null() | (lo.is_finite() & hi.is_finite() & (lo <= value) & (value <= hi)))
    ).fill_null(False)
    bad = frame.filter(~fine)
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(f"{bad.height} forecast rows are not finite with lo80 <= forecast <= hi80, e.g. {row}")
    twice = frame.filter(pl.struct("unique_id", "ds").is_duplicated())
    if twice.height:
        raise ValueError(f"series-days forecast twice, e.g. {twice.row(0, named=True)}")
    return frame


def write_forecasts(forecasts: pl.DataFrame, csv_path: Path, parquet_path: Path) -> int:
    """forecasts.csv (header, ISO dates) and forecasts.parquet of the same rows; the row count."""
    frame = forecasts_frame(forecasts)
    _atomic(Path(parquet_path), lambda tmp: frame.write_parquet(tmp, statistics=True))
    _atomic(Path(csv_path), lambda tmp: frame.write_csv(tmp, date_format="%Y-%m-%d"))
    return frame.height


def read_forecasts(path: Path) -> pl.DataFrame:
    """forecasts.csv or forecasts.parquet, typed as written."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, schema=FORECASTS_SCHEMA)


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
    """The competition file at `path`, atomically; the row count."""
    frame = submission_frame(forecast)
    _atomic(Path(path), lambda tmp: frame.write_csv(tmp, include_header=False))
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
