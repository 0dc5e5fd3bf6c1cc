"""New and returning artists are forecast from their own recent level, by every registered model."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.forecast.models.recent import recent_levels, stretch_starts
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, make_model

# Small settings for the learned models; the baselines keep theirs.
TINY = {
    "seed_lstm": {"epochs": 1},
    "global_direct": {"epochs": 1, "window": 14},
    "global_ensemble": {"epochs": 1, "seeds": 1, "window_short": 7, "window_long": 14},
}


def test_stretch_starts_by_hand():
    plays = np.array(
        [
            [5, 5, 5, 5, 5, 5, 5, 5, 5, 5],  # plays from day 0: stretch starts at 0
            [0, 0, 0, 0, 0, 0, 3, 4, 0, 5],  # first plays on day 6
            [2, 0, 0, 0, 0, 0, 0, 0, 7, 7],  # a 7-day silence (days 1..7), then back on day 8
            [2, 0, 0, 1, 0, 0, 0, 0, 7, 7],  # no silence of 5+ days ends before day 8? days 4..7 = 4 days
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # never played
        ]
    )
    assert stretch_starts(plays, silence=5).tolist() == [0, 6, 8, 0, 10]


def test_recent_levels_use_positive_days_of_the_stretch_only():
    plays = np.zeros((3, 60))
    plays[0, :] = 100  # established: not recent
    plays[1, 50:] = [526, 0, 526, 526, 526, 526, 526, 526, 526, 526]  # new, with one day without plays
    plays[2, :20] = 300
    plays[2, 52:] = [400, 100, 400, 400, 400, 400, 400, 400]  # back after a 32-day silence
    mask, levels = recent_levels(plays)
    assert mask.tolist() == [False, True, True]
    assert levels[1] == pytest.approx(526.0)  # the 0 day is left out, as the score leaves it out
    # c* of seven 400s and one 100: (7/400 + 1/100) / (7/400^2 + 1/100^2) = 0.0275 / 0.00014375
    assert levels[2] == pytest.approx(191.304348, rel=1e-8)


@pytest.fixture(scope="module")
def with_newcomers(five_artists):
    """The five real artists plus the issue's case (first plays 10 days before the end, 526 a day)
    and an artist back from a 40-day silence with 8 days at 250 a day."""
    history, songs = five_artists
    days = sorted(history["ds"].unique().to_list())
    n = len(days)
    new = [0.0] * (n - 10) + [526.0] * 10
    back = [300.0] * 20 + [0.0] * (n - 28) + [250.0] * 8
    extra = pl.DataFrame(
        {
            "artist_id": ["zz_new"] * n + ["zz_back"] * n,
            "ds": days * 2,
            "plays": new + back,
        }
    ).with_columns(
        pl.col("plays").cast(history["plays"].dtype),
        downloads=(pl.col("plays") / 20).cast(history["downloads"].dtype),
        listeners=(pl.col("plays") / 3).cast(history["listeners"].dtype),
    )
    return pl.concat([history, extra.select(history.columns)]), songs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_forecasts_new_and_returning_artists_at_their_level(name, with_newcomers):
    """The issue's case: 526 plays a day for 10 days was forecast at 116; now every model says 526."""
    history, songs = with_newcomers
    model = make_model(name, **TINY.get(name, {}))
    model.fit(history, songs)
    fc = model.predict(history["ds"].max() + timedelta(days=1), 60)
    levels = fc.group_by("artist_id").agg(lo=pl.col("plays").min(), hi=pl.col("plays").max())
    level = {r["artist_id"]: (r["lo"], r["hi"]) for r in levels.iter_rows(named=True)}
    assert level["zz_new"] == pytest.approx((526.0, 526.0))
    assert level["zz_back"] == pytest.approx((250.0, 250.0))
    assert model.recent_artists() == pytest.approx({"zz_new": 526.0, "zz_back": 250.0})
    # the established artists keep the model's own forecast
    inner = model.model.predict(history["ds"].max() + timedelta(days=1), 60)
    established = pl.col("artist_id").str.starts_with("zz_").not_()
    assert fc.filter(established).equals(inner.filter(established))


def test_a_recent_stretch_silent_for_its_last_two_weeks_has_a_level_not_nan():
    """Plays began 20 days before the end, then 14 silent days (the stretch has not ended: 28 days end one)."""
    import numpy as np

    from musictrend_dagster.core.forecast.models.recent import recent_levels

    plays = np.zeros((2, 60))
    plays[0, 40:46] = [5, 8, 3, 9, 4, 6]  # recent, then silent for its last 14 days
    plays[1, 50:] = 7  # recent and playing
    mask, levels = recent_levels(plays)
    assert mask.tolist() == [True, True]
    assert np.isfinite(levels).all()
    assert levels.tolist() == [1.0, 7.0]
