"""The seed model: the 2016 write-up's LSTM, kept faithful so later models have its score to beat."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from musictrend_dagster.core.features import PLAYS_FEATURES
from musictrend_dagster.core.models.base import FitInfo, hyperparameters
from musictrend_dagster.core.models.keras_common import (
    dense_features,
    forecast_frame,
    forecast_offset,
    keras_setup,
    train_keras,
)

_EMPTY_SONGS = pl.DataFrame(schema={"artist_id": pl.String, "publish_time": pl.Date})


@dataclass(eq=False)
class SeedLSTM:
    """LSTM(35) -> LSTM(10) -> Dense(3) reading `window` days of [plays, 3-day mean, 3-day variance].

    As in the write-up: one network for all artists, trained on windows slid over every
    artist's series to reconstruct the next day's 3-vector (MSE); the 60-day forecast is
    recursive and CARRIES the predicted vector: the network's own [plays, mean, var] output
    is appended as the next input row (the design's Dense(3) produces exactly that row), with
    plays clipped at 0. Our choices: each feature is log1p-transformed (plays span 0..8,000,
    variances 0..10^7) then standardised with mean/std fitted on the training days only;
    window 14 days (two weeks: two weekly cycles, and 49 windows per artist even on the
    shortest backtest history of 63 days).
    """

    name: ClassVar[str] = "seed_lstm"
    window: int = 14
    units1: int = 35
    units2: int = 10
    epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 0.005
    seed: int = 0
    on_epoch: Callable[[int, float], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.keras_model = None

    def params(self) -> dict[str, Any]:
        return {**hyperparameters(self), "feedback": "carry", "scaling": "log1p+standardise(train)"}

    def _vectors(self, history: pl.DataFrame) -> tuple[list[str], date, np.ndarray]:
        """Artists, first day, and the raw (artists, days, 3) [plays, mean3, var3] tensor."""
        artists, first, _, feats = dense_features(history, _EMPTY_SONGS)
        return artists, first, feats.select(PLAYS_FEATURES).to_numpy().reshape(len(artists), -1, 3)

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        return (np.log1p(np.clip(raw, 0, None)) - self._mu) / self._sd

    def model_input(self, history: pl.DataFrame) -> np.ndarray:
        """The scaled last `window` days per artist, (artists, window, 3): what the forecast starts from."""
        if self.keras_model is None:
            raise RuntimeError("fit the model before asking for its input")
        _, _, raw = self._vectors(history)
        if raw.shape[1] < self.window:
            raise ValueError(f"history has {raw.shape[1]} days, the model reads windows of {self.window}")
        return self._scale(raw[:, -self.window :, :]).astype(np.float32)

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        keras = keras_setup(self.seed)
        artists, first, raw = self._vectors(history)
        n_days = raw.shape[1]
        if n_days <= self.window:
            raise ValueError(f"history has {n_days} days; seed_lstm needs more than window={self.window}")
        logged = np.log1p(raw)
        self._mu = logged.reshape(-1, 3).mean(axis=0)
        self._sd = logged.reshape(-1, 3).std(axis=0) + 1e-6
        scaled = self._scale(raw).astype(np.float32)
        starts = np.arange(n_days - self.window)
        x = np.stack([scaled[:, s : s + self.window, :] for s in starts], axis=1).reshape(-1, self.window, 3)
        y = scaled[:, self.window :, :].reshape(-1, 3)

        model = keras.Sequential(
            [
                keras.Input(shape=(self.window, 3)),
                keras.layers.LSTM(self.units1, return_sequences=True),
                keras.layers.LSTM(self.units2),
                keras.layers.Dense(3),
            ],
            name="seed_lstm",
        )
        losses = train_keras(keras, model, x, y, "mse", self)
        self.keras_model = model
        self._artists = artists
        self._last_day = first + timedelta(days=n_days - 1)
        self._last_window = scaled[:, -self.window :, :]
        return FitInfo(losses=losses)

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        if self.keras_model is None:
            raise RuntimeError("fit the model before predicting")
        offset = forecast_offset(self._last_day, start)
        zero = (-self._mu / self._sd).astype(np.float32)  # log1p(0) = 0 on the scaled axis
        window = self._last_window.copy()
        steps = []
        for _ in range(offset + horizon):
            nxt = np.asarray(self.keras_model.predict_on_batch(window))
            nxt = np.maximum(nxt, zero)  # carry non-negative plays, mean and variance
            steps.append(nxt[:, 0])
            window = np.concatenate([window[:, 1:, :], nxt[:, None, :]], axis=1)
        scaled_plays = np.stack(steps, axis=1)[:, offset:]
        plays = np.expm1(scaled_plays * self._sd[0] + self._mu[0])
        return forecast_frame(self._artists, start, plays)
