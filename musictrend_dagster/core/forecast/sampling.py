"""A bounded, stratified sample of series for the global models to train on, and row batches.

The global models learn one shape for all artists, so they need enough series of every kind,
not every series: training on a sample keeps their cost flat as the catalogue grows, and the
fitted network then forecasts every artist. Strata: volume quartile x, inside it, volatility
quartile (the spread of day-to-day log changes), so quiet, loud, steady and spiky artists all
stay in the sample in their catalogue's proportions.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# The default `train_series` of the global models: docs/catalogue-scale.md has the measurements.
TRAIN_SERIES = 250
# Rows (artists) per batch wherever a step over all artists is cut to bound memory; also the series per
# Spark task (core/forecast/distributed.py), so a network predicts the same rows together on either side.
BATCH_SERIES = 4096
_BINS = 4


def quantile_bins(values: np.ndarray, bins: int = _BINS) -> np.ndarray:
    """Bin index 0..bins-1 of each value by its rank (ties broken by position, so bins stay balanced)."""
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks * bins // max(len(values), 1)


def shape_statistics(plays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (volume, volatility): log1p of the mean plays, and the std of day-to-day log1p changes."""
    volume = np.empty(plays.shape[0])
    volatility = np.zeros(plays.shape[0])
    for rows in row_batches(plays.shape[0]):
        logs = np.log1p(plays[rows])
        volume[rows] = np.log1p(plays[rows].mean(axis=1))
        if plays.shape[1] > 1:
            volatility[rows] = np.diff(logs, axis=1).std(axis=1)
    return volume, volatility


def stratified_sample(plays: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most `size` rows of `plays` (artists x days), stratified by volume and volatility.

    Every row when there are no more than `size` (the catalogue below the cap trains exactly as
    before). Otherwise each stratum gives its share of `size` (largest remainders round it), drawn
    without replacement by a generator seeded with `seed`: the same matrix and seed, the same sample.
    """
    n = plays.shape[0]
    if size < 1:
        raise ValueError(f"train_series must be >= 1, got {size}")
    if n <= size:
        return np.arange(n)
    volume, volatility = shape_statistics(plays)
    strata = quantile_bins(volume) * _BINS
    for b in range(_BINS):
        inside = np.flatnonzero(strata == b * _BINS)
        strata[inside] += quantile_bins(volatility[inside])
    counts = np.bincount(strata, minlength=_BINS * _BINS)
    quota = size * counts / n
    take = np.floor(quota).astype(np.int64)
    short = size - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(strata == s), take[s], replace=False) for s in range(len(counts)) if take[s]]
    return np.sort(np.concatenate(chosen))


def row_batches(n: int, batch: int | None = None) -> Iterator[slice]:
    """Slices of at most `batch` (default: BATCH_SERIES as it is now) consecutive rows covering 0..n-1."""
    batch = BATCH_SERIES if batch is None else batch
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for start in range(0, n, batch):
        yield slice(start, min(start + batch, n))
