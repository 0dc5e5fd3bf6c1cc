"""SeedLSTM: the 2016 architecture, recursive non-negative forecasts, repeatable fits, no look-ahead."""
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.models.seed_lstm import SeedLSTM
from musictrend_dagster.core.sample import packaged_history

TINY = dict(epochs=2, batch_size=64, window=7)


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    """Four real artists, 40 days: small enough for a 2-epoch fit in about a second."""
    frame = packaged_history()[0]
    artists = sorted(frame["artist_id"].unique())[:4]
    first = frame["ds"].min()
    return frame.filter(pl.col("artist_id").is_in(artists) & (pl.col("ds") < first + timedelta(days=40))).sort(
        "artist_id", "ds"
    )


SONGS = pl.DataFrame(schema={"artist_id": pl.String, "publish_time": pl.Date})


def test_architecture_is_the_2016_design(history):
    model = SeedLSTM(**TINY)
    model.fit(history, SONGS)
    layers = model.keras_model.layers
    assert [type(layer).__name__ for layer in layers] == ["LSTM", "LSTM", "Dense"]
    assert [layers[0].units, layers[1].units, layers[2].units] == [35, 10, 3]
    assert tuple(model.keras_model.input_shape) == (None, 7, 3)
    x = model.model_input(history)
    assert x.shape == (4, 7, 3) and np.isfinite(x).all()
    assert model.keras_model.predict_on_batch(x).shape == (4, 3)


def test_recursive_forecast_shape_non_negative_and_repeatable(history):
    start = history["ds"].max() + timedelta(days=1)
    one, two = SeedLSTM(seed=3, **TINY), SeedLSTM(seed=3, **TINY)
    info = one.fit(history, SONGS)
    two.fit(history, SONGS)
    assert len(info.losses) == 2
    fc = one.predict(start, 60)
    assert fc.shape == (4 * 60, 3)
    assert fc["ds"].min() == start and fc["ds"].max() == start + timedelta(days=59)
    assert (fc["plays"] >= 0).all() and fc["plays"].is_finite().all()
    assert fc.equals(two.predict(start, 60))


def test_epoch_hook_and_past_start_refused(history):
    seen = []
    model = SeedLSTM(on_epoch=lambda epoch, loss: seen.append((epoch, loss)), **TINY)
    model.fit(history, SONGS)
    assert [e for e, _ in seen] == [0, 1] and all(np.isfinite(loss) for _, loss in seen)
    with pytest.raises(ValueError, match="not after"):
        model.predict(history["ds"].max(), 10)


def test_no_leakage_test_window_changes_nothing(history, assert_no_lookahead):
    origin = history["ds"].min() + timedelta(days=30)
    assert_no_lookahead(lambda: SeedLSTM(seed=2, **TINY), history, SONGS, origin, 10)
