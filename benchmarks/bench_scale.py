"""Forecasting cost against catalogue size: the full and the daily path on synthetic artist-daily frames.

Each size runs in its own worker process (peak RSS = that worker's VmHWM, benchmarks/memory.py).
The frames come straight from the synthetic generator's per artist-day intensities
(core/sample/synthetic.py: popularity, weekly cycle, trend, releases, bot bursts), drawn as
Poisson counts, so the event expansion and ingest are skipped: they are the data layer's cost,
measured by bench_ingest.py.

full path   every registered model's rolling-origin backtest on the plan of the history, then
            the champion (best mean f_norm) fitted on the whole history and its 60-day forecast;
daily path  the fitted champion observes the history plus one new day and forecasts 60 days.

    nice .venv/bin/python benchmarks/bench_scale.py [--sizes 1000x183,10000x365] [--epochs N]

--epochs N caps the neural models' epochs (default: their real defaults), for quick runs only.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

PLAYS_PER_ARTIST_DAY = 110  # the 20M actions over 1,000 artists x 183 days
TARGETS = {  # (artists, days): (full path s, daily path s, peak RSS MB)
    (1_000, 183): (300, 30, 3_000),
    (10_000, 365): (1_800, 120, 8_000),
    (100_000, 365): (10_800, 600, 16_000),
}


def synthetic_daily(
    artists: int, days: int, seed: int = 0, start: date = date(2015, 3, 1)
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(history, songs) as the models read them: one row per artist and day with plays, downloads and
    listeners, drawn from the synthetic generator's world (its artists, songs and intensities)."""
    from musictrend_dagster.core.sample.synthetic import _build_world, ids_to_str

    rows = artists * days * PLAYS_PER_ARTIST_DAY
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    world = _build_world(rng, artists, days, rows, start)
    volume = world.normal.copy()
    for a, d, _, factor in world.bursts:
        volume[int(a), int(d)] += factor * world.normal[int(a), int(d)]
    expected = volume / volume.sum(axis=0, keepdims=True) * (rows / days)
    draw = np.random.default_rng(np.random.SeedSequence([seed, 0xDA1]))
    plays = draw.poisson(expected)
    downloads = draw.binomial(plays, (world.p_play_dl - world.p_play)[:, None])
    listeners = draw.binomial(plays, draw.uniform(0.3, 0.8, artists)[:, None])
    artist_ids = ids_to_str(world.artist_tab)
    history = pl.DataFrame(
        {
            "artist_id": pl.Series(artist_ids).gather(np.repeat(np.arange(artists), days)),
            "ds": pl.date_range(start, start + timedelta(days=days - 1), eager=True).gather(
                np.tile(np.arange(days), artists)
            ),
            "plays": plays.reshape(-1),
            "downloads": downloads.reshape(-1),
            "listeners": listeners.reshape(-1),
        }
    ).filter(pl.col("plays") > 0)
    songs = world.songs.select("song_id", "artist_id", pl.col("publish_time").cast(pl.String).str.to_date("%Y%m%d"))
    return history, songs
