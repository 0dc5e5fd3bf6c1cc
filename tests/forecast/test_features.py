"""build_features: hand-checked values and no look-ahead."""

import math
from datetime import date, timedelta

import polars as pl
import pytest

from musictrend_dagster.core.forecast.features import FEATURE_COLUMNS, build_features

D0 = date(2015, 3, 1)  # a Sunday


def _history(plays_by_artist: dict[str, list[int]], downloads: int = 1, listeners: int = 2) -> pl.DataFrame:
    """Constant downloads and listeners per day unless a test sets them."""
    rows = [
        {"artist_id": a, "ds": D0 + timedelta(days=k), "plays": p, "downloads": downloads, "listeners": listeners}
        for a, plays in plays_by_artist.items()
        for k, p in enumerate(plays)
    ]
    return pl.DataFrame(
        rows,
        schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64, "downloads": pl.Int64, "listeners": pl.Int64},
    )


SONGS = pl.DataFrame(
    {
        "song_id": ["s1", "s2", "s3", "s4", "s5"],
        "artist_id": ["a", "a", "a", "a", "b"],
        "publish_time": [date(2014, 1, 1), D0 + timedelta(days=2), D0 + timedelta(days=2), D0 + timedelta(days=9), D0],
    }
)


def test_values_on_hand_made_frame():
    feats = build_features(_history({"a": [3, 6, 9, 0, 3, 3, 3, 3, 3, 3], "b": [1, 2]}), SONGS)
    assert feats.columns == ["artist_id", "ds", *FEATURE_COLUMNS]
    a = feats.filter(pl.col("artist_id") == "a")
    assert a["plays_mean_3"].to_list()[:4] == [3.0, 4.5, 6.0, 5.0]
    # population variance over the days that exist: {3} -> 0, {3,6} -> 2.25, {3,6,9} -> 6, {6,9,0} -> 14
    assert a["plays_var_3"].to_list()[:4] == pytest.approx([0.0, 2.25, 6.0, 14.0])
    assert a["weekday"].to_list()[:2] == [7, 1]  # Sunday, Monday
    assert a["is_weekend"].to_list()[:2] == [1, 0]
    assert a["day_index"].to_list() == list(range(10))
    assert a["releases_today"].to_list() == [0, 0, 2, 0, 0, 0, 0, 0, 0, 1]
    # two songs on day 2 stay in the 7-day window through day 8, then leave it on day 9
    assert a["releases_7d"].to_list() == [0, 0, 2, 2, 2, 2, 2, 2, 2, 1]
    assert a["releases_28d"].to_list() == [0, 0, 2, 2, 2, 2, 2, 2, 2, 3]
    since_2014 = (D0 - date(2014, 1, 1)).days
    assert a["days_since_release"].to_list() == [since_2014, since_2014 + 1, 0, 1, 2, 3, 4, 5, 6, 0]
    b = feats.filter(pl.col("artist_id") == "b")
    assert b["releases_today"].to_list() == [1, 0]
    assert b["days_since_release"].to_list() == [0, 1]


def test_activity_ratios_use_trailing_calendar_windows():
    """7 days of 1 download / 2 listeners against 10 plays a day; day gaps count as empty days."""
    frame = _history({"a": [10] * 40}).filter(pl.col("ds") != D0 + timedelta(days=30))  # day 30 missing
    a = build_features(frame, SONGS)
    day = {d: row for d, row in zip(a["ds"].to_list(), a.iter_rows(named=True), strict=False)}

    def at(k: int) -> dict:
        return day[D0 + timedelta(days=k)]

    assert at(0)["downloads_per_play_7d"] == pytest.approx(math.log(2 / 11))
    assert at(10)["downloads_per_play_7d"] == pytest.approx(math.log(8 / 71))
    assert at(10)["listeners_per_play_7d"] == pytest.approx(math.log(15 / 71))
    # day 10: 7 of its 28 days exist -> 4 * 7 vs 11 days of downloads
    assert at(10)["downloads_trend_7_28"] == pytest.approx(math.log(29 / 12))
    assert at(35)["downloads_trend_7_28"] == pytest.approx(math.log((4 * 6 + 1) / 28))
    assert at(35)["listeners_per_play_7d"] == pytest.approx(math.log(13 / 61))


def test_artist_without_songs_has_null_days_since_release():
    feats = build_features(_history({"c": [1, 2, 3]}), SONGS)
    assert feats["days_since_release"].null_count() == 3
    assert feats["releases_28d"].to_list() == [0, 0, 0]


def test_no_leakage_future_rows_never_change_past_features():
    base = {"a": [5, 1, 7, 2, 8, 3, 9, 4, 6, 2], "b": [4, 4, 4, 4, 4, 4, 4, 4, 4, 4]}
    changed = {k: [*v[:6], 1000, 0, 55, 9] for k, v in base.items()}
    later_songs = pl.concat(
        [SONGS, pl.DataFrame({"song_id": ["s9"], "artist_id": ["a"], "publish_time": [D0 + timedelta(days=7)]})]
    )
    cutoff = D0 + timedelta(days=5)
    one = build_features(_history(base), SONGS).filter(pl.col("ds") <= cutoff)
    future_activity = _history(changed).with_columns(
        pl.when(pl.col("ds") > cutoff).then(pl.col(c) * 50).otherwise(pl.col(c)).alias(c)
        for c in ("downloads", "listeners")
    )
    two = build_features(future_activity, later_songs).filter(pl.col("ds") <= cutoff)
    assert one.equals(two)
    # and a history cut at the cutoff gives the same features as the full one
    cut = build_features(_history(base).filter(pl.col("ds") <= cutoff), SONGS)
    assert cut.equals(one)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="plays"):
        build_features(pl.DataFrame({"artist_id": ["a"], "ds": [D0]}), SONGS)
    with pytest.raises(ValueError, match="listeners"):
        build_features(_history({"a": [1]}).drop("listeners"), SONGS)
    with pytest.raises(ValueError, match="duplicate"):
        build_features(_history({"a": [1]}).vstack(_history({"a": [2]})), SONGS)
