"""GlobalModel: shape, non-negativity, determinism, its anchor start, and no look-ahead in a backtest."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.forecast.metric import c_star
from musictrend_dagster.core.forecast.models.global_model import GlobalModel, horizon_basis, origin_features

TINY = dict(epochs=2, window=14)


def hand_c_star(values) -> float:
    """The metric-optimal constant written out: sum(1/x) / sum(1/x^2), 0-play days counted as 1."""
    x = [max(float(v), 1.0) for v in values]
    return sum(1 / v for v in x) / sum(1 / v**2 for v in x)


def test_c_star_by_hand():
    # [1, 2, 4]: (1 + 1/2 + 1/4) / (1 + 1/4 + 1/16) = 1.75 / 1.3125 = 4/3 (the mean would be 7/3)
    # [0, 2]: the 0 counts as 1 -> (1 + 1/2) / (1 + 1/4) = 1.2
    assert c_star(np.array([[1.0, 2.0, 4.0], [0.0, 2.0, 2.0]])) == pytest.approx([4 / 3, (1 + 1) / (1 + 0.5)])
    assert c_star(np.array([0.0, 2.0])) == pytest.approx(1.2)
    assert c_star(np.array([5.0, 5.0])) == pytest.approx(5.0)


def test_shape_non_negative_and_repeatable(five_artists):
    history, songs = five_artists
    start = history["ds"].max() + timedelta(days=1)
    one, two = GlobalModel(seed=7, **TINY), GlobalModel(seed=7, **TINY)
    info = one.fit(history, songs)
    two.fit(history, songs)
    assert len(info.losses) == 2 and all(np.isfinite(info.losses))
    fc = one.predict(start, 60)
    assert fc.shape == (5 * 60, 3) and fc["artist_id"].n_unique() == 5
    assert (fc["plays"] >= 0).all() and fc["plays"].is_finite().all()
    assert fc.equals(two.predict(start, 60))
    x = one.model_input(history)
    assert x.shape[0] == 5 and one.keras_model.predict_on_batch(x).shape == (5, 60)


def test_untrained_model_is_the_anchor(five_artists):
    """The zero-initialised head makes epochs=0 forecast c*(last 7 days) flat."""
    history, songs = five_artists
    model = GlobalModel(epochs=0, window=14)
    model.fit(history, songs)
    fc = model.predict(history["ds"].max() + timedelta(days=1), 30)
    last7 = history.filter(pl.col("ds") > history["ds"].max() - timedelta(days=7)).sort("artist_id", "ds")
    expected = [
        max(hand_c_star(g["plays"].to_list()), 1.0) for _, g in last7.group_by("artist_id", maintain_order=True)
    ]
    got = fc.group_by("artist_id", maintain_order=True).agg(pl.col("plays").min(), hi=pl.col("plays").max())
    assert got["plays"].to_numpy() == pytest.approx(expected, rel=1e-5)
    assert got["hi"].to_numpy() == pytest.approx(got["plays"].to_numpy(), rel=1e-5)


def test_no_leakage_test_window_changes_nothing(five_artists, assert_no_lookahead):
    history, songs = five_artists
    assert_no_lookahead(
        lambda: GlobalModel(seed=1, **TINY), history, songs, history["ds"].min() + timedelta(days=50), 30
    )


def test_too_long_horizon_is_refused(five_artists):
    history, songs = five_artists
    model = GlobalModel(horizon=20, **TINY)
    model.fit(history, songs)
    with pytest.raises(ValueError, match="forecasts 20 days"):
        model.predict(history["ds"].max() + timedelta(days=1), 30)


def test_members_are_averaged_into_one_inference_model(five_artists):
    """The inference model's curve is the mean of the members' own curves (log space), not one member's."""
    history, songs = five_artists
    model = GlobalModel(members=2, **TINY)
    model.fit(history, songs)
    assert model.keras_model.output_shape == (None, 60)
    x = model.model_input(history)
    layers = {layer.name: layer for layer in model.keras_model.layers}
    basis = horizon_basis(60)[np.argmax(x[:, -7:], axis=1)]  # (artists, 60, K) for each origin weekday

    def member_curve(m: int) -> np.ndarray:
        hidden = np.tanh(x @ layers[f"hidden_{m}"].kernel.numpy() + layers[f"hidden_{m}"].bias.numpy())
        coef = hidden @ layers[f"coefficients_{m}"].kernel.numpy() + layers[f"coefficients_{m}"].bias.numpy()
        return np.einsum("ahk,ak->ah", basis, coef)

    curves = [member_curve(0), member_curve(1)]
    assert not np.allclose(curves[0], curves[1], atol=1e-4)  # two different members
    got = np.asarray(model.keras_model.predict_on_batch(x))
    assert got == pytest.approx((curves[0] + curves[1]) / 2, abs=1e-5)


def test_origin_features_never_read_the_future(five_artists):
    """The model layer with the future in its input: features at origin t are the same whatever follows t."""
    from musictrend_dagster.core.forecast.models.global_model import artist_series

    history, songs = five_artists
    _, first, plays, context = artist_series(history, songs)
    t = 50
    future = plays.copy()
    future[:, t:] = future[:, t:] * 9 + 1000
    busy = context.copy()
    busy[:, t:, :] = 7.0
    x, anchor = origin_features(plays, context, first, t, 28)
    x2, anchor2 = origin_features(future, busy, first, t, 28)
    assert np.array_equal(x, x2) and np.array_equal(anchor, anchor2)
    x3, _ = origin_features(future, busy, first, t + 1, 28)
    assert not np.array_equal(x, x3)  # day t itself does count for the next origin
