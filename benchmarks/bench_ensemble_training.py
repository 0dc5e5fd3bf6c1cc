"""global_ensemble's member training: TensorFlow (GradientTape, members stacked in one graph) against
the hand-derived numpy backward pass + Adam it replaced, on the same samples, side by side.

The numpy trainer below is the pre-TensorFlow implementation, kept here only as this
benchmark's baseline (as bench_ingest.py keeps bare DuckDB). Both train the six members of one
tianchi-s1 fit (the newest origin: 123 days of history, windows 14 and 28, 3 seeds each).

    .venv/bin/python benchmarks/bench_ensemble_training.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.models.ensemble import _CLIP, CurveNet, GlobalEnsemble, _weekday, fit_members
from musictrend_dagster.core.forecast.models.global_model import artist_series, horizon_basis, training_set
from musictrend_dagster.core.sample import packaged_history

ORIGIN = date(2015, 7, 2)


def numpy_fit(net: CurveNet, x: np.ndarray, y: np.ndarray, basis: np.ndarray) -> list[float]:
    """The replaced trainer: forward pass, hand-derived gradients and Adam in numpy (one member)."""
    rng = np.random.default_rng(net.seed)
    x = x.astype(np.float64)
    n, n_features = x.shape
    limit = np.sqrt(6.0 / (n_features + net.units))
    net.weights = [
        rng.uniform(-limit, limit, (n_features, net.units)),
        np.zeros(net.units),
        np.zeros((net.units, basis.shape[-1])),
        np.zeros(basis.shape[-1]),
    ]
    target, weight = y[..., 0].astype(np.float64), y[..., 1].astype(np.float64)
    counted = weight > 0
    days = np.maximum(counted.sum(axis=1), 1)
    phi = weight.max(axis=1)
    bases = basis[_weekday(x)]
    moments = [(np.zeros_like(w), np.zeros_like(w)) for w in net.weights]
    beta1, beta2, step, losses = 0.9, 0.999, 0, []
    for _ in range(net.epochs):
        total = 0.0
        for idx in np.array_split(rng.permutation(n), max(1, -(-n // net.batch_size))):
            w1, b1, w2, b2 = net.weights
            hidden = np.tanh(x[idx] @ w1 + b1)
            coef = hidden @ w2 + b2
            diff = np.einsum("bhk,bk->bh", bases[idx], coef) - target[idx]
            ratio = np.exp(np.clip(diff, *_CLIP))
            mse = (counted[idx] * (ratio - 1) ** 2).sum(axis=1) / days[idx]
            sigma = np.sqrt(mse + 1e-6)
            total += float((phi[idx] * sigma).sum())
            inside = (diff > _CLIP[0]) & (diff < _CLIP[1])
            g_curve = (phi[idx] / (sigma * days[idx]))[:, None] * counted[idx] * inside * (ratio - 1) * ratio
            g_coef = np.einsum("bhk,bh->bk", bases[idx], g_curve) / len(idx)
            g_hidden = g_coef @ w2.T * (1 - hidden**2)
            grads = [x[idx].T @ g_hidden + 2 * net.l2 * w1, g_hidden.sum(0), hidden.T @ g_coef, g_coef.sum(0)]
            step += 1
            for i, g in enumerate(grads):
                m, v = moments[i]
                m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g**2
                moments[i] = (m, v)
                m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
                net.weights[i] = net.weights[i] - net.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-7)
        losses.append(total / n)
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    history, songs = packaged_history()
    model = GlobalEnsemble()
    _, first, plays, context = artist_series(history.filter(pl.col("ds") < ORIGIN), songs)
    basis = horizon_basis(model.horizon)
    groups = []
    for w_index, window in enumerate((model.window_short, model.window_long)):
        x, y = training_set(plays, context, first, window, model.horizon)
        seeds = [w_index * 100 + k for k in range(model.seeds)]
        groups.append((x, y, seeds))

    def nets(seeds):
        return [CurveNet(model.units, model.epochs, model.batch_size, model.learning_rate, model.l2, s) for s in seeds]

    def run_numpy():
        return [numpy_fit(net, x, y, basis)[-1] for x, y, seeds in groups for net in nets(seeds)]

    def run_tf():
        return [loss[-1] for loss in fit_members([(nets(seeds), x, y) for x, y, seeds in groups], basis)]

    run_tf()  # TensorFlow import and first trace are paid once per process, not per fit
    times = {"numpy": [], "tensorflow": []}
    finals = {}
    for _ in range(args.repeat):  # interleaved: both sides see the same machine load
        for name, run in (("numpy", run_numpy), ("tensorflow", run_tf)):
            t0 = time.perf_counter()
            finals[name] = run()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"samples: {', '.join(str(len(x)) for x, _, _ in groups)} (windows 14, 28); 6 members x {model.epochs} epochs"
    )
    for name in times:
        print(f"{name:<11} best {best[name]:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"tensorflow / numpy: {best['tensorflow'] / best['numpy']:.2f}x")
    gap = max(abs(a - b) for a, b in zip(finals["numpy"], finals["tensorflow"], strict=False))
    print(f"largest gap between the members' final losses: {gap:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
