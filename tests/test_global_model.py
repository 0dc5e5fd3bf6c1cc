"""GlobalModel: shape, non-negativity, determinism, its anchor start, and no look-ahead in a backtest."""
from datetime import timedelta
from importlib.resources import files

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.backtest import backtest
from musictrend_dagster.core.models.global_model import GlobalModel, c_star

DATA = files("musictrend_dagster") / "data" / "tianchi_s1"
TINY = dict(epochs=2, window=14)


@pytest.fixture(scope="module")
def data() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Five real artists over 80 days, and their songs."""
    frame = pl.read_csv(DATA / "artist_daily.csv", schema_overrides={"ds": pl.String}).with_columns(
        pl.col("ds").str.strptime(pl.Date, "%Y%m%d")
    )
    songs = pl.read_csv(DATA / "songs.csv", schema_overrides={"publish_time": pl.String}).with_columns(
        pl.col("publish_time").str.strptime(pl.Date, "%Y%m%d")
    )
    artists = sorted(frame["artist_id"].unique())[:5]
    first = frame["ds"].min()
    history = frame.filter(pl.col("artist_id").is_in(artists) & (pl.col("ds") < first + timedelta(days=80)))
    return history.sort("artist_id", "ds"), songs.filter(pl.col("artist_id").is_in(artists))


def test_shape_non_negative_and_repeatable(data):
    history, songs = data
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


def test_untrained_model_is_the_anchor(data):
    """The zero-initialised head makes epochs=0 forecast c*(last 7 days) flat."""
    history, songs = data
    model = GlobalModel(epochs=0, window=14)
    model.fit(history, songs)
    fc = model.predict(history["ds"].max() + timedelta(days=1), 30)
    last7 = history.filter(pl.col("ds") > history["ds"].max() - timedelta(days=7)).sort("artist_id", "ds")
    expected = c_star(last7["plays"].to_numpy().astype(float).reshape(5, 7))
    got = fc.group_by("artist_id", maintain_order=True).agg(pl.col("plays").min(), hi=pl.col("plays").max())
    assert got["plays"].to_numpy() == pytest.approx(np.maximum(expected, 1.0), rel=1e-5)
    assert got["hi"].to_numpy() == pytest.approx(got["plays"].to_numpy(), rel=1e-5)


def test_no_leakage_test_window_changes_nothing(data):
    history, songs = data
    origin = history["ds"].min() + timedelta(days=50)
    scrambled = history.with_columns(
        pl.when(pl.col("ds") >= origin).then(pl.col("plays") * 3 + 17).otherwise(pl.col("plays")).alias("plays")
    )
    runs = [backtest(lambda: GlobalModel(seed=1, **TINY), h, songs, [origin], horizon=30) for h in (history, scrambled)]
    assert runs[0].origins[0].forecast.equals(runs[1].origins[0].forecast)
    assert runs[0].origins[0].f_norm != runs[1].origins[0].f_norm


def test_too_long_horizon_is_refused(data):
    history, songs = data
    model = GlobalModel(horizon=20, **TINY)
    model.fit(history, songs)
    with pytest.raises(ValueError, match="forecasts 20 days"):
        model.predict(history["ds"].max() + timedelta(days=1), 30)


def test_members_are_averaged_into_one_inference_model(data):
    history, songs = data
    model = GlobalModel(members=2, **TINY)
    model.fit(history, songs)
    assert model.keras_model.output_shape == (None, 60)
    assert {layer.name for layer in model.keras_model.layers} >= {"hidden_0", "hidden_1"}
