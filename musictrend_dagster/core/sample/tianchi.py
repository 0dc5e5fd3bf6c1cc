"""Expand the packaged real Tianchi season-1 aggregates back into the two official raw CSVs.

Counts are real and reproduced exactly (per song-day and per artist-day); only user ids,
hours and the songs of the one artist without song-level data are synthesised.
"""

from __future__ import annotations

import hashlib
import os
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from musictrend_dagster.core.sample.synthetic import (
    DIURNAL,
    SampleSummary,
    coprime_multipliers,
    day_slots,
    day_start_utc,
    encode_rows,
    hex_ids,
    ids_to_bytes,
    powerlaw_ranks,
    write_songs_csv,
)
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

FIRST_DAY, DAYS = date(2015, 3, 1), 183
TOTAL_ROWS = 5_652_232
# Users: a Zipf-weighted population (about the size of the season-1 user base); each artist
# ranks it in its own order, so heavy users of one artist are ordinary listeners of another.
POPULATION = 350_000
USER_EXPONENT = 1.05
# Spread (hours) of a song-day's actions around its real mean hour.
HOUR_SPREAD = 3.0
WRITE_ROWS = 1_000_000


def _read_packaged(name: str) -> pl.DataFrame:
    """Read one packaged aggregate through importlib.resources (works from a wheel too)."""
    res = resources.files("musictrend_dagster").joinpath("data", "tianchi_s1", name)
    with res.open("rb") as fh:
        return pl.read_csv(fh.read(), infer_schema=False)


_COUNTS = ["plays", "downloads", "collects"]


def _artist_daily() -> pl.DataFrame:
    return _read_packaged("artist_daily.csv").with_columns(
        pl.col([*_COUNTS, "distinct_users"]).cast(pl.Int64), pl.col("ds").str.to_date("%Y%m%d")
    )


def _songs() -> pl.DataFrame:
    return _read_packaged("songs.csv").with_columns(
        pl.col("publish_time", "song_init_plays", "language", "gender").cast(pl.Int64)
    )


def _song_daily() -> pl.DataFrame:
    return _read_packaged("song_daily_actions.csv.gz").with_columns(
        pl.col([*_COUNTS, "mean_gmt_create"]).cast(pl.Int64), pl.col("ds").str.to_date("%Y%m%d")
    )


