"""Forecasting at catalogue scale: bounded training samples, batched prediction, vectorised per-series levels."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from musictrend_dagster.core.forecast.features import HISTORY_COLUMNS, build_features, dense_features, plays_matrix
from musictrend_dagster.core.forecast.metric import c_star, f_norm
from musictrend_dagster.core.forecast.models import ensemble, global_model, keras_common, recent, seed_lstm
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA
from musictrend_dagster.core.forecast.models.keras_common import batched_dense_features, forecast_frame
from musictrend_dagster.core.forecast.models.recent import (
    LEVEL_DAYS,
    RECENT_DAYS,
    SILENCE_DAYS,
    recent_levels,
    stretch_starts,
)
from musictrend_dagster.core.forecast.models.registry import make_model
from musictrend_dagster.core.forecast.sampling import quantile_bins, shape_statistics, stratified_sample
from musictrend_dagster.core.sample import packaged_history

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_scale import synthetic_daily

REFERENCE = Path(__file__).parent / "reference" / "scale_tianchi_s1_forecasts.npz"
SAMPLED_REFERENCE = Path(__file__).parent / "reference" / "scale_sampled_forecasts.npz"
TINY = {"global_direct": {"epochs": 2}, "global_ensemble": {"epochs": 2}, "seed_lstm": {"epochs": 1}}
# The references were made on one CPU; TensorFlow's CPU kernels round the last bits differently on another
# (up to 2e-7 relative seen on AMD EPYC against the reference's machine). A change of logic moves far more.
SAME_MODEL = {"rtol": 1e-6, "atol": 0.0}


# ---- the sample ---------------------------------------------------------------------------------
def test_sample_is_every_series_below_the_cap():
    plays = np.random.default_rng(0).gamma(2.0, 50.0, (50, 30))
    assert np.array_equal(stratified_sample(plays, 50), np.arange(50))
    assert np.array_equal(stratified_sample(plays, 2000), np.arange(50))


def test_sample_is_seeded_sized_and_keeps_every_stratum():
    rng = np.random.default_rng(1)
    level = np.exp(rng.uniform(0, 8, 1000))[:, None]
    spread = rng.uniform(0.05, 1.0, 1000)[:, None]
    plays = level * np.exp(spread * rng.normal(size=(1000, 60)))
    rows = stratified_sample(plays, 160, seed=3)
    assert len(rows) == 160 and len(set(rows)) == 160 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, stratified_sample(plays, 160, seed=3))
    assert not np.array_equal(rows, stratified_sample(plays, 160, seed=4))
    volume, volatility = shape_statistics(plays)
    vbin = quantile_bins(volume)
    # every volume quartile and, inside it, every volatility quartile gives its share (10 each)
    for b in range(4):
        inside = np.flatnonzero(vbin == b)
        sbin = quantile_bins(volatility[inside])
        picked = np.isin(inside, rows)
        assert [int(picked[sbin == s].sum()) for s in range(4)] == [10, 10, 10, 10]


def test_sample_refuses_a_size_below_one():
    with pytest.raises(ValueError, match="train_series"):
        stratified_sample(np.ones((3, 5)), 0)


# ---- tianchi-s1 (50 artists, below the cap): forecasts identical to the code before the sample ----
@pytest.mark.parametrize("name", list(TINY))
def test_tianchi_s1_forecasts_unchanged_below_the_cap(name):
    """The reference holds the forecasts of commit 8aec069 (before sampling and batching existed) for the
    same fit: packaged tianchi-s1, 50 artists, the first 100 days, tiny epochs, seed 0."""
    frame, songs = packaged_history()
    origin = frame["ds"].min() + timedelta(days=100)
    history = frame.filter(pl.col("ds") < origin).select(HISTORY_COLUMNS)
    model = make_model(name, **TINY[name])
    assert model.train_series > history["artist_id"].n_unique()
    model.fit(history, songs)
    forecast = model.predict(origin, 60).sort("artist_id", "ds")
    reference = np.load(REFERENCE)
    assert forecast["artist_id"].to_list() == reference["artists"].tolist()
    np.testing.assert_allclose(forecast["plays"].to_numpy(), reference[name], **SAME_MODEL)


# ---- the sample's size, not the catalogue's, sets the training cost ------------------------------
def _training_rows(monkeypatch, name: str, history, songs, train_series: int) -> int:
    """Training examples the model's trainer receives (artists x origins of its sample)."""
    seen = []
    if name == "global_direct":
        original = global_model.train_keras
        monkeypatch.setattr(
            global_model, "train_keras", lambda k, m, x, y, *a: seen.append(len(x)) or original(k, m, x, y, *a)
        )
    elif name == "global_ensemble":
        original = ensemble.fit_members
        monkeypatch.setattr(
            ensemble,
            "fit_members",
            lambda groups, *a: seen.extend(len(x) for _, x, _ in groups) or original(groups, *a),
        )
    else:
        original = seed_lstm.SeedLSTM._train
        monkeypatch.setattr(
            seed_lstm.SeedLSTM, "_train", lambda self, keras, x, *a: seen.append(len(x)) or original(self, keras, x, *a)
        )
    model = make_model(name, **TINY[name], train_series=train_series)
    model.fit(history, songs)
    forecast = model.predict(history["ds"].max() + timedelta(days=1), 7)
    assert forecast["artist_id"].n_unique() == history["artist_id"].n_unique()  # every artist is forecast
    return sum(seen)


