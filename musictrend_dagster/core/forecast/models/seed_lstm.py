"""The seed model: the 2016 write-up's LSTM, made to work.

What the write-up fixes, and this module keeps: per day the vector [plays, 3-day mean, 3-day
variance]; one network LSTM(35) -> LSTM(10) -> Dense(3) for all artists, trained (MSE) to
reconstruct the next day's vector; the forecast feeds the network's output back as the next
day's input, 60 times. What it leaves open is a hyperparameter each (class docstring);
`literal_2016=True` puts back the choices of the first implementation, which scored below zero on
one origin. The defaults fix what broke it: per-window scaling, the LSTM state carried through the
forecast, the median of 3 members, and the level moved to c* (the log-MSE network forecasts the
geometric mean, which over-forecasts for this metric). Every choice, with its score, is in
docs/models-and-scores.md ("Experiment logs").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.features import PLAYS_FEATURES
from musictrend_dagster.core.forecast.metric import c_star
from musictrend_dagster.core.forecast.models.base import FitInfo, InsufficientHistory, forecast_offset, hyperparameters
from musictrend_dagster.core.forecast.models.keras_common import (
    batched_dense_features,
    forecast_frame,
    keras_setup,
    recent_history,
    training_history,
)
from musictrend_dagster.core.forecast.sampling import TRAIN_SERIES, row_batches

_EMPTY_SONGS = pl.DataFrame(schema={"artist_id": pl.String, "publish_time": pl.Date})
_UNITS = (35, 10)
_MAX_LOG_PLAYS = 20.0  # exp(20) = 5e8 plays a day: a fed-back value beyond it is a diverged recursion
# The design choices of the first implementation (the 2016 write-up read literally).
LITERAL_2016: dict[str, Any] = {
    "scaling": "global",
    "feedback": "vector",
    "recursion": "window",
    "rollout": 1,
    "shrink": False,
    "members": 1,
}
_CHOICES = {"scaling": ("window", "global"), "feedback": ("vector", "plays"), "recursion": ("state", "window")}


@dataclass(eq=False)
class SeedLSTM:
    """LSTM(35) -> LSTM(10) -> Dense(3) over [plays, 3-day mean, 3-day variance], forecast recursively.

    scaling    "window": every window on its own level (features as log1p, the variance as half
               its log1p, i.e. a log std, minus the window's mean log1p plays), then standardised
               over the training windows; one network serves artists of 5 and of 5,000 plays a day.
               "global": log1p + standardisation of the whole training set (2016).
    feedback   what the recursion carries into the next day's input: "vector", the network's own
               [plays, mean, variance] output (2016); "plays", its plays, with the 3-day mean and
               variance recomputed from the fed-back days.
    recursion  "state": the network reads `window` days once, then steps one LSTM step per
               forecast day (its state carries on); "window": it re-reads the last `window` days,
               fed-back ones included, from a blank state every day (2016).
    rollout    training samples are unrolled over this many days, the network fed its own
               outputs (as in the forecast) and the loss summed over every day; 1 = next day only.
    shrink     the forecast times c*/geometric mean of each artist's last `window` days: the
               metric's optimal point for a level with that artist's day-to-day spread (the
               network reconstructs the log level; relative errors punish over-forecasts more).
    members    networks trained side by side from different initial weights (one graph); the
               forecast is their median, so one member whose recursion drifts cannot move it.
    train_series  training reads at most this many artists (`sampling.stratified_sample`); the
               forecast covers every artist.
    """

    name: ClassVar[str] = "seed_lstm"
    window: int = 14
    scaling: str = "window"
    feedback: str = "vector"
    recursion: str = "state"
    rollout: int = 1
    shrink: bool = True
    members: int = 3
    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 0.005
    seed: int = 0
    literal_2016: bool = False
    train_series: int = TRAIN_SERIES
    on_epoch: Callable[[int, float], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.literal_2016:
            defaults = {f.name: f.default for f in fields(self) if f.name in LITERAL_2016}
            clash = sorted(k for k, v in LITERAL_2016.items() if getattr(self, k) not in (defaults[k], v))
            if clash:
                raise ValueError(
                    f"seed_lstm: literal_2016 sets {', '.join(clash)} to the 2016 choice; "
                    f"got {', '.join(f'{k}={getattr(self, k)!r}' for k in clash)} (turn literal_2016 off to choose)"
                )
            for key, value in LITERAL_2016.items():
                setattr(self, key, value)
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"seed_lstm: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if min(self.window, self.rollout, self.members, self.epochs, self.batch_size, self.train_series) < 1:
            raise ValueError("seed_lstm: window, rollout, members, epochs, batch_size and train_series must be >= 1")
        self.keras_models: list = []

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (the daily path serves the fitted model) without its epoch hook, a logger closure,
        and without the compiled forecast graphs, which are rebuilt from the networks on load."""
        return {k: v for k, v in self.__dict__.items() if k != "_forecasts"} | {"on_epoch": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.keras_models:
            self._compile_forecasts()

    @property
    def keras_model(self):
        """The first member: the 2016 architecture, reading any number of days."""
        return self.keras_models[0] if self.keras_models else None

    def params(self) -> dict[str, Any]:
        """Hyperparameters as used (literal_2016 already applied)."""
        return hyperparameters(self)

    # ---- scaling: raw [plays, mean, var] days <-> what the network reads and writes -------------
    def _logs(self, raw: np.ndarray) -> np.ndarray:
        logs = np.log1p(np.clip(raw, 0.0, None))
        if self.scaling == "window":
            logs[..., 2] *= 0.5
        return logs

    def _level(self, logs: np.ndarray) -> np.ndarray:
        """(n, days, 3) window logs -> (n, 1) level subtracted from every feature (0 for "global")."""
        if self.scaling == "global":
            return np.zeros((logs.shape[0], 1))
        return logs[:, :, 0].mean(axis=1, keepdims=True)

    def _standardise(self, logs: np.ndarray, level: np.ndarray) -> np.ndarray:
        return ((logs - level[:, None, :] - self._mu) / self._sd).astype(np.float32)

    # ---- fit -----------------------------------------------------------------------------------
    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        sample = training_history(history, self.train_series, self.seed)
        _, _, plays, raw = batched_dense_features(sample, _EMPTY_SONGS, _plays_features)
        n_days, w, k = raw.shape[1], self.window, self.rollout
        if n_days <= w:
            raise InsufficientHistory(f"history has {n_days} days; seed_lstm needs more than window={w}")
        logs = self._logs(raw)
        # Every window with at least one day after it; days past the history are masked out of the loss.
        idx = np.arange(n_days - w)[:, None] + np.arange(w + k)[None, :]
        seen = (idx < n_days)[:, w:]
        samples = logs[:, np.minimum(idx, n_days - 1)].reshape(-1, w + k, 3)
        level = self._level(samples[:, :w])
        rel = samples[:, :w] - level[:, None, :]
        self._mu, self._sd = rel.reshape(-1, 3).mean(axis=0), rel.reshape(-1, 3).std(axis=0) + 1e-6
        z = self._standardise(samples, level)
        mask = np.broadcast_to(seen, (len(plays), *seen.shape)).reshape(-1, k).astype(np.float32)
        prev = plays[:, idx[:, w - 2 : w]].reshape(-1, 2)

        keras = keras_setup(self.seed)
        self.keras_models = [_network(keras, f"seed_lstm_{m}") for m in range(self.members)]
        losses = self._train(keras, z[:, :w], z[:, w:], mask, level.astype(np.float32), prev.astype(np.float32))
        self._compile_forecasts()
        self._point_at(*self._tail(history))
        return FitInfo(losses=losses)

    def _compile_forecasts(self) -> None:
        """One compiled rollout per member, built once per fit (and again after unpickling)."""
        self._forecasts = [tf_function(self._roll_fn(model)) for model in self.keras_models]

    def observe(self, history: pl.DataFrame, songs: pl.DataFrame) -> None:
        """Forecast from `history`'s last `window` days with the fitted weights (nothing is learnt):
        the network is global, so any artists with that many days will do."""
        self._point_at(*self._tail(history))

    def model_input(self, history: pl.DataFrame) -> np.ndarray:
        """The scaled last `window` days per artist, (artists, window, 3): what the forecast starts from
        (the input MLflow's signature is inferred from when seed_lstm is the champion)."""
        *_, logs = self._tail(history)
        logs = logs[:, -self.window :]
        return self._standardise(logs, self._level(logs))

    def _tail(self, history: pl.DataFrame) -> tuple[list[str], date, np.ndarray, np.ndarray]:
        """Artists, first day, plays and feature logs of the last days of a history the fitted model may
        read: its `window`, and the 2 days before that the 3-day mean and variance of its first day need."""
        if not self.keras_models:
            raise RuntimeError("fit the model before pointing it at a history")
        recent = recent_history(history, self.window + 2)
        artists, first, plays, raw = batched_dense_features(recent, _EMPTY_SONGS, _plays_features)
        if plays.shape[1] < self.window:
            raise InsufficientHistory(
                f"history has {plays.shape[1]} days; seed_lstm reads the last window={self.window}"
            )
        return artists, first, plays, self._logs(raw)

    def _point_at(self, artists: list[str], first: date, plays: np.ndarray, logs: np.ndarray) -> None:
        """Where predict() starts: the last `window` days (scaled logs) and the last two days' plays."""
        w = self.window
        self._artists, self._last_day = artists, first + timedelta(days=plays.shape[1] - 1)
        self._start = (logs[:, -w:], plays[:, -2:])
        self._shrink = _shrink(plays[:, -w:]) if self.shrink else np.ones(len(artists))

    def _train(self, keras, x, y, mask, level, prev) -> list[float]:
        """Adam on every member's masked MSE of its rolled-out [plays, mean, var], members in one
        graph; per epoch the MSE over all training days (mean of the members)."""
        import tensorflow as tf

        rolls = [self._roll_fn(model) for model in self.keras_models]
        variables = [v for model in self.keras_models for v in model.trainable_variables]
        optimizer = keras.optimizers.Adam(self.learning_rate)
        optimizer.build(variables)
        spec = [tf.TensorSpec((None, *a.shape[1:]), tf.float32) for a in (x, y, mask, level, prev)]

        @tf.function(input_signature=spec, autograph=False)
        def step(xb, yb, mb, lb, pb):
            with tf.GradientTape() as tape:
                errors = [tf.reduce_mean(tf.square(roll(xb, lb, pb, self.rollout) - yb), axis=-1) for roll in rolls]
                total = tf.add_n([tf.reduce_sum(e * mb) for e in errors]) / len(rolls)
                loss = total / tf.reduce_sum(mb)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=False))
            return total

        rng = np.random.default_rng(self.seed)
        losses = []
        for epoch in range(self.epochs):
            batches = np.array_split(rng.permutation(len(x)), max(1, -(-len(x) // self.batch_size)))
            total = sum(float(step(x[b], y[b], mask[b], level[b], prev[b])) for b in batches)
            losses.append(total / float(mask.sum()))
            if self.on_epoch is not None:
                self.on_epoch(epoch, losses[-1])
        return losses

    # ---- the recursion ---------------------------------------------------------------------------
    def _feed(self, out, level, prev):
        """The next day's input row from the network's output (scaled), and the last two days' plays."""
        import tensorflow as tf

        mu, sd = self._mu.astype(np.float32), self._sd.astype(np.float32)
        floor = (-level - mu) / sd  # log1p(0) on the scaled axis: carried values stay >= 0
        log_plays = tf.clip_by_value(out[:, :1] * sd[0] + mu[0] + level, 0.0, _MAX_LOG_PLAYS)
        plays = tf.math.expm1(log_plays)
        if self.feedback == "vector":
            return tf.maximum(out, floor), tf.concat([prev[:, 1:], plays], axis=1)
        days = tf.concat([prev, plays], axis=1)
        mean = tf.reduce_mean(days, axis=1, keepdims=True)
        var = tf.reduce_mean(tf.square(days - mean), axis=1, keepdims=True)
        logs = tf.concat(
            [log_plays, tf.math.log1p(mean), tf.math.log1p(var) * (0.5 if self.scaling == "window" else 1.0)], 1
        )
        return (logs - level - mu) / sd, days[:, 1:]

    def _roll_fn(self, model):
        """roll(x, level, prev, steps) -> (batch, steps, 3): `model` reads the scaled window x, then
        predicts `steps` days, each fed back as the next input (see `recursion`, `feedback`)."""
        import tensorflow as tf

        lstm1, lstm2, dense = model.layers

        def step(row, states):
            h1, s1 = lstm1.cell(row, states[0])
            h2, s2 = lstm2.cell(h1, states[1])
            return dense(h2), [s1, s2]

        def read(seq, states):
            def body(t, out, states):
                out, states = step(seq[:, t], states)
                return t + 1, out, states

            out = tf.zeros((tf.shape(seq)[0], 3))
            _, out, states = tf.while_loop(lambda t, *_: t < tf.shape(seq)[1], body, (0, out, states))
            return out, states

        def roll(x, level, prev, steps):
            batch = tf.shape(x)[0]
            blank = [[tf.zeros((batch, u)), tf.zeros((batch, u))] for u in _UNITS]
            out, states = read(x, blank)
            if steps == 1:
                return out[:, None, :]
            days = tf.TensorArray(tf.float32, size=steps).write(0, out)

            def body(j, out, prev, seq, states, days):
                row, prev = self._feed(out, level, prev)
                if self.recursion == "state":
                    out, states = step(row, states)
                else:
                    seq = tf.concat([seq[:, 1:], row[:, None, :]], axis=1)
                    out, _ = read(seq, blank)
                return j + 1, out, prev, seq, states, days.write(j, out)

            *_, days = tf.while_loop(lambda j, *_: j < steps, body, (1, out, prev, x, states, days))
            return tf.transpose(days.stack(), [1, 0, 2])

        return roll

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        if not self.keras_models:
            raise RuntimeError("fit the model before predicting")
        offset = forecast_offset(self._last_day, start)
        logs, prev = self._start
        level = self._level(logs)
        x = self._standardise(logs, level)
        level32, prev32 = level.astype(np.float32), prev.astype(np.float32)
        log_plays = [
            np.concatenate(
                [
                    np.asarray(forecast(x[rows], level32[rows], prev32[rows], offset + horizon))[:, offset:, 0]
                    for rows in row_batches(len(x))
                ]
            )
            * self._sd[0]
            + self._mu[0]
            for forecast in self._forecasts
        ]
        plays = np.median([np.expm1(np.clip(lp + level, 0.0, _MAX_LOG_PLAYS)) for lp in log_plays], axis=0)
        return forecast_frame(self._artists, start, plays * self._shrink[:, None])


def tf_function(roll):
    """`roll` as one TF graph (traced once per input shape, not once per predict call)."""
    import tensorflow as tf

    return tf.function(roll, autograph=False, reduce_retracing=True)


def _network(keras, name: str):
    """LSTM(35) -> LSTM(10) -> Dense(3), reading any number of [plays, mean, var] days."""
    return keras.Sequential(
        [
            keras.Input(shape=(None, 3)),
            keras.layers.LSTM(_UNITS[0], return_sequences=True),
            keras.layers.LSTM(_UNITS[1]),
            keras.layers.Dense(3),
        ],
        name=name,
    )


def _shrink(plays: np.ndarray) -> np.ndarray:
    """Per artist c* / geometric mean of its days (0-play days floored at 1, as c* does): 1 for a
    flat series, lower the more the days spread, since the relative error punishes over-forecasts."""
    floored = np.maximum(plays, 1.0)
    return c_star(floored) / np.exp(np.log(floored).mean(axis=1))


def _plays_features(feats: pl.DataFrame) -> np.ndarray:
    """Per artist-day [plays, 3-day mean, 3-day variance] of a feature frame, (rows, 3)."""
    return feats.select(PLAYS_FEATURES).to_numpy()
