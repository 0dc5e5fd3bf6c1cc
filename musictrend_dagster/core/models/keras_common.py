"""Shared plumbing of the Keras forecasters: a dense artist x day matrix (and its features), a
repeatable TF setup and one training loop.

TensorFlow is imported only inside `keras_setup`, so importing this module stays cheap.
"""
from __future__ import annotations

import os
from datetime import date, timedelta

import numpy as np
import polars as pl

from musictrend_dagster.core.features import ACTIVITY_INPUTS, HISTORY_COLUMNS, build_features, require_columns
from musictrend_dagster.core.models.base import FORECAST_SCHEMA


def plays_matrix(history: pl.DataFrame) -> tuple[list[str], date, np.ndarray]:
    """(artist ids, first day, float matrix artists x days); missing artist-days count as 0 plays."""
    require_columns(history, ["artist_id", "ds", "plays"], "history")
    if history.is_empty():
        raise ValueError("history is empty: nothing to fit")
    frame = history.select("artist_id", pl.col("ds").cast(pl.Date), pl.col("plays").cast(pl.Float64))
    if frame["plays"].is_null().any() or (frame["plays"] < 0).any():
        raise ValueError("history has null or negative plays")
    first, last = frame["ds"].min(), frame["ds"].max()
    artists = sorted(frame["artist_id"].unique().to_list())
    n_days = (last - first).days + 1
    row = {a: i for i, a in enumerate(artists)}
    matrix = np.zeros((len(artists), n_days))
    rows = np.array([row[a] for a in frame["artist_id"].to_list()])
    cols = (frame["ds"] - first).dt.total_days().to_numpy()
    np.add.at(matrix, (rows, cols), frame["plays"].to_numpy())
    return artists, first, matrix


def dense_features(history: pl.DataFrame, songs: pl.DataFrame) -> tuple[list[str], date, np.ndarray, pl.DataFrame]:
    """`plays_matrix`, plus the feature frame of that zero-filled calendar (artist-major, day order)."""
    require_columns(history, HISTORY_COLUMNS, "history")
    artists, first, matrix = plays_matrix(history)
    n_days = matrix.shape[1]
    dense = pl.DataFrame(
        {
            "artist_id": np.repeat(np.array(artists, dtype=object), n_days).tolist(),
            "ds": [first + timedelta(days=k) for k in range(n_days)] * len(artists),
            "plays": matrix.reshape(-1),
        }
    )
    activity = history.select("artist_id", pl.col("ds").cast(pl.Date), *ACTIVITY_INPUTS)
    dense = dense.join(activity, on=["artist_id", "ds"], how="left").with_columns(pl.col(ACTIVITY_INPUTS).fill_null(0))
    return artists, first, matrix, build_features(dense, songs)


def forecast_frame(artists: list[str], start: date, values: np.ndarray) -> pl.DataFrame:
    """Long forecast frame (artist_id, ds, plays >= 0) from an artists x horizon matrix."""
    horizon = values.shape[1]
    days = [start + timedelta(days=k) for k in range(horizon)]
    return pl.DataFrame(
        {
            "artist_id": np.repeat(np.array(artists, dtype=object), horizon).tolist(),
            "ds": days * len(artists),
            "plays": np.clip(values, 0.0, None).reshape(-1).astype(np.float64),
        },
        schema=FORECAST_SCHEMA,
    )


def keras_setup(seed: int, threads: int = 2):
    """Import keras, pin thread counts (once per process) and make training repeatable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF C++ start-up and graph chatter is not progress; errors still raise
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


def forecast_offset(last_day: date, start: date) -> int:
    """Days between the end of the fitted history and `start`; refuses to forecast the past."""
    gap = (start - last_day).days - 1
    if gap < 0:
        raise ValueError(f"forecast start {start} is not after the last fitted day {last_day}")
    return gap