@pytest.mark.parametrize("name", list(TINY))
def test_training_examples_are_set_by_the_sample_not_the_catalogue(monkeypatch, name):
    small, small_songs = synthetic_daily(40, 50, seed=1)
    large, large_songs = synthetic_daily(120, 50, seed=2)
    assert _training_rows(monkeypatch, name, small, small_songs, 20) == _training_rows(
        monkeypatch, name, large, large_songs, 20
    )
    assert _training_rows(monkeypatch, name, large, large_songs, 120) == 6 * _training_rows(
        monkeypatch, name, large, large_songs, 20
    )


# ---- features for the sample only; the forecast's start from the recent days only ----------------
@pytest.mark.parametrize("name", list(TINY))
def test_sampled_fit_and_daily_read_forecasts_unchanged(name):
    """The reference holds the forecasts of commit 2f65d76, whose fit and observe built the features of every
    artist over every day: 60 synthetic artists, a sample of 20, tiny epochs, seed 0; fitted on all days but
    the last, then observing the last."""
    frame, songs = synthetic_daily(60, 130, seed=5)
    frame = frame.select(HISTORY_COLUMNS)
    last = frame["ds"].max()
    model = make_model(name, train_series=20, **TINY[name])
    model.fit(frame.filter(pl.col("ds") < last), songs)
    reference = np.load(SAMPLED_REFERENCE)
    fitted = model.predict(last, 60).sort("artist_id", "ds")
    assert fitted["artist_id"].unique(maintain_order=True).to_list() == reference["artists"].tolist()
    np.testing.assert_allclose(fitted["plays"].to_numpy(), reference[f"{name}_fit"], **SAME_MODEL)
    model.observe(frame, songs)
    observed = model.predict(last + timedelta(days=1), 60).sort("artist_id", "ds")
    np.testing.assert_allclose(observed["plays"].to_numpy(), reference[f"{name}_observe"], **SAME_MODEL)


READ_DAYS = {"global_direct": 28, "global_ensemble": 28, "seed_lstm": 14 + 2}


@pytest.mark.parametrize("name", list(TINY))
def test_fit_builds_features_of_its_sample_and_the_forecast_reads_the_recent_days(monkeypatch, name):
    history, songs = synthetic_daily(60, 130, seed=5)
    built = []
    dense = keras_common.dense_features

    def spy(frame, catalogue):
        out = dense(frame, catalogue)
        built.append((len(out[0]), out[2].shape[1]))  # (artists, days)
        return out

    monkeypatch.setattr(keras_common, "dense_features", spy)
    model = make_model(name, **TINY[name], train_series=20)
    model.fit(history, songs)
    assert built == [(20, 130), (60, READ_DAYS[name])]
    built.clear()
    model.observe(history, songs)
    assert built == [(60, READ_DAYS[name])]


