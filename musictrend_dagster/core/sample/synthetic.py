"""Synthetic raw logs of any size in the official Tianchi format, streamed in bounded memory.

Also home of the raw-format primitives (fixed-width row encoder, hex ids, diurnal profile,
SampleSummary) that the Tianchi expansion and the next-day writer share.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

# Every raw action row has the same width: 32 hex user, 32 hex song, 10-digit unix seconds,
# one-digit action, yyyymmdd, four commas and a newline. Fixed width lets numpy build the CSV
# bytes directly, several times faster than any generic CSV writer.
ROW_BYTES = 88
_USER, _SONG, _GMT, _ACTION, _DS = slice(0, 32), slice(33, 65), slice(66, 76), 77, slice(79, 87)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# Unix seconds keep 10 digits from 2001-09-09 to 2286-11-20.
_MIN_DAY, _MAX_DAY = date(2001, 9, 10), date(2286, 11, 19)
UTC8 = timezone(timedelta(hours=8))

# Actions per local hour (UTC+8) in the real log: counts of single-action song-days of the
# packaged Tianchi season-1 aggregates, whose mean_gmt_create is the exact hour.
DIURNAL = np.array(
    [
        7025,
        4527,
        2613,
        1809,
        1676,
        1685,
        3508,
        5644,
        8303,
        7763,
        7599,
        7907,
        7222,
        7935,
        8367,
        7770,
        8067,
        9927,
        8859,
        8897,
        9103,
        9548,
        10002,
        9815,
    ],
    dtype=np.float64,
)
DIURNAL /= DIURNAL.sum()


@dataclass(frozen=True)
class SampleSummary:
    """What a sample writer produced, for the CLI to print and tests to check."""

    actions_file: Path
    songs_file: Path
    rows: int
    artists: int
    songs: int
    first_day: date
    last_day: date


def hex_ids(raw: np.ndarray) -> np.ndarray:
    """(n, 16) random bytes -> (n, 32) ASCII lowercase hex, the md5 look of Tianchi ids."""
    out = np.empty((raw.shape[0], 32), dtype=np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 15]
    return out


def ids_to_bytes(ids: list[str] | pl.Series, what: str) -> np.ndarray:
    """Known 32-char ids -> (n, 32) uint8 table for the row encoder."""
    ids = list(ids)
    bad = next((i for i in ids if i is None or len(i) != 32 or not i.isascii()), "")
    if bad != "":
        raise ValueError(f"{what}: id {bad!r} is not a 32-character ASCII id")
    return np.frombuffer("".join(ids).encode("ascii"), dtype=np.uint8).reshape(-1, 32).copy()


def ids_to_str(table: np.ndarray) -> list[str]:
    """(n, 32) uint8 id table -> Python strings (for the small songs table)."""
    return [bytes(r).decode("ascii") for r in table]


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative ints -> (n, width) ASCII digits, zero-padded."""
    values = np.asarray(values, dtype=np.int64)
    out = np.empty((values.shape[0], width), dtype=np.uint8)
    for k in range(width):
        out[:, width - 1 - k] = 48 + (values // 10**k) % 10
    return out


def day_start_utc(day: date) -> int:
    """Unix seconds of local midnight (UTC+8) of a Tianchi Ds."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC8).timestamp())


def check_day_range(first: date, last: date) -> None:
    """The fixed-width encoder needs 10-digit unix seconds."""
    if first < _MIN_DAY or last > _MAX_DAY:
        raise ValueError(f"days must lie within {_MIN_DAY}..{_MAX_DAY}, got {first}..{last}")


def encode_rows(
    user_tab: np.ndarray,
    user_idx: np.ndarray,
    song_tab: np.ndarray,
    song_idx: np.ndarray,
    slot_gmt: np.ndarray,
    slot_ds: np.ndarray,
    slot_idx: np.ndarray,
    action: np.ndarray,
) -> bytes:
    """Build the CSV bytes of n action rows from id tables and per-row indices.

    A slot is one (day, hour): slot_gmt holds its 10 gmt digits, slot_ds its 8 Ds digits.
    """
    n = user_idx.shape[0]
    out = np.empty((n, ROW_BYTES), dtype=np.uint8)
    out[:, _USER] = user_tab[user_idx]
    out[:, _SONG] = song_tab[song_idx]
    out[:, _GMT] = slot_gmt[slot_idx]
    out[:, _ACTION] = 48 + np.asarray(action, dtype=np.uint8)
    out[:, _DS] = slot_ds[slot_idx]
    out[:, [32, 65, 76, 78]] = ord(",")
    out[:, 87] = ord("\n")
    return out.tobytes()


def day_slots(days: list[date]) -> tuple[np.ndarray, np.ndarray]:
    """Digit tables for every (day, hour) slot, slot = day_index * 24 + hour."""
    starts = np.array([day_start_utc(d) for d in days], dtype=np.int64)
    gmt = (starts[:, None] + 3600 * np.arange(24)[None, :]).ravel()
    ds = np.repeat([int(d.strftime("%Y%m%d")) for d in days], 24)
    return digits(gmt, 10), digits(ds, 8)


def write_songs_csv(path: Path, songs: pl.DataFrame) -> None:
    """Official songs table, header-less, written atomically."""
    tmp = path.with_name(path.name + ".partial")
    songs.select("song_id", "artist_id", "publish_time", "song_init_plays", "language", "gender").write_csv(
        tmp, include_header=False
    )
    os.replace(tmp, path)


def powerlaw_ranks(u: np.ndarray, n: int, exponent: float) -> np.ndarray:
    """Inverse-CDF draw of ranks 0..n-1 with P(rank r) ~ (r+1)^-exponent (continuous approx)."""
    a = 1.0 - exponent
    x = (1.0 + u * ((n + 1.0) ** a - 1.0)) ** (1.0 / a)
    return np.minimum(x.astype(np.int64) - 1, n - 1).clip(0)


def coprime_multipliers(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """Per-artist multipliers for the user permutation r -> (r*m + c) mod n."""
    out = np.empty(k, dtype=np.int64)
    for i in range(k):
        m = int(rng.integers(1, n))
        while math.gcd(m, n) != 1:
            m = int(rng.integers(1, n))
        out[i] = m
    return out


# Weekday factors Monday..Sunday: listening rises at the weekend.
_WEEKLY = np.array([0.95, 0.93, 0.94, 0.96, 1.02, 1.12, 1.08])
_LANGUAGES = np.array([1, 2, 3, 4, 11, 100, 0, 12])
_LANGUAGE_P = np.array([1917, 2676, 755, 1156, 1491, 417, 19, 28], dtype=np.float64)
_USER_EXPONENT = 1.1
_BOTS_PER_BURST = 8


@dataclass
class _World:
    """Everything fixed before streaming: artists, songs, users, per-artist-day intensity."""

    artist_tab: np.ndarray  # (A, 32)
    song_tab: np.ndarray  # (S, 32)
    song_artist: np.ndarray  # (S,)
    song_weight: np.ndarray  # (S,) base popularity
    song_release: np.ndarray  # (S,) day index of release inside the window, -1 for catalogue
    release_amp: np.ndarray  # (S,)
    release_tau: np.ndarray  # (S,)
    songs: pl.DataFrame
    user_tab: np.ndarray  # (P + bots, 32)
    population: int
    user_mult: np.ndarray  # (A,)
    user_off: np.ndarray  # (A,)
    p_play: np.ndarray  # (A,)
    p_play_dl: np.ndarray  # (A,)
    normal: np.ndarray  # (A, D) expected normal volume
    bursts: np.ndarray  # (B, 4): artist, day, song, bot-volume factor

    def song_weights(self, d: int) -> np.ndarray:
        """Song weights on day d: base popularity, zero before release, decaying launch spike."""
        age = d - self.song_release
        new = self.song_release >= 0
        boost = np.where(
            new, np.where(age >= 0, 1.0 + self.release_amp * np.exp(-np.maximum(age, 0) / self.release_tau), 0.0), 1.0
        )
        return self.song_weight * boost


def _build_world(rng: np.random.Generator, artists: int, days: int, rows: int, start: date) -> _World:
    A, D = artists, days
    artist_tab = hex_ids(rng.integers(0, 256, (A, 16), dtype=np.uint8))
    popularity = rng.pareto(1.1, A) + 1.0
    n_songs = np.clip(np.rint(rng.lognormal(math.log(40), 0.9, A)), 3, 500).astype(np.int64)
    S = int(n_songs.sum())
    song_artist = np.repeat(np.arange(A), n_songs)
    first = np.concatenate([[0], np.cumsum(n_songs)[:-1]])
    rank = np.arange(S) - first[song_artist]
    song_weight = (rank + 1.0) ** -1.1 * rng.lognormal(0.0, 0.5, S)
    # The last few songs of each artist are new releases inside the window.
    n_new = np.minimum(rng.poisson(D / 45.0, A), n_songs - 1)
    is_new = rank >= (n_songs - n_new)[song_artist]
    artist_max = np.zeros(A)
    np.maximum.at(artist_max, song_artist, np.where(is_new, 0.0, song_weight))
    song_weight = np.where(is_new, artist_max[song_artist] * rng.uniform(0.3, 1.0, S), song_weight)
    song_release = np.where(is_new, rng.integers(0, D, S), -1)
    release_amp = rng.uniform(4.0, 12.0, S)
    release_tau = rng.uniform(4.0, 15.0, S)
    age_days = rng.exponential(900.0, S).astype(np.int64) + 1
    start_ord = start.toordinal()
    publish_ord = np.where(
        is_new, start_ord + song_release, np.maximum(start_ord - age_days, date(1990, 1, 1).toordinal())
    )
    publish = [int(date.fromordinal(int(o)).strftime("%Y%m%d")) for o in publish_ord]
    init_plays = np.rint(rng.lognormal(8.0, 2.0, S) * song_weight / song_weight.mean()).astype(np.int64)
    init_plays[is_new] //= 10
    language = rng.choice(_LANGUAGES, A, p=_LANGUAGE_P / _LANGUAGE_P.sum())
    gender = rng.choice([1, 2, 3], A, p=[0.38, 0.46, 0.16])
    song_tab = hex_ids(rng.integers(0, 256, (S, 16), dtype=np.uint8))
    artist_str = ids_to_str(artist_tab)
    songs = pl.DataFrame(
        {
            "song_id": ids_to_str(song_tab),
            "artist_id": [artist_str[a] for a in song_artist],
            "publish_time": publish,
            "song_init_plays": init_plays,
            "language": language[song_artist],
            "gender": gender[song_artist],
        }
    ).sort("artist_id", "song_id")

    # Per artist-day volume: popularity x weekly cycle x slow trend x noise x release mass.
    t = np.arange(D)
    weekday = np.array([(start + timedelta(days=int(i))).weekday() for i in t])
    amp = rng.uniform(0.5, 1.5, A)[:, None]
    weekly = 1.0 + amp * (_WEEKLY[weekday][None, :] - 1.0)
    slope = rng.normal(0.0, 0.5, A)[:, None]
    wave = rng.uniform(0.0, 0.25, A)[:, None] * np.sin(
        2 * np.pi * t[None, :] / rng.uniform(60, 240, A)[:, None] + rng.uniform(0, 2 * np.pi, A)[:, None]
    )
    trend = np.exp(slope * (t[None, :] / max(D - 1, 1) - 0.5) + wave)
    noise = np.exp(rng.normal(0.0, 0.1, (A, D)))
    catalogue = np.bincount(song_artist, weights=np.where(is_new, 0.0, song_weight), minlength=A)
    world = _World(
        artist_tab=artist_tab,
        song_tab=song_tab,
        song_artist=song_artist,
        song_weight=song_weight,
        song_release=song_release,
        release_amp=release_amp,
        release_tau=release_tau,
        songs=songs,
        user_tab=np.empty((0, 32), np.uint8),
        population=0,
        user_mult=np.empty(0, np.int64),
        user_off=np.empty(0, np.int64),
        p_play=np.empty(0),
        p_play_dl=np.empty(0),
        normal=np.empty((A, D)),
        bursts=np.empty((0, 4)),
    )
    release_mass = (
        np.stack([np.bincount(song_artist, weights=world.song_weights(d), minlength=A) for d in range(D)], axis=1)
        / catalogue[:, None]
    )
    world.normal = (popularity / popularity.sum())[:, None] * weekly * trend * noise * release_mass

    # Occasional one-day bot bursts: a handful of accounts hammer one song of one artist.
    n_bursts = int(rng.poisson(A * D / 400.0))
    b_artist = rng.integers(0, A, n_bursts)
    b_day = rng.integers(0, D, n_bursts)
    top_song = np.lexsort((-np.where(is_new, 0.0, song_weight), song_artist))[first]
    b_song = top_song[b_artist]
    world.bursts = np.column_stack([b_artist, b_day, b_song, rng.uniform(3.0, 11.0, n_bursts)])

    # Users: a Zipf-weighted population, each artist ranking it in its own order.
    population = int(min(max(rows // 25, 2_000), 1_000_000))
    world.population = population
    world.user_tab = hex_ids(rng.integers(0, 256, (population + _BOTS_PER_BURST * n_bursts, 16), dtype=np.uint8))
    world.user_mult = coprime_multipliers(rng, A, population)
    world.user_off = rng.integers(0, population, A)
    p_dl = 0.08 * rng.lognormal(0.0, 0.3, A)
    p_col = 0.02 * rng.lognormal(0.0, 0.3, A)
    world.p_play = 1.0 - p_dl - p_col
    world.p_play_dl = 1.0 - p_col
    return world


def generate_synthetic(
    out_dir: Path,
    artists: int = 50,
    days: int = 183,
    rows: int = 1_000_000,
    seed: int = 0,
    start: date = date(2015, 3, 1),
    chunk_rows: int = 2_000_000,
    progress: bool = True,
) -> SampleSummary:
    """Write a synthetic raw log of exactly `rows` actions plus its songs table.

    Every row consumes its own fixed slice of the day's random stream, so the bytes do not
    depend on chunk_rows, which only bounds how many rows are held in memory at once.
    """
    if artists < 1 or days < 1 or rows < 1 or chunk_rows < 1:
        raise ValueError(
            f"artists, days, rows and chunk_rows must be >= 1, got {artists}, {days}, {rows}, {chunk_rows}"
        )
    last = start + timedelta(days=days - 1)
    check_day_range(start, last)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    world = _build_world(rng, artists, days, rows, start)
    A, P = artists, world.population
    songs_file = out_dir / SONGS_FILE
    write_songs_csv(songs_file, world.songs)

    bursts = world.bursts
    bot_volume = np.zeros((A, days))
    burst_of_day: list[list[int]] = [[] for _ in range(days)]
    for k, (a, d, _, f) in enumerate(bursts):
        bot_volume[int(a), int(d)] += f * world.normal[int(a), int(d)]
        burst_of_day[int(d)].append(k)
    day_volume = world.normal.sum(axis=0) + bot_volume.sum(axis=0)
    day_rows = rng.multinomial(rows, day_volume / day_volume.sum())
    calendar = [start + timedelta(days=i) for i in range(days)]
    slot_gmt, slot_ds = day_slots(calendar)

    song_lo = np.searchsorted(world.song_artist, np.arange(A), side="left")
    song_hi = np.searchsorted(world.song_artist, np.arange(A), side="right") - 1
    actions_file = out_dir / f"{ACTIONS_PREFIX}.csv"
    tmp = actions_file.with_name(actions_file.name + ".partial")
    with (
        open(tmp, "wb") as fh,
        tqdm(total=rows, unit="rows", unit_scale=True, desc="synthetic", disable=not progress) as bar,
    ):
        for d in range(days):
            n = int(day_rows[d])
            if n == 0:
                continue
            drng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7, d]))
            hour_end = np.cumsum(drng.multinomial(n, DIURNAL))
            day_bursts = burst_of_day[d]
            stream_w = np.concatenate(
                [world.normal[:, d], [bursts[k, 3] * world.normal[int(bursts[k, 0]), d] for k in day_bursts]]
            )
            stream_cdf = np.cumsum(stream_w) / stream_w.sum()
            stream_artist = np.concatenate([np.arange(A), bursts[day_bursts, 0].astype(np.int64)])
            w = world.song_weights(d)
            tot = np.bincount(world.song_artist, weights=w, minlength=A)
            before = (np.cumsum(tot) - tot)[world.song_artist]
            song_cdf = world.song_artist + (np.cumsum(w) - before) / tot[world.song_artist]
            for b0 in range(0, n, chunk_rows):
                m = min(chunk_rows, n - b0)
                u = drng.random((m, 4))
                stream = np.minimum(np.searchsorted(stream_cdf, u[:, 0], side="right"), len(stream_w) - 1)
                bot = stream >= A
                artist = stream_artist[stream]
                song = np.searchsorted(song_cdf, artist + u[:, 1], side="right")
                song = np.clip(song, song_lo[artist], song_hi[artist])
                action = 1 + (u[:, 2] >= world.p_play[artist]).astype(np.uint8) + (u[:, 2] >= world.p_play_dl[artist])
                user = (
                    powerlaw_ranks(u[:, 3], P, _USER_EXPONENT) * world.user_mult[artist] + world.user_off[artist]
                ) % P
                if bot.any():
                    k = np.asarray(day_bursts, dtype=np.int64)[stream[bot] - A]
                    song[bot] = bursts[k, 2].astype(np.int64)
                    action[bot] = 1
                    user[bot] = P + _BOTS_PER_BURST * k + (u[bot, 3] * _BOTS_PER_BURST).astype(np.int64)
                hour = np.searchsorted(hour_end, np.arange(b0, b0 + m), side="right")
                fh.write(
                    encode_rows(world.user_tab, user, world.song_tab, song, slot_gmt, slot_ds, d * 24 + hour, action)
                )
                bar.update(m)
    os.replace(tmp, actions_file)
    return SampleSummary(actions_file, songs_file, rows, A, world.songs.height, start, last)
