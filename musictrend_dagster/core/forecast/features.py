"""Per artist and day model features, computed with polars from the artist_daily and songs tables.

Every feature at day d uses days <= d only (trailing windows, release dates <= d), so a
model fed features up to an origin never sees the test window.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import cast

import numpy as np
import polars as pl

PLAYS_FEATURES = ["plays", "plays_mean_3", "plays_var_3"]
# Other activity of the same artist-day that the learned models read beside plays.
ACTIVITY_INPUTS = ["downloads", "listeners"]
ACTIVITY_FEATURES = ["downloads_per_play_7d", "downloads_trend_7_28", "listeners_per_play_7d", "listeners_trend_7_28"]
CALENDAR_FEATURES = ["weekday", "is_weekend", "day_index"]
RELEASE_FEATURES = ["releases_today", "releases_7d", "releases_28d", "days_since_release"]
FEATURE_COLUMNS = PLAYS_FEATURES + ACTIVITY_INPUTS + ACTIVITY_FEATURES + CALENDAR_FEATURES + RELEASE_FEATURES
# The history frame every model reads: one row per artist and day (the baselines use plays only).
HISTORY_COLUMNS = ["artist_id", "ds", "plays", *ACTIVITY_INPUTS]


def require_columns(frame: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {frame.columns}")


def _releases(days: pl.DataFrame, songs: pl.DataFrame) -> pl.DataFrame:
    """Release counts over trailing windows via cumulative counts: cum(d) - cum(d - n)."""
    cum = (
        songs.select("artist_id", pl.col("publish_time").cast(pl.Date).alias("pub"))
        .drop_nulls()
        .group_by("artist_id", "pub")
        .agg(n=pl.len())
        .sort("artist_id", "pub")
        .with_columns(cum=pl.col("n").cum_sum().over("artist_id"))
        .with_columns(pl.col("pub").alias("last_pub"))
        .select("artist_id", "pub", "last_pub", "n", pl.col("cum").cast(pl.Int64))
    )

    def cum_at(shift_days: int, name: str, keep_last: bool = False) -> pl.DataFrame:
        probe = days.with_columns(key=pl.col("ds") - pl.duration(days=shift_days)).sort("key")
        # sorted by key, hence within each artist too; polars cannot verify that with `by`
        joined = probe.join_asof(
            cum, left_on="key", right_on="pub", by="artist_id", strategy="backward", check_sortedness=False
        )
        cols = [pl.col("cum").fill_null(0).alias(name)]
        if keep_last:
            cols.append(pl.col("last_pub"))
        return joined.select("artist_id", "ds", *cols)

    today = days.join(
        cum.select("artist_id", pl.col("pub").alias("ds"), pl.col("n").cast(pl.Int64).alias("releases_today")),
        on=["artist_id", "ds"],
        how="left",
    ).with_columns(pl.col("releases_today").fill_null(0))
    out = (
        today.join(cum_at(0, "cum_0", keep_last=True), on=["artist_id", "ds"])
        .join(cum_at(7, "cum_7"), on=["artist_id", "ds"])
        .join(cum_at(28, "cum_28"), on=["artist_id", "ds"])
    )
    return out.select(
        "artist_id",
        "ds",
        "releases_today",
        releases_7d=pl.col("cum_0") - pl.col("cum_7"),
        releases_28d=pl.col("cum_0") - pl.col("cum_28"),
        # null when the artist has never released a song up to that day
        days_since_release=(pl.col("ds") - pl.col("last_pub")).dt.total_days(),
    )


def _activity() -> list[pl.Expr]:
    """Log ratios over trailing 7 / 28 calendar days (d-6..d): how many downloads and distinct
    listeners stand behind the plays, and whether they are rising. A one-day bot burst
    inflates plays but not listeners; downloads signal intent before plays follow."""

    def total(col: str, days: int) -> pl.Expr:
        return pl.col(col).rolling_sum_by("ds", f"{days}d").over("artist_id")

    plays_7d = total("plays", 7)
    out = []
    for col in ACTIVITY_INPUTS:
        out.append(((total(col, 7) + 1) / (plays_7d + 1)).log().alias(f"{col}_per_play_7d"))
        out.append(((4 * total(col, 7) + 1) / (total(col, 28) + 1)).log().alias(f"{col}_trend_7_28"))
    return out


def build_features(history: pl.DataFrame, songs: pl.DataFrame) -> pl.DataFrame:
    """One row per (artist_id, ds) of `history` with FEATURE_COLUMNS, sorted by artist and day.

    plays_mean_3 / plays_var_3: trailing window d-2..d (population variance); the first
    days of an artist use the days that exist. weekday: 1 = Monday .. 7 = Sunday.
    day_index: days since the first day of `history`. Release features count songs with
    publish_time <= d (today, in (d-7, d], in (d-28, d]) and the days since the latest one.
    Activity features: see `_activity`.
    """
    require_columns(history, HISTORY_COLUMNS, "history")
    require_columns(songs, ["artist_id", "publish_time"], "songs")
    if history.is_empty():
        raise ValueError("history is empty: no features to build")
    dupes = history.group_by("artist_id", "ds").len().filter(pl.col("len") > 1)
    if dupes.height:
        row = dupes.row(0, named=True)
        raise ValueError(
            f"history has {dupes.height} duplicate (artist_id, ds) rows, e.g. {row['artist_id']} {row['ds']}"
        )
    base = history.select(
        "artist_id", pl.col("ds").cast(pl.Date), pl.col("plays", *ACTIVITY_INPUTS).cast(pl.Float64)
    ).sort("artist_id", "ds")
    first_day = base["ds"].min()
    plays = base.with_columns(
        plays_mean_3=pl.col("plays").rolling_mean(3, min_samples=1).over("artist_id"),
        plays_var_3=pl.col("plays").rolling_var(3, min_samples=1, ddof=0).over("artist_id"),
        weekday=pl.col("ds").dt.weekday().cast(pl.Int8),
        is_weekend=(pl.col("ds").dt.weekday() >= 6).cast(pl.Int8),
        day_index=(pl.col("ds") - pl.lit(first_day)).dt.total_days().cast(pl.Int32),
    ).with_columns(_activity())
    releases = _releases(base.select("artist_id", "ds"), songs.with_columns(pl.col("artist_id").cast(pl.String)))
    return (
        plays.join(releases, on=["artist_id", "ds"], how="left")
        .select("artist_id", "ds", *FEATURE_COLUMNS)
        .sort("artist_id", "ds")
    )


def plays_matrix(history: pl.DataFrame, since: date | None = None) -> tuple[list[str], date, np.ndarray]:
    """(artist ids, first day, float matrix artists x days); missing artist-days count as 0 plays.

    The matrix starts on `since` when given (the history holds no earlier day), else on the history's
    first day: a read of the last days keeps its calendar even when nobody played on its first day."""
    require_columns(history, ["artist_id", "ds", "plays"], "history")
    if history.is_empty():
        raise ValueError("history is empty: nothing to fit")
    frame = history.select("artist_id", pl.col("ds").cast(pl.Date), pl.col("plays").cast(pl.Float64))
    if frame["plays"].is_null().any() or (frame["plays"] < 0).any():
        raise ValueError("history has null or negative plays")
    earliest, last = cast(date, frame["ds"].min()), cast(date, frame["ds"].max())
    first = since or earliest
    if earliest < first:
        raise ValueError(f"history starts before {first}, the first day of its matrix")
    artists = sorted(frame["artist_id"].unique().to_list())
    n_days = (last - first).days + 1
    matrix = np.zeros((len(artists), n_days))
    # each row's artist as its index in `artists` (an Enum's codes follow its categories' order)
    rows = frame["artist_id"].cast(pl.String).cast(pl.Enum([str(a) for a in artists])).to_physical().to_numpy()
    cols = (frame["ds"] - first).dt.total_days().to_numpy()
    np.add.at(matrix, (rows, cols), frame["plays"].to_numpy())
    return artists, first, matrix


def dense_features(history: pl.DataFrame, songs: pl.DataFrame) -> tuple[list[str], date, np.ndarray, pl.DataFrame]:
    """`plays_matrix`, plus the feature frame of that zero-filled calendar (artist-major, day order)."""
    require_columns(history, HISTORY_COLUMNS, "history")
    artists, first, matrix = plays_matrix(history)
    n_days = matrix.shape[1]
    dense = pl.DataFrame(
        {
            "artist_id": pl.Series(artists).gather(np.repeat(np.arange(len(artists)), n_days)),
            "ds": pl.Series([first + timedelta(days=k) for k in range(n_days)], dtype=pl.Date).gather(
                np.tile(np.arange(n_days), len(artists))
            ),
            "plays": matrix.reshape(-1),
        }
    )
    activity = history.select("artist_id", pl.col("ds").cast(pl.Date), *ACTIVITY_INPUTS)
    dense = dense.join(activity, on=["artist_id", "ds"], how="left").with_columns(pl.col(ACTIVITY_INPUTS).fill_null(0))
    return artists, first, matrix, build_features(dense, songs)
