"""Shared plumbing of the Keras forecasters: a dense artist x day matrix (and its features), a
repeatable TF setup and one training loop.

TensorFlow is imported only inside `keras_setup`, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date, timedelta
from typing import cast

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.features import HISTORY_COLUMNS, dense_features, plays_matrix, require_columns
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA
from musictrend_dagster.core.forecast.sampling import BATCH_SERIES, stratified_sample


def forecast_frame(artists: list[str], start: date, values: np.ndarray) -> pl.DataFrame:
    """Long forecast frame (artist_id, ds, plays >= 0) from an artists x horizon matrix (no Python loop over rows)."""
    n, horizon = values.shape
    days = pl.Series("ds", [start + timedelta(days=k) for k in range(horizon)], dtype=pl.Date)
    return pl.DataFrame(
        {
            "artist_id": pl.Series("artist_id", artists, dtype=pl.String).gather(np.repeat(np.arange(n), horizon)),
            "ds": days.gather(np.tile(np.arange(horizon), n)),
            "plays": np.clip(values, 0.0, None).reshape(-1).astype(np.float64),
        },
        schema=FORECAST_SCHEMA,
    )


def batched_dense_features(
    history: pl.DataFrame, songs: pl.DataFrame, read: Callable[[pl.DataFrame], np.ndarray], batch: int = BATCH_SERIES
) -> tuple[list[str], date, np.ndarray, np.ndarray]:
    """`dense_features` cut into batches of artists: (artists, first day, plays matrix, (artists, days, k) array).

    `read` turns one batch's feature frame (artist-major, day order) into its (rows, k) array,
    so the long polars frame of every artist and day is never held at once: memory grows with the
    batch, beyond the matrices returned. Every batch keeps the whole calendar (`_on_calendar`) and its
    artists' songs, so the result is the unbatched one, row for row.
    """
    require_columns(history, HISTORY_COLUMNS, "history")
    artists = sorted(history["artist_id"].unique().to_list())
    if len(artists) <= batch:
        names, first, plays, feats = dense_features(history, songs)
        return names, first, plays, read(feats).reshape(len(names), plays.shape[1], -1)
    frame = history.select(HISTORY_COLUMNS).with_columns(pl.col("ds").cast(pl.Date))
    first, last = cast(date, frame["ds"].min()), cast(date, frame["ds"].max())
    batch_of = pl.DataFrame({"artist_id": artists, "_batch": np.arange(len(artists)) // batch})
    parts = frame.join(batch_of, on="artist_id").partition_by("_batch", as_dict=True, include_key=False)
    songs = songs.with_columns(pl.col("artist_id").cast(pl.String))
    song_parts = songs.join(batch_of, on="artist_id").partition_by("_batch", as_dict=True, include_key=False)
    names = []
    plays_parts: list[np.ndarray] = []
    arrays: list[np.ndarray] = []
    for b in range(-(-len(artists) // batch)):
        batch_songs = song_parts.get((b,), songs.clear())
        got, got_first, got_plays, feats = dense_features(_on_calendar(parts[(b,)], first, last), batch_songs)
        if got_first != first or got_plays.shape[1] != (last - first).days + 1:
            raise AssertionError(f"batch {b} of the dense features lost the calendar {first}..{last}")
        names += got
        plays_parts.append(got_plays)
        arrays.append(read(feats).reshape(len(got), got_plays.shape[1], -1))
    return names, first, np.concatenate(plays_parts), np.concatenate(arrays)


def _zero_days(keys: pl.DataFrame, like: pl.DataFrame) -> pl.DataFrame:
    """(artist_id, ds) `keys` as 0-play rows of `like`'s schema: what the dense calendar fills a missing day with."""
    return keys.select(
        pl.col("artist_id").cast(like.schema["artist_id"]),
        pl.col("ds").cast(pl.Date),
        *[pl.lit(0).cast(like.schema[c]).alias(c) for c in like.columns[2:]],
    )


def _on_calendar(part: pl.DataFrame, first: date, last: date) -> pl.DataFrame:
    """`part` (some artists' HISTORY_COLUMNS) with a 0-play row on `first` and `last` for its first artist
    where it has none: its dense features then span that calendar, as the whole history's would."""
    edge = pl.DataFrame({"artist_id": [part["artist_id"].min()] * 2, "ds": [first, last]}).unique()
    edge = _zero_days(edge, part).join(part, on=["artist_id", "ds"], how="anti")
    return pl.concat([part, edge])


def training_history(history: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    """The rows of a stratified sample of at most `size` artists (`sampling.stratified_sample` on the
    whole catalogue's plays matrix), on the whole history's calendar: a global model builds features
    for its training sample only, and they are the ones the whole catalogue's would give those artists.
    A catalogue of at most `size` artists is its own sample (no matrix is built)."""
    if history["artist_id"].n_unique() <= size:
        return history
    artists, first, plays = plays_matrix(history)
    rows = stratified_sample(plays, size, seed)
    frame = history.select(HISTORY_COLUMNS).with_columns(pl.col("ds").cast(pl.Date))
    sample = frame.filter(pl.col("artist_id").is_in([artists[r] for r in rows]))
    return _on_calendar(sample, first, first + timedelta(days=plays.shape[1] - 1))


def recent_history(history: pl.DataFrame, days: int) -> pl.DataFrame:
    """The last `days` calendar days of `history` for every artist in it: all a fitted network reads to
    forecast, so the daily read costs artists x `days`, not artists x the whole history. An artist with
    no row in those days keeps a 0-play row on the last day (what the dense calendar fills there)."""
    frame = history.select(HISTORY_COLUMNS).with_columns(pl.col("ds").cast(pl.Date))
    last = cast(date, frame["ds"].max())
    start = max(cast(date, frame["ds"].min()), last - timedelta(days=days - 1))
    recent = frame.filter(pl.col("ds") >= start)
    silent = frame.select("artist_id").unique().join(recent.select("artist_id").unique(), on="artist_id", how="anti")
    if silent.height:
        recent = pl.concat([recent, _zero_days(silent.with_columns(ds=pl.lit(last)), recent)])
    return _on_calendar(recent, start, last)


def keras_setup(seed: int, threads: int = 2):
    """Import keras, pin thread counts (once per process) and make training repeatable."""
    os.environ.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", "3"
    )  # TF C++ start-up and graph chatter is not progress; errors still raise
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised by an earlier fit: the first setting stays
        pass
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return keras


def train_keras(keras, model, x: np.ndarray, y: np.ndarray, loss, forecaster) -> list[float]:
    """Adam + shuffled mini-batches with the forecaster's learning_rate, epochs, batch_size; per-epoch losses.

    The forecaster's `on_epoch` hook, if any, hears (epoch, loss) after every epoch.
    """
    model.compile(optimizer=keras.optimizers.Adam(forecaster.learning_rate), loss=loss)
    callbacks = []
    if forecaster.on_epoch is not None:
        on_epoch = forecaster.on_epoch

        class _Forward(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                on_epoch(epoch, float((logs or {}).get("loss", float("nan"))))

        callbacks.append(_Forward())
    hist = model.fit(
        x, y, epochs=forecaster.epochs, batch_size=forecaster.batch_size, shuffle=True, verbose=0, callbacks=callbacks
    )
    return [float(v) for v in hist.history.get("loss", [])]
