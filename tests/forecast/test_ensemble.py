"""GlobalEnsemble: shape, non-negativity, seed determinism, pickling, level start, no look-ahead."""

import pickle
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.forecast.models.ensemble import CurveNet, GlobalEnsemble, fit_members
from musictrend_dagster.core.forecast.models.global_model import horizon_basis
from musictrend_dagster.core.forecast.models.registry import make_model

TINY = {"epochs": 2, "seeds": 2, "window_short": 7, "window_long": 14}


def test_shape_non_negative_repeatable_and_seed_matters(five_artists):
    history, songs = five_artists
    start = history["ds"].max() + timedelta(days=1)
    fits = [GlobalEnsemble(seed=s, **TINY) for s in (3, 3, 4)]
    infos = [m.fit(history, songs) for m in fits]
    assert len(infos[0].losses) == 2 and all(np.isfinite(infos[0].losses))
    fc = fits[0].predict(start, 60)
    assert fc.shape == (5 * 60, 3) and fc["artist_id"].n_unique() == 5
    assert (fc["plays"] >= 0).all() and fc["plays"].is_finite().all()
    assert fc.equals(fits[1].predict(start, 60))
    assert not fc.equals(fits[2].predict(start, 60))


def test_fitted_model_pickles_and_predicts_the_same(five_artists):
    history, songs = five_artists
    model = GlobalEnsemble(**TINY)
    model.fit(history, songs)
    start = history["ds"].max() + timedelta(days=3)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.predict(start, 30).equals(model.predict(start, 30))
    assert not hasattr(model, "keras_model")  # logged as a pickled pyfunc, not a Keras flavour


@pytest.mark.parametrize("shrink", [0.0, 0.25, 1.0])
def test_untrained_ensemble_is_its_level(five_artists, c_star_last, shrink):
    """Zero-initialised heads make epochs=0 forecast flat at c*(last 7 days) moved `level_shrink` of
    the way (in log) toward c*(last 28 days)."""
    history, songs = five_artists
    model = GlobalEnsemble(**{**TINY, "epochs": 0, "level_shrink": shrink})
    model.fit(history, songs)
    fc = model.predict(history["ds"].max() + timedelta(days=1), 30)
    c7, c28 = np.array(c_star_last(history, 7)), np.array(c_star_last(history, 28))
    expected = c7 ** (1 - shrink) * c28**shrink
    got = fc.group_by("artist_id", maintain_order=True).agg(lo=pl.col("plays").min(), hi=pl.col("plays").max())
    assert got["lo"].to_numpy() == pytest.approx(expected, rel=1e-9)
    assert got["hi"].to_numpy() == pytest.approx(expected, rel=1e-9)
    assert shrink == 0.0 or not np.allclose(expected, c7)  # the fixture tells them apart


def test_curve_net_learns_a_constant_multiplier():
    """Every target 20% under the anchor: training moves the curve to about log(0.8)."""
    rng = np.random.default_rng(0)
    basis = horizon_basis(10)
    x = np.zeros((400, 10), dtype=np.float32)
    x[:, :3] = rng.normal(size=(400, 3))
    x[np.arange(400), 3 + rng.integers(0, 7, 400)] = 1.0
    y = np.stack([np.full((400, 10), np.log(0.8)), np.ones((400, 10))], axis=-1).astype(np.float32)
    net = CurveNet(units=4, epochs=80, batch_size=64, learning_rate=0.01, l2=0.0, seed=0)
    losses = net.fit(x, y, basis)
    assert losses[-1] < 0.05 < losses[0]
    assert np.exp(net.curve(x.astype(np.float64), basis)) == pytest.approx(0.8, abs=0.03)


def test_no_leakage_test_window_changes_nothing(five_artists, assert_no_lookahead):
    history, songs = five_artists
    assert_no_lookahead(
        lambda: GlobalEnsemble(seed=1, **TINY), history, songs, history["ds"].min() + timedelta(days=50), 30
    )


def test_bad_requests_are_refused(five_artists):
    history, songs = five_artists
    with pytest.raises(RuntimeError, match="fit the model"):
        GlobalEnsemble().predict(history["ds"].max(), 10)
    with pytest.raises(ValueError, match="needs more than window=90"):
        GlobalEnsemble(**{**TINY, "window_long": 90}).fit(history, songs)
    with pytest.raises(ValueError, match="seeds >= 1"):
        GlobalEnsemble(seeds=0)
    with pytest.raises(ValueError, match="level_shrink is a share of the way"):
        GlobalEnsemble(level_shrink=1.5)
    model = GlobalEnsemble(horizon=20, **TINY)
    model.fit(history, songs)
    with pytest.raises(ValueError, match="forecasts 20 days"):
        model.predict(history["ds"].max() + timedelta(days=1), 30)


def test_registered_with_editable_defaults():
    model = make_model("global_ensemble", seeds=1, recency_days=0.0)
    assert model.params()["seeds"] == 1 and model.params()["recency_days"] == 0.0


def _toy(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 10), dtype=np.float32)
    x[:, :3] = rng.normal(size=(n, 3))
    x[np.arange(n), 3 + rng.integers(0, 7, n)] = 1.0
    target = 0.3 * x[:, :1] - 0.2 + rng.normal(scale=0.1, size=(n, 10))
    return x, np.stack([target, np.ones((n, 10))], axis=-1).astype(np.float32)


def test_members_trained_together_equal_members_trained_alone():
    """Stacking members in one graph changes nothing: each one's weights are what it gets trained alone."""
    x, y = _toy()
    basis = horizon_basis(10)
    make = lambda seed: CurveNet(units=4, epochs=5, batch_size=64, learning_rate=0.01, l2=1e-3, seed=seed)  # noqa: E731
    together = [make(1), make(2)]
    losses = fit_members([(together, x, y)], basis)
    for net, loss in zip(together, losses, strict=False):
        alone = make(net.seed)
        assert alone.fit(x, y, basis) == pytest.approx(loss, rel=1e-9)
        for a, b in zip(alone.weights, net.weights, strict=False):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert not np.allclose(together[0].weights[0], together[1].weights[0])


def test_epoch_hook_hears_every_epoch_and_is_not_pickled(five_artists):
    history, songs = five_artists
    seen = []
    model = GlobalEnsemble(on_epoch=lambda epoch, loss: seen.append((epoch, loss)), **TINY)
    info = model.fit(history, songs)
    assert [e for e, _ in seen] == [0, 1]
    assert [loss for _, loss in seen] == pytest.approx(info.losses)  # the mean over all six members, per epoch
    assert pickle.loads(pickle.dumps(model)).on_epoch is None