def packaged_history() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The real artist-day totals (as the models' history frame: listeners = distinct users)
    and songs (publish_time as a date), sorted: what benchmarks and model tests fit on."""
    history = _artist_daily().rename({"distinct_users": "listeners"}).sort("artist_id", "ds")
    songs = _songs().with_columns(pl.col("publish_time").cast(pl.String).str.to_date("%Y%m%d")).sort("song_id")
    return history, songs


def _synthesise_artist_songs(
    rng: np.random.Generator, artist_id: str, days: pl.DataFrame, n_songs: int, songs: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Songs for an artist known only by daily totals, and a split of those totals over them.

    Catalogue songs get Zipf-like weights; a few songs carry the days where the artist's plays
    jump most, with a spike that decays, so the split looks like a real catalogue. Every
    synthesised song is dated BEFORE the log starts: its real release dates are unknown, and
    dating songs by later jumps would hand the models' release features the future.
    """
    days = days.sort("ds")
    plays = days["plays"].to_numpy().astype(np.float64)
    trailing = np.array([np.median(plays[max(0, i - 7) : i]) if i else plays[0] for i in range(len(plays))])
    jump = plays / np.maximum(trailing, 1.0)
    n_new = 5
    release_day = np.sort(np.argsort(-jump[7:], kind="stable")[:n_new] + 7)
    weight = (np.arange(n_songs) + 1.0) ** -1.1 * rng.lognormal(0.0, 0.5, n_songs)
    rng.shuffle(weight)
    release = np.full(n_songs, -1)
    release[-n_new:] = release_day
    weight[-n_new:] = weight.max() * rng.uniform(0.3, 1.0, n_new)
    t = np.arange(len(plays))[None, :]
    age = t - release[:, None]
    new = (release >= 0)[:, None]
    boost = np.where(
        new, np.where(age >= 0, 1.0 + rng.uniform(4, 12, (n_songs, 1)) * np.exp(-np.maximum(age, 0) / 7.0), 0.0), 1.0
    )
    p = weight[:, None] * boost
    p = (p / p.sum(axis=0)).T  # (days, songs)
    counts = np.stack(
        [rng.multinomial(days[c].to_numpy(), p) for c in ("plays", "downloads", "collects")], axis=-1
    )  # (days, songs, 3)

    song_ids = [hashlib.md5(f"musictrend-synthetic-song:{artist_id}:{i}".encode()).hexdigest() for i in range(n_songs)]
    first = FIRST_DAY.toordinal()
    age_days = rng.exponential(700.0, n_songs).astype(np.int64) + 1
    publish_ord = first - age_days
    init_plays = np.rint(rng.lognormal(9.0, 1.8, n_songs) * weight / weight.mean()).astype(np.int64)
    init_plays[release >= 0] //= 10
    # One language and gender for the artist, drawn from the real artists' mix.
    per_artist = (
        songs.group_by("artist_id").agg(pl.col("language").mode().first(), pl.col("gender").first()).sort("artist_id")
    )
    pick = int(rng.integers(0, per_artist.height))
    new_songs = pl.DataFrame(
        {
            "song_id": song_ids,
            "artist_id": [artist_id] * n_songs,
            "publish_time": [int(date.fromordinal(int(o)).strftime("%Y%m%d")) for o in publish_ord],
            "song_init_plays": init_plays,
            "language": [per_artist["language"][pick]] * n_songs,
            "gender": [per_artist["gender"][pick]] * n_songs,
        }
    )
    d_idx, s_idx = np.nonzero(counts.sum(axis=-1))
    ds = days["ds"].to_numpy()
    rows = pl.DataFrame(
        {
            "song_id": [song_ids[i] for i in s_idx],
            "ds": ds[d_idx],
            "plays": counts[d_idx, s_idx, 0],
            "downloads": counts[d_idx, s_idx, 1],
            "collects": counts[d_idx, s_idx, 2],
            "mean_gmt_create": np.full(len(d_idx), -1, dtype=np.int64),
        }
    ).with_columns(pl.col("ds").cast(pl.Date))
    return new_songs, rows


def _pick_users(rng: np.random.Generator, group_artist: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Exactly need[g] distinct users for every artist-day g, drawn Zipf-weighted without replacement.

    Sequential weighted sampling without replacement is the same as drawing with replacement and
    keeping first occurrences, so draw with some slack and top up the few groups left short.
    Returns the users flat, grouped by g in order of first draw (heaviest users tend to come first).
    """
    n_groups = len(need)
    mult = coprime_multipliers(rng, int(group_artist.max()) + 1, POPULATION)
    off = rng.integers(0, POPULATION, int(group_artist.max()) + 1)
    kept_key = np.empty(0, dtype=np.int64)
    kept_order = np.empty(0, dtype=np.int64)
    have = np.zeros(n_groups, dtype=np.int64)
    base = 0
    while True:
        short = need - have
        todo = np.nonzero(short > 0)[0]
        if len(todo) == 0:
            break
        draws = np.ceil(short[todo] * 1.5).astype(np.int64) + 8
        g = np.repeat(todo, draws)
        rank = powerlaw_ranks(rng.random(len(g)), POPULATION, USER_EXPONENT)
        user = (rank * mult[group_artist[g]] + off[group_artist[g]]) % POPULATION
        key = np.concatenate([kept_key, g * POPULATION + user])
        order = np.concatenate([kept_order, base + np.arange(len(g))])
        base += len(g)
        uniq, first = np.unique(key, return_index=True)
        # Keep each group's first `need` distinct users in draw order.
        sel = np.argsort((uniq // POPULATION) << 32 | order[first])
        uniq, ordr = uniq[sel], order[first][sel]
        grp = uniq // POPULATION
        start = np.searchsorted(grp, np.arange(n_groups))
        pos = np.arange(len(uniq)) - start[grp]
        keep = pos < need[grp]
        kept_key, kept_order = uniq[keep], ordr[keep]
        have = np.bincount(grp[keep], minlength=n_groups)
    return kept_key % POPULATION


def song_level(rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The real artist-day totals, the songs and the song-day counts (with the synthesised songs of
    the artist known only by totals), checked to add up to the artist-day totals exactly."""
    artist_daily, songs, song_daily = _artist_daily(), _songs(), _song_daily()

    # Artists with day totals but no song rows get synthetic songs; everyone else is checked.
    known = set(songs["artist_id"].unique())
    missing = sorted(set(artist_daily["artist_id"].unique()) - known)
    real_per_artist = songs.group_by("artist_id").len()["len"].to_numpy()
    n_synth = int(np.median(real_per_artist))
    for artist_id in missing:
        new_songs, new_rows = _synthesise_artist_songs(
            rng, artist_id, artist_daily.filter(pl.col("artist_id") == artist_id), n_synth, songs
        )
        songs = pl.concat([songs, new_songs])
        song_daily = pl.concat([song_daily, new_rows])
    songs = songs.sort("artist_id", "song_id")
    song_daily = song_daily.join(songs.select("song_id", "artist_id"), on="song_id", how="left")
    if song_daily["artist_id"].null_count():
        bad = song_daily.filter(pl.col("artist_id").is_null())["song_id"][0]
        raise ValueError(f"song_daily_actions.csv.gz: song {bad} is not in songs.csv")
    check = (
        song_daily.group_by("artist_id", "ds")
        .agg(pl.col("plays", "downloads", "collects").sum())
        .join(artist_daily, on=["artist_id", "ds"], how="full", coalesce=True, suffix="_artist")
        .fill_null(0)
        .filter(
            (pl.col("plays") != pl.col("plays_artist"))
            | (pl.col("downloads") != pl.col("downloads_artist"))
            | (pl.col("collects") != pl.col("collects_artist"))
        )
    )
    if check.height:
        raise ValueError(
            f"packaged aggregates disagree: song-day sums != artist_daily.csv at {check.row(0, named=True)}"
        )
    return artist_daily, songs, song_daily


def expand_tianchi_s1(out_dir: Path, seed: int = 0, progress: bool = True) -> SampleSummary:
    """Write mars_tianchi_user_actions.csv and mars_tianchi_songs.csv reproducing the real counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A1C]))
    bar = tqdm(total=TOTAL_ROWS + 4, unit="rows", unit_scale=True, desc="tianchi-s1", disable=not progress)
    bar.set_postfix_str("load")
    artist_daily, songs, song_daily = song_level(rng)
    bar.update(2)

    # One row per song-day, grouped by artist-day so each artist-day's actions are contiguous.
    bar.set_postfix_str("expand")
    calendar = [FIRST_DAY + timedelta(days=i) for i in range(DAYS)]
    artist_ids = artist_daily["artist_id"].unique().sort()
    artist_daily = artist_daily.with_columns(
        a=pl.col("artist_id").cast(pl.Enum(artist_ids)).to_physical().cast(pl.Int64),
        d=(pl.col("ds") - pl.lit(FIRST_DAY)).dt.total_days(),
    ).sort("a", "d")
    song_index = {s: i for i, s in enumerate(songs["song_id"])}
    song_daily = song_daily.with_columns(
        a=pl.col("artist_id").cast(pl.Enum(artist_ids)).to_physical().cast(pl.Int64),
        d=(pl.col("ds") - pl.lit(FIRST_DAY)).dt.total_days(),
        s=pl.col("song_id").replace_strict(song_index, return_dtype=pl.Int64),
    ).sort("a", "d", "s")
    counts = song_daily.select("plays", "downloads", "collects").to_numpy().astype(np.int64)
    per_sd = counts.sum(axis=1)
    sd_of_row = np.repeat(np.repeat(np.arange(len(per_sd)), 3), counts.ravel())
    action = np.repeat(np.tile(np.array([1, 2, 3], dtype=np.uint8), len(per_sd)), counts.ravel())
    n = len(sd_of_row)
    song = song_daily["s"].to_numpy()[sd_of_row]
    day = song_daily["d"].to_numpy()[sd_of_row]
    group_of_sd = song_daily["a"].to_numpy() * DAYS + song_daily["d"].to_numpy()
    group = group_of_sd[sd_of_row]

    # Hours: single-action song-days keep their real hour (the mean is exact); larger ones are
    # spread around the real mean with the spread re-centred; synthetic songs follow DIURNAL.
    starts = np.array([day_start_utc(d) for d in calendar], dtype=np.int64)
    mean_gmt = song_daily["mean_gmt_create"].to_numpy()
    mean_hour = np.where(mean_gmt >= 0, (mean_gmt - starts[song_daily["d"].to_numpy()]) / 3600.0, np.nan)
    noise = rng.normal(0.0, HOUR_SPREAD, n)
    sd_start = np.concatenate([[0], np.cumsum(per_sd)[:-1]])
    nz = per_sd > 0
    centre = np.zeros(len(per_sd))
    centre[nz] = np.add.reduceat(noise, sd_start[nz]) / per_sd[nz]
    noise -= centre[sd_of_row]
    noise[(per_sd == 1)[sd_of_row]] = 0.0
    hour_f = mean_hour[sd_of_row] + noise
    synth = np.isnan(hour_f)
    hour = np.empty(n, dtype=np.int64)
    hour[~synth] = np.clip(np.rint(hour_f[~synth]), 0, 23)
    hour[synth] = np.minimum(np.searchsorted(np.cumsum(DIURNAL), rng.random(int(synth.sum())), side="right"), 23)
    bar.update(1)

    # Users: exactly distinct_users per artist-day, each with at least one action there; the
    # remaining actions go mostly to the group's first (heaviest) users.
    bar.set_postfix_str("users")
    need = np.zeros(int(cast(int, artist_daily["a"].max()) + 1) * DAYS, dtype=np.int64)
    need[artist_daily["a"].to_numpy() * DAYS + artist_daily["d"].to_numpy()] = artist_daily["distinct_users"].to_numpy()
    total = np.bincount(group, minlength=len(need))
    if (total < need).any():
        g = int(np.argmax(total < need))
        raise ValueError(
            f"artist_daily.csv: {artist_ids[g // DAYS]} on {calendar[g % DAYS]} has fewer actions than distinct_users"
        )
    chosen = _pick_users(rng, np.arange(len(need)) // DAYS, need)
    chosen_start = np.concatenate([[0], np.cumsum(need)[:-1]])
    within = np.argsort(group + rng.random(n))  # a random order of each group's actions
    group_start = np.concatenate([[0], np.cumsum(total)[:-1]])
    pos = np.empty(n, dtype=np.int64)
    pos[within] = np.arange(n) - group_start[group[within]]
    slot = np.where(pos < need[group], pos, (need[group] * rng.random(n) ** 3).astype(np.int64))
    user = chosen[chosen_start[group] + slot]
    bar.update(1)

    # A log in time order; ties broken by user, song and action for stable bytes.
    bar.set_postfix_str("write")
    # Packed sort key (slot 13 bits | user 19 | song 15 | action 2): one argsort instead of a lexsort.
    order = np.argsort(((day * 24 + hour) << 36) | (user << 17) | (song << 2) | action.astype(np.int64))
    user_tab = hex_ids(rng.integers(0, 256, (POPULATION, 16), dtype=np.uint8))
    song_tab = ids_to_bytes(songs["song_id"], "songs.csv")
    slot_gmt, slot_ds = day_slots(calendar)
    actions_file = out_dir / f"{ACTIONS_PREFIX}.csv"
    tmp = actions_file.with_name(actions_file.name + ".partial")
    with open(tmp, "wb") as fh:
        for b0 in range(0, n, WRITE_ROWS):
            idx = order[b0 : b0 + WRITE_ROWS]
            fh.write(
                encode_rows(
                    user_tab, user[idx], song_tab, song[idx], slot_gmt, slot_ds, day[idx] * 24 + hour[idx], action[idx]
                )
            )
            bar.update(len(idx))
    os.replace(tmp, actions_file)
    songs_file = out_dir / SONGS_FILE
    write_songs_csv(songs_file, songs)
    bar.close()
    return SampleSummary(actions_file, songs_file, n, len(artist_ids), songs.height, calendar[0], calendar[-1])
