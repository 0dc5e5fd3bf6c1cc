"""Forecasts of every series on one machine or on a Spark cluster: one interface, the same numbers.

`fit_forecast(model, history, songs, start, horizon, spark=None)` is what a backtest origin (or
any caller that fits and forecasts) runs. Without a session it is `fit` then `predict`, as
always. With a SparkSession (classic or Connect) the series are cut into batches of
`sampling.BATCH_SERIES` artists in sorted order (artist k in batch k // BATCH_SERIES: the rows the
models' own `row_batches` cut, so a network predicts each batch on exactly the same rows on an
executor as on the driver; LSTM and float64 matrix products give other last bits for another
batch composition, measured at 2e-6 and 7e-15), and each batch is one
`cogroup(...).applyInPandas` task: a copy of the model `observe`s that batch's history and songs
and forecasts it.

- Models that learn across series (the TensorFlow ones) are fitted on the driver, on their
  bounded sample (`train_series`); the fitted model travels to the executors in the task's
  closure, which Spark serialises (a few hundred KB; a broadcast would need a SparkContext, which
  Connect lacks).
- Per-series models (medians, best constant, the statsforecast peers) learn nothing across
  series: each executor fits its batch (`observe` is their fit). The driver fits only the first
  artist, so the model it returns is a fitted one (its params name the training range) at the cost
  of one series (the first whole batch cost AutoETS a quarter of the work at 1,000 series).

Identical results need each batch to see the history's whole calendar (the recent-artist rule
and the networks' features read the first and last day), which the dense model input
(`artist_daily`: every artist on every day) always gives; a history where a batch misses the
first or last day is refused, naming the batch's first artist.
"""

from __future__ import annotations

import copy
import time
from datetime import date
from typing import Any, cast

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast import sampling
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA, FitInfo, Forecaster

_BATCH = "_batch"
_SPARK_SCHEMA = "artist_id string, ds date, plays double"


def learns_across_series(model: Forecaster) -> bool:
    """Does `model` fit weights on many series at once (then the driver fits it, on the sample)?"""
    from musictrend_dagster.core.forecast.models.registry import spec

    return spec(model.name).uses_tensorflow


