"""GlobalModel: shape, non-negativity, determinism, its anchor start, and no look-ahead in a backtest."""
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.models.global_model import GlobalModel, c_star

TINY = dict(epochs=2, window=14)


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
    expected = c_star(last7["plays"].to_numpy().astype(float).reshape(5, 7))
    got = fc.group_by("artist_id", maintain_order=True).agg(pl.col("plays").min(), hi=pl.col("plays").max())
    assert got["plays"].to_numpy() == pytest.approx(np.maximum(expected, 1.0), rel=1e-5)
    assert got["hi"].to_numpy() == pytest.approx(got["plays"].to_numpy(), rel=1e-5)


def test_no_leakage_test_window_changes_nothing(five_artists, assert_no_lookahead):
    history, songs = five_artists
    assert_no_lookahead(lambda: GlobalModel(seed=1, **TINY), history, songs, history["ds"].min() + timedelta(days=50), 30)


def test_too_long_horizon_is_refused(five_artists):
    history, songs = five_artists
    model = GlobalModel(horizon=20, **TINY)
    model.fit(history, songs)
    with pytest.raises(ValueError, match="forecasts 20 days"):
        model.predict(history["ds"].max() + timedelta(days=1), 30)


def test_members_are_averaged_into_one_inference_model(five_artists):
    history, songs = five_artists
    model = GlobalModel(members=2, **TINY)
    model.fit(history, songs)
    assert model.keras_model.output_shape == (None, 60)
    assert {layer.name for layer in model.keras_model.layers} >= {"hidden_0", "hidden_1"}
