"""Shared plumbing of the Keras forecasters: a dense artist x day matrix (and its features), a
repeatable TF setup and one training loop.

TensorFlow is imported only inside `keras_setup`, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA


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


def forecast_offset(last_day: date, start: date) -> int:
    """Days between the end of the fitted history and `start`; refuses to forecast the past."""
    gap = (start - last_day).days - 1
    if gap < 0:
        raise ValueError(f"forecast start {start} is not after the last fitted day {last_day}")
    return gap