def series_batches(history: pl.DataFrame, batch_series: int | None = None) -> pl.DataFrame:
    """artist_id -> _batch: artists in sorted order, `batch_series` (default `sampling.BATCH_SERIES`, the
    models' own row batches) per batch."""
    batch_series = sampling.BATCH_SERIES if batch_series is None else batch_series
    if batch_series < 1:
        raise ValueError(f"batch_series must be >= 1, got {batch_series}")
    artists = history.select(pl.col("artist_id").cast(pl.String)).unique().sort("artist_id")
    return artists.with_columns((pl.int_range(pl.len()) // batch_series).cast(pl.Int64).alias(_BATCH))


def check_calendar(history: pl.DataFrame, batches: pl.DataFrame) -> None:
    """Every batch must hold the history's first and last day (see the module docstring), else a ValueError."""
    first, last = cast(date, history["ds"].min()), cast(date, history["ds"].max())
    spans = (
        history.select(pl.col("artist_id").cast(pl.String), "ds")
        .join(batches, on="artist_id")
        .group_by(_BATCH)
        .agg(first=pl.col("ds").min(), last=pl.col("ds").max(), artist=pl.col("artist_id").min())
        .filter((pl.col("first") != first) | (pl.col("last") != last))
        .sort(_BATCH)
    )
    if spans.height:
        row = spans.row(0, named=True)
        raise ValueError(
            f"batch {row[_BATCH]} (from artist {row['artist']}) spans {row['first']}..{row['last']}, not the "
            f"history's {first}..{last}: the distributed forecast needs the dense calendar of the model input "
            "(every artist on every day, as artist_daily builds it)"
        )


def forecast_batch(model: Forecaster, history: pl.DataFrame, songs: pl.DataFrame, start: date, horizon: int):
    """One batch: the (fitted, or per-series) model reads the batch's history and forecasts it."""
    model.observe(history, songs)
    return model.predict(start, horizon)


def fit_forecast(
    model: Forecaster,
    history: pl.DataFrame,
    songs: pl.DataFrame,
    start: date,
    horizon: int,
    *,
    spark: Any = None,
) -> tuple[FitInfo, pl.DataFrame, float]:
    """Fit `model` on `history` and forecast every artist `horizon` days from `start`, here or on `spark`:
    (the fit's info, the forecast, seconds the driver spent fitting)."""
    t0 = time.perf_counter()
    if spark is None:
        info = model.fit(history, songs)
        fit_seconds = time.perf_counter() - t0
        return info, model.predict(start, horizon), fit_seconds
    batches = series_batches(history)
    check_calendar(history, batches)
    if learns_across_series(model):
        info = model.fit(history, songs)
    else:
        first = batches.head(1).select("artist_id")  # a fitted object (params: the range) for one series' cost
        info = model.fit(history.join(first, on="artist_id"), songs.join(first, on="artist_id"))
    fit_seconds = time.perf_counter() - t0
    return info, forecast_on_spark(spark, model, history, songs, start, horizon, batches), fit_seconds


def observe_forecast(
    model: Forecaster, history: pl.DataFrame, songs: pl.DataFrame, start: date, horizon: int, *, spark: Any = None
) -> pl.DataFrame:
    """A fitted model (the served champion) reads `history` and forecasts every artist, here or on `spark`:
    the daily path's inference, nothing learned."""
    if spark is None:
        model.observe(history, songs)
        return model.predict(start, horizon)
    batches = series_batches(history)
    check_calendar(history, batches)
    return forecast_on_spark(spark, model, history, songs, start, horizon, batches)


def forecast_on_spark(
    spark: Any,
    model: Forecaster,
    history: pl.DataFrame,
    songs: pl.DataFrame,
    start: date,
    horizon: int,
    batches: pl.DataFrame,
) -> pl.DataFrame:
    """Every batch of series forecast by its own task: history and songs cogrouped by batch, one pandas UDF each."""
    schema = dict(history.schema)
    keyed = history.with_columns(pl.col("artist_id").cast(pl.String)).join(batches, on="artist_id")
    song_rows = songs.with_columns(pl.col("artist_id").cast(pl.String)).join(batches, on="artist_id")
    n_batches = int(cast(int, batches[_BATCH].max())) + 1

    def run(left, right):
        """A pandas UDF: this batch's history (left) and songs (right) in, its forecast out."""
        batch_model = copy.deepcopy(model)  # a fresh copy per batch: observe() must not leak between batches
        part = pl.from_pandas(left).select(history.columns).cast(schema)  # the driver's types, Spark's aside
        batch_songs = pl.from_pandas(right).drop(_BATCH) if len(right) else songs.clear()
        out = forecast_batch(batch_model, part, batch_songs.cast(dict(songs.schema)), start, horizon)
        return out.to_pandas()

    left = _spark_frame(spark, keyed, n_batches)
    right = _spark_frame(spark, song_rows, n_batches)
    result = left.groupBy(_BATCH).cogroup(right.groupBy(_BATCH)).applyInPandas(run, schema=_SPARK_SCHEMA).toArrow()
    return (
        cast(pl.DataFrame, pl.from_arrow(result))
        .with_columns(pl.col("ds").cast(pl.Date))
        .cast(FORECAST_SCHEMA)  # type: ignore[arg-type]  # see baselines.py: polars types schema keys invariantly
        .sort("artist_id", "ds")
    )


def _spark_frame(spark: Any, frame: pl.DataFrame, partitions: int):
    """A polars frame as a Spark DataFrame (through Arrow), one partition per batch at most."""
    return spark.createDataFrame(frame.to_arrow()).repartition(max(1, min(partitions, 64)), _BATCH)


def same_forecast(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Bitwise equality of two forecast frames (same rows, same float bits), sorted by artist and day."""
    a, b = a.sort("artist_id", "ds"), b.sort("artist_id", "ds")
    return (
        a.select("artist_id", "ds").equals(b.select("artist_id", "ds"))
        and a["plays"].to_numpy().view(np.int64).tolist() == b["plays"].to_numpy().view(np.int64).tolist()
    )
