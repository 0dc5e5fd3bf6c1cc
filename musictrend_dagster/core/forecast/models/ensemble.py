"""An ensemble of global_direct-shaped networks trained on the metric's own sigma.

Why: one global_direct fit moves by about 0.01 f_norm between seeds, more than the gaps between
designs; averaging several members' log-curves removes most of that variance. The members train
together in TensorFlow (GradientTape on the metric's sigma, weights stacked on a member axis, one
graph call per epoch); the fitted weights are numpy arrays and prediction is numpy, so the fitted
model pickles without TensorFlow. Every design choice, with its score, is in docs/models-and-scores.md
("Experiment logs").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.metric import c_star
from musictrend_dagster.core.forecast.models.base import FitInfo, InsufficientHistory, forecast_offset, hyperparameters
from musictrend_dagster.core.forecast.models.global_model import (
    ANCHOR_DAYS,
    INPUTS,
    artist_series,
    horizon_basis,
    origin_features,
    read_days,
    training_set,
)
from musictrend_dagster.core.forecast.models.keras_common import (
    forecast_frame,
    keras_setup,
    recent_history,
    training_history,
)
from musictrend_dagster.core.forecast.sampling import TRAIN_SERIES, row_batches

SHRINK_DAYS = 28  # the forecast's level moves part of the way toward c* of this many last days
_CLIP = (-5.0, 3.0)  # log-ratio errors beyond these are spikes, not signal (as in GlobalModel)


def _weekday(x: np.ndarray) -> np.ndarray:
    """Origin weekday index from the one-hot block that ends every feature row."""
    return np.argmax(x[:, -7:], axis=1)


@dataclass(eq=False)
class CurveNet:
    """Dense(tanh) -> basis coefficients -> 60-day log-multiplier curve.

    Same shape as one GlobalModel member (glorot hidden layer, zero-initialised head, so an
    untrained net IS the anchor), but trained on the metric's own per-sample loss:
    phi * sigma with sigma = sqrt(mean relative error^2 over the days that count), instead of
    the squared relative error. sigma's square root makes a 300% spike cost 3x a 100% miss,
    not 9x, as in the score. Trained by `fit_members` (TensorFlow); the fitted weights are numpy
    arrays, so the fitted model pickles without TensorFlow and predicts in numpy.
    """

    units: int
    epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    seed: int
    weights: list[np.ndarray] = field(default_factory=list, init=False, repr=False)

    def curve(self, x: np.ndarray, basis: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = self.weights
        return np.einsum("bhk,bk->bh", basis[_weekday(x)], np.tanh(x @ w1 + b1) @ w2 + b2)

    def fit(self, x: np.ndarray, y: np.ndarray, basis: np.ndarray) -> list[float]:
        """Train on samples x (n, features) and y (n, horizon, [log target, weight]); per-epoch losses."""
        return fit_members([([self], x, y)], basis)[0]


def fit_members(
    groups: list[tuple[list[CurveNet], np.ndarray, np.ndarray]],
    basis: np.ndarray,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[list[float]]:
    """Train groups of CurveNets, each group (nets, x, y) sharing its samples, in TensorFlow.

    Within a group the members' weights are stacked on a leading member axis, so one step is a
    few batched matmuls for all of them and one epoch is one graph call. Each member keeps its
    own seed (initial weights and shuffling order, as a net trained alone would), its own Adam
    moments and its own loss; the tape differentiates their sum, so no member's gradient depends
    on another's. Loss per member and batch: mean of phi * sigma over the samples, plus
    l2 * |hidden kernel|^2. Groups take turns epoch by epoch; `on_epoch` hears (epoch, the mean
    loss of every member). Returns each net's per-epoch mean losses (without the L2 term), in
    the order of `groups`.
    """
    nets = [net for group, _, _ in groups for net in group]
    first = nets[0]
    shared = lambda n: (n.units, n.epochs, n.batch_size, n.learning_rate, n.l2)  # noqa: E731
    if any(shared(n) != shared(first) for n in nets):
        raise ValueError("fit_members trains members that share every hyperparameter but the seed")
    keras = keras_setup(first.seed)
    trainers = [_group_trainer(keras, group, x, y, basis) for group, x, y in groups]
    history = []
    for epoch in range(first.epochs):
        losses = np.concatenate([train() for train, _ in trainers])
        history.append(losses)
        if on_epoch is not None:
            on_epoch(epoch, float(losses.mean()))
    for _, finish in trainers:
        finish()
    return [[float(v) for v in member] for member in np.array(history).reshape(-1, len(nets)).T]


def _group_trainer(keras, nets: list[CurveNet], x: np.ndarray, y: np.ndarray, basis: np.ndarray):
    """(run one epoch -> each member's mean loss, store the trained weights into the nets) for one group."""
    import tensorflow as tf

    first, members = nets[0], len(nets)
    n, n_features = x.shape
    rngs = [np.random.default_rng(net.seed) for net in nets]
    limit = np.sqrt(6.0 / (n_features + first.units))
    n_coef = basis.shape[-1]
    init = [
        np.stack([rng.uniform(-limit, limit, (n_features, first.units)) for rng in rngs]),
        np.zeros((members, first.units)),
        np.zeros((members, first.units, n_coef)),
        np.zeros((members, n_coef)),
    ]
    w1, b1, w2, b2 = variables = [tf.Variable(w, dtype=tf.float64) for w in init]
    x_all = tf.constant(x, tf.float64)
    target = tf.constant(y[..., 0], tf.float64)
    weight = tf.constant(y[..., 1], tf.float64)
    counted = tf.cast(weight > 0, tf.float64)
    days = tf.maximum(tf.reduce_sum(counted, axis=1), 1.0)
    phi = tf.reduce_max(weight, axis=1)
    # Each sample's basis is looked up from its origin weekday per batch: (n, horizon, K) is never held.
    basis_of_weekday = tf.constant(basis, tf.float64)
    weekday = tf.constant(_weekday(x), tf.int32)
    optimizer = keras.optimizers.Adam(first.learning_rate, epsilon=1e-7)

    def step(idx):
        """One Adam step of every member on its own batch idx[m]; returns each member's summed phi * sigma."""
        with tf.GradientTape() as tape:
            coef = tf.tanh(tf.einsum("mbf,mfu->mbu", tf.gather(x_all, idx), w1) + b1[:, None]) @ w2 + b2[:, None]
            bases = tf.gather(basis_of_weekday, tf.gather(weekday, idx))
            curve = tf.einsum("mbhk,mbk->mbh", bases, coef)
            diff = tf.clip_by_value(curve - tf.gather(target, idx), *_CLIP)
            mse = tf.reduce_sum(tf.gather(counted, idx) * (tf.exp(diff) - 1) ** 2, axis=-1) / tf.gather(days, idx)
            score = tf.gather(phi, idx) * tf.sqrt(mse + 1e-6)  # (members, batch)
            loss = tf.reduce_sum(tf.reduce_mean(score, axis=1) + first.l2 * tf.reduce_sum(w1**2, axis=[1, 2]))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=False))
        return tf.reduce_sum(score, axis=1)

    # autograph=False: an explicit while_loop needs no access to this file's source at trace time
    @tf.function(
        input_signature=[tf.TensorSpec([members, None], tf.int32), tf.TensorSpec([None], tf.int32)], autograph=False
    )
    def epoch(order, bounds):
        """Every batch of one epoch: batch b of member m is order[m, bounds[b]:bounds[b+1]]."""

        def body(b, total):
            return b + 1, total + step(order[:, bounds[b] : bounds[b + 1]])

        _, total = tf.while_loop(lambda b, _: b < tf.shape(bounds)[0] - 1, body, (0, tf.zeros(members, tf.float64)))
        return total

    n_batches = max(1, -(-n // first.batch_size))
    sizes = [len(chunk) for chunk in np.array_split(np.arange(n), n_batches)]  # batches cut as np.array_split cuts
    bounds = tf.constant(np.concatenate([[0], np.cumsum(sizes)]), tf.int32)

    def train() -> np.ndarray:
        order = tf.constant(np.stack([rng.permutation(n) for rng in rngs]), tf.int32)
        return epoch(order, bounds).numpy() / n

    def finish() -> None:
        for m, net in enumerate(nets):
            net.weights = [v.numpy()[m] for v in variables]

    return train, finish


@dataclass(eq=False)
class GlobalEnsemble:
    """`seeds` CurveNets on `window_short` days of input plus `seeds` on `window_long` days,
    their log-multiplier curves averaged over c*(last 7 days), like global_direct's anchor.

    The forecast's level then moves `level_shrink` of the way (in log) from c*(last 7 days) toward
    c*(last 28 days): c7^(1 - s) * c28^s. The members learn their curves on the 7-day anchor, and
    their level follows that week too closely; 0.15 is the share that raised every development set
    (docs/models-and-scores.md).

    Training samples are the same as global_direct's (every artist x origin day), but a
    sample whose origin is `age` days before the end of the history weighs
    exp(-age / recency_days): play levels drift, so recent dynamics say more about the next
    60 days (recency_days <= 0 weighs all origins alike). Training reads at most `train_series`
    artists (`sampling.stratified_sample`); the forecast covers every artist.
    """

    name: ClassVar[str] = "global_ensemble"
    window_short: int = 14
    window_long: int = 28
    seeds: int = 3
    horizon: int = 60
    units: int = 16
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 0.003
    l2: float = 1e-3
    seed: int = 0
    recency_days: float = 30.0
    level_shrink: float = 0.15
    train_series: int = TRAIN_SERIES
    on_epoch: Callable[[int, float], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seeds < 1 or min(self.window_short, self.window_long) < ANCHOR_DAYS:
            raise ValueError(f"{self.name} needs seeds >= 1 and windows >= {ANCHOR_DAYS} days")
        if not 0.0 <= self.level_shrink <= 1.0:
            raise ValueError(f"{self.name}: level_shrink is a share of the way, 0 to 1; got {self.level_shrink}")
        if self.train_series < 1:
            raise ValueError(f"{self.name}: train_series must be >= 1, got {self.train_series}")
        self._members: list[tuple[int, CurveNet]] = []

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its epoch hook (a logger closure is no part of the fitted model)."""
        return {**self.__dict__, "on_epoch": None}

    def params(self) -> dict[str, Any]:
        anchor = f"c_star_last_{ANCHOR_DAYS}^(1-level_shrink)*c_star_last_{SHRINK_DAYS}^level_shrink"
        return {**hyperparameters(self), "anchor": anchor, "inputs": INPUTS, "loss": "phi_sigma"}

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        sample = training_history(history, self.train_series, self.seed)
        _, first, train_plays, train_context = artist_series(sample, songs)
        n_days = train_plays.shape[1]
        windows = sorted({self.window_short, self.window_long})
        if n_days <= max(windows):
            raise InsufficientHistory(f"history has {n_days} days; {self.name} needs more than window={max(windows)}")
        basis = horizon_basis(self.horizon)
        self._members, groups = [], []
        for w_index, window in enumerate(windows):
            x, y = training_set(train_plays, train_context, first, window, self.horizon)
            if self.recency_days > 0:
                age = n_days - 1 - (window + np.arange(len(x)) // len(train_plays))
                y[..., 1] *= np.exp(-age / self.recency_days)[:, None]
            nets = [
                CurveNet(
                    self.units,
                    self.epochs,
                    self.batch_size,
                    self.learning_rate,
                    self.l2,
                    seed=self.seed * 1000 + w_index * 100 + k,
                )
                for k in range(self.seeds)
            ]
            groups.append((nets, x, y))
            self._members += [(window, net) for net in nets]
        member_losses = fit_members(groups, basis, self.on_epoch)
        self._basis = basis
        self._read(history, songs)
        return FitInfo(losses=[float(v) for v in np.mean(member_losses, axis=0)])

    def observe(self, history: pl.DataFrame, songs: pl.DataFrame) -> None:
        """The trained members read `history`: predict() forecasts from its last day (nothing is learned)."""
        if not self._members:
            raise RuntimeError("fit the model before it observes new days")
        self._read(history, songs)

    def _read(self, history: pl.DataFrame, songs: pl.DataFrame) -> None:
        """The forecast's start: each artist's features per input window and level the day after the history
        (read from its last days only)."""
        days = max(read_days(self.window_long), read_days(self.window_short), SHRINK_DAYS)
        artists, first, plays, context = artist_series(recent_history(history, days), songs)
        n_days = plays.shape[1]
        self._origin_x = {}
        for window in sorted({self.window_short, self.window_long}):
            self._origin_x[window], anchor = origin_features(plays, context, first, n_days, window)
        month = np.maximum(c_star(plays[:, -SHRINK_DAYS:]), 1.0)
        self._level = anchor ** (1.0 - self.level_shrink) * month**self.level_shrink
        self._artists = artists
        self._last_day = first + timedelta(days=n_days - 1)

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        if not self._members:
            raise RuntimeError("fit the model before predicting")
        offset = forecast_offset(self._last_day, start)
        if offset + horizon > self.horizon:
            raise ValueError(
                f"{self.name} forecasts {self.horizon} days after its history; asked for {offset + horizon}"
            )
        curve = np.concatenate(
            [
                np.mean(
                    [net.curve(self._origin_x[w][rows].astype(np.float64), self._basis) for w, net in self._members],
                    axis=0,
                )[:, offset : offset + horizon]
                for rows in row_batches(len(self._level))
            ]
        )
        values = self._level[:, None] * np.exp(curve)
        return forecast_frame(self._artists, start, values)