def _sparse_history(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """30 artists x 100 days with a third of the artist-days missing, one artist silent for its last 40 days,
    one that starts 6 days before the end, and nobody playing on the first day of either read span."""
    history, songs = synthetic_daily(30, 100, seed=seed)
    last = history["ds"].max()
    artists = sorted(history["artist_id"].unique())
    keep = np.random.default_rng(seed).random(history.height) > 0.33
    return (
        history.filter(pl.Series(keep))
        .filter(~((pl.col("artist_id") == artists[0]) & (pl.col("ds") > last - timedelta(days=40))))
        .filter(~((pl.col("artist_id") == artists[1]) & (pl.col("ds") < last - timedelta(days=5))))
        .filter(~pl.col("ds").is_in([last - timedelta(days=d - 1) for d in set(READ_DAYS.values())]))
        .select(HISTORY_COLUMNS),
        songs,
    )


@pytest.mark.parametrize("name", list(TINY))
def test_reading_the_recent_days_gives_the_forecast_of_reading_every_day(monkeypatch, name):
    history, songs = _sparse_history(seed=8)
    start = history["ds"].max() + timedelta(days=1)
    model = make_model(name, **TINY[name])
    model.fit(history, songs)
    recent = model.predict(start, 60)
    assert recent["artist_id"].n_unique() == 30
    for module in (global_model, ensemble, seed_lstm):
        monkeypatch.setattr(module, "recent_history", lambda frame, days: frame)
    model.observe(history, songs)
    assert_frame_equal(model.predict(start, 60), recent)


# ---- accuracy: a sample learns the shape as well as every series ----------------------------------
def test_sample_scores_held_out_series_like_training_on_all():
    """global_direct on 240 synthetic artists: trained on a stratified quarter, scored on the artists outside
    it, vs trained on all 240. The tolerance is the seed spread of the all-series fit measured there."""
    history, songs = synthetic_daily(240, 150, seed=7)
    origin = history["ds"].min() + timedelta(days=90)
    train = history.filter(pl.col("ds") < origin)
    actual = history.filter((pl.col("ds") >= origin) & (pl.col("ds") < origin + timedelta(days=60)))
    artists, _, plays, _ = global_model.artist_series(train, songs)
    held_out = set(artists) - {artists[i] for i in stratified_sample(plays, 60, seed=0)}

    def score(**kw) -> float:
        model = make_model("global_direct", epochs=8, **kw)
        model.fit(train, songs)
        forecast = model.predict(origin, 60).filter(pl.col("artist_id").is_in(held_out))
        return f_norm(forecast, actual.filter(pl.col("artist_id").is_in(held_out)).select("artist_id", "ds", "plays"))

    sampled, everyone = score(train_series=60), score(train_series=240)
    assert sampled > everyone - 0.01, (sampled, everyone)


# ---- new and returning artists: array operations give the per-row loop's results exactly ----------
def _loop_recent_levels(plays: np.ndarray, recent: int = RECENT_DAYS, silence: int = SILENCE_DAYS):
    """The per-row implementation recent.py had before (commit 8aec069), kept as the reference."""
    n_days = plays.shape[1]
    starts = np.full(plays.shape[0], n_days)
    for i, row in enumerate(plays > 0):
        active = np.flatnonzero(row)
        if not active.size:
            continue
        after = np.flatnonzero(np.diff(active) > silence)
        starts[i] = active[after[-1] + 1] if after.size else active[0]
    mask = (starts < n_days) & (starts > 0) & (starts >= n_days - recent)
    levels = np.zeros(plays.shape[0])
    for i in np.flatnonzero(mask):
        days = plays[i, starts[i] :][-LEVEL_DAYS:]
        levels[i] = c_star(days[days > 0]) if (days > 0).any() else c_star(days)  # silent: floored at 1
    return starts, mask, levels


@pytest.mark.parametrize("seed", range(5))
def test_recent_levels_match_the_per_row_loop(seed):
    rng = np.random.default_rng(seed)
    n, days = 3000, int(rng.integers(20, 120))
    plays = rng.gamma(0.7, 300.0, (n, days)) * (rng.random((n, days)) > rng.uniform(0.0, 0.9, (n, 1)))
    # silences of random length and place, new artists (zeros up to a day), artists that never play
    for i in rng.choice(n, n // 2, replace=False):
        a = int(rng.integers(0, days))
        plays[i, a : a + int(rng.integers(1, 60))] = 0.0
    plays[rng.choice(n, n // 10, replace=False)] = 0.0
    plays[:50, : days - 5] = 0.0
    plays = np.where(rng.random((n, days)) < 0.5, np.floor(plays), plays)
    starts, mask, levels = _loop_recent_levels(plays)
    assert mask.sum() > 50
    np.testing.assert_array_equal(stretch_starts(plays), starts)
    new_mask, new_levels = recent_levels(plays)
    np.testing.assert_array_equal(new_mask, mask)
    np.testing.assert_array_equal(new_levels, levels)


@pytest.mark.parametrize("seed", range(3))
def test_recent_artists_read_from_the_last_days_are_those_of_every_day(monkeypatch, seed):
    """RecentLevel decides who is new or returning from the last recent.READ_DAYS days only, and finds every day's
    answer on a hostile history: silences of every length ending anywhere (28 and 29 days: the rule's edge),
    artists that begin on a day nobody else plays, rows missing where plays are 0."""
    rng = np.random.default_rng(seed)
    n, days = 600, 200
    plays = np.floor(rng.gamma(0.7, 300.0, (n, days))) * (rng.random((n, days)) > rng.uniform(0.0, 0.9, (n, 1)))
    for i in range(n):
        gap = int(rng.integers(1, 90)) if i % 3 else 28 + i % 2  # a silence just at and past SILENCE_DAYS
        end = int(rng.integers(days - recent.READ_DAYS - 10, days))
        plays[i, max(0, end - gap) : end] = 0.0
    plays[:, days - recent.READ_DAYS] = 0.0  # nobody plays on the first day of the read
    # the edge: a stretch that begins on the first day that counts as recent, after a day with plays exactly
    # SILENCE_DAYS before it (not a new stretch: never recent) or one day further back (recent)
    for i, before in ((0, SILENCE_DAYS), (1, SILENCE_DAYS + 1)):
        plays[i] = 0.0
        plays[i, days - RECENT_DAYS - before] = 40.0
        plays[i, days - RECENT_DAYS :] = 50.0
    artists = [f"a{i:03d}" for i in range(n)]
    first = date(2015, 3, 1)
    rows, cols = np.nonzero(plays)
    history = pl.DataFrame(
        {
            "artist_id": [artists[r] for r in rows],
            "ds": [first + timedelta(days=int(c)) for c in cols],
            "plays": plays[rows, cols].astype(np.int64),
        }
    )
    mask, levels = recent_levels(plays_matrix(history)[2])
    expected = {a: float(v) for a, v, m in zip(sorted(history["artist_id"].unique()), levels, mask, strict=True) if m}
    assert "a000" not in expected and "a001" in expected and len(expected) > 20
    read = []
    matrix = recent.plays_matrix

    def spy(frame, since=None):
        out = matrix(frame, since)
        read.append(out[2].shape[1])
        return out

    monkeypatch.setattr(recent, "plays_matrix", spy)
    model = make_model("median14")
    model.fit(history, pl.DataFrame(schema={"song_id": pl.String, "artist_id": pl.String}))
    assert read == [recent.READ_DAYS]
    assert model.recent_artists() == expected


# ---- bounded memory: features in batches of artists, the same arrays as in one piece --------------
@pytest.mark.parametrize("read", [global_model._context, seed_lstm._plays_features])
def test_batched_features_equal_the_whole(read):
    history, songs = synthetic_daily(30, 45, seed=3)
    first, last = history["ds"].min(), history["ds"].max()
    artists = sorted(history["artist_id"].unique())
    # batch starts whose first artist lacks the first day, the last day, or both; an artist that starts late
    history = history.filter(
        ~((pl.col("artist_id").is_in([artists[0], artists[7]])) & (pl.col("ds") == first))
        & ~((pl.col("artist_id").is_in([artists[7], artists[14]])) & (pl.col("ds") == last))
        & ~((pl.col("artist_id") == artists[20]) & (pl.col("ds") < first + timedelta(days=30)))
    )
    whole = batched_dense_features(history, songs, read, batch=1000)
    for batch in (7, 1):
        cut = batched_dense_features(history, songs, read, batch=batch)
        assert cut[0] == whole[0] and cut[1] == whole[1]
        np.testing.assert_array_equal(cut[2], whole[2])
        np.testing.assert_array_equal(cut[3], whole[3])


def test_forecast_frame_is_the_per_row_frame():
    rng = np.random.default_rng(0)
    artists = [f"a{i:03d}" for i in rng.permutation(40)]
    values = rng.normal(100.0, 80.0, (40, 9))
    start = packaged_history()[0]["ds"].min()
    expected = pl.DataFrame(
        {
            "artist_id": np.repeat(np.array(artists, dtype=object), 9).tolist(),
            "ds": [start + timedelta(days=k) for k in range(9)] * 40,
            "plays": np.clip(values, 0.0, None).reshape(-1),
        },
        schema=FORECAST_SCHEMA,
    )
    assert forecast_frame(artists, start, values).equals(expected)


def test_plays_matrix_and_dense_frame_equal_the_per_row_build():
    """The artist index and the dense calendar are array operations now; the per-row build was the reference."""
    history, songs = synthetic_daily(60, 40, seed=5)
    history = history.sample(fraction=0.8, seed=1)  # unsorted, with holes
    artists, first, matrix = plays_matrix(history)
    row = {a: i for i, a in enumerate(artists)}
    expected = np.zeros_like(matrix)
    cols = (history["ds"] - first).dt.total_days().to_numpy()
    np.add.at(expected, (np.array([row[a] for a in history["artist_id"].to_list()]), cols), history["plays"].to_numpy())
    np.testing.assert_array_equal(matrix, expected)
    n_days = matrix.shape[1]
    dense = pl.DataFrame(
        {
            "artist_id": np.repeat(np.array(artists, dtype=object), n_days).tolist(),
            "ds": [first + timedelta(days=k) for k in range(n_days)] * len(artists),
            "plays": matrix.reshape(-1),
        }
    )
    activity = history.select("artist_id", "ds", "downloads", "listeners")
    dense = dense.join(activity, on=["artist_id", "ds"], how="left").with_columns(
        pl.col("downloads", "listeners").fill_null(0)
    )
    assert dense_features(history, songs)[3].equals(build_features(dense, songs))
