"""The real season-1 data in the shapes users have, each with its ``musictrend.toml``.

``musictrend sample --source tianchi-s1 --as SHAPE --out DIR``:

- ``events-csv``: a folder of monthly CSV logs ``listener,track,played_at,event`` (ISO time with
  +08:00, event names play/download/collect) and a catalogue ``catalogue.csv`` (track, singer, released);
- ``events-parquet``: a Hive-partitioned folder ``dt=YYYY-MM-DD/part-0.parquet`` with typed
  columns ``uid, sid, singer, ts`` (TIMESTAMP WITH TIME ZONE), ``action``: the artist in the log;
  ``catalogue.parquet`` (sid, singer, released DATE) gives the publish dates;
- ``daily-artist``: ``plays.csv``, ``artist_id,gmt_date,artist_moving,artist_downloads,artist_collects,
  artist_listeners`` (yyyymmdd days) and ``songs.csv`` (song, artist, released): the publish dates;
- ``daily-song``: ``song_plays.csv.gz``, ``song,date,streams,downloads,likes`` (ISO days) and ``songs.csv``.

Each carries the songs' publish dates, so each gives the competition files' model features: every
one exactly but ``daily-song``'s listeners (per-song distinct listeners do not add up; 0 there).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from musictrend_dagster.core.data.lake import literal_path
from musictrend_dagster.core.sample.tianchi import expand_tianchi_s1, song_level
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

SHAPES = ("events-csv", "events-parquet", "daily-artist", "daily-song")
_EVENT = "CASE c4 WHEN '1' THEN 'play' WHEN '2' THEN 'download' ELSE 'collect' END"
_ISO = "strftime(make_timestamp(CAST(c3 AS BIGINT) * 1000000 + 28800000000), '%Y-%m-%dT%H:%M:%S') || '+08:00'"

TOMLS = {
    "events-csv": """\
# The real tianchi-s1 log as monthly CSV files with their own column names.
[source]
kind = "events"
path = "events"
user = "listener"
song = "track"
time = "played_at"
time_format = "iso"
timezone = "Asia/Shanghai"
action = "event"
plays_when = ["play"]
downloads_when = ["download"]
collects_when = ["collect"]

[catalogue]
path = "catalogue.csv"
song = "track"
artist = "singer"
publish = "released"
publish_format = "%Y%m%d"

[forecast]
horizon = 60
""",
    "events-parquet": """\
# The real tianchi-s1 log as Hive-partitioned Parquet (dt=YYYY-MM-DD/part-0.parquet), the artist in the log.
[source]
kind = "events"
path = "events"
user = "uid"
song = "sid"
artist = "singer"
time = "ts"
timezone = "Asia/Shanghai"
action = "action"
plays_when = ["play"]
downloads_when = ["download"]
collects_when = ["collect"]

# The artist is in the log; the catalogue gives the songs' publish dates (the release features).
[catalogue]
path = "catalogue.parquet"
song = "sid"
artist = "singer"
publish = "released"

[forecast]
horizon = 60
""",
    "daily-artist": """\
# Daily counts per artist, yyyymmdd days: plays, and the downloads, collects and distinct
# listeners the learned models also read (each optional: absent, it is 0).
[source]
kind = "daily"
path = "plays.csv"
series = "artist_id"
series_is = "artist"           # the series are artists; the catalogue only gives their songs' publish dates
day = "gmt_date"
day_format = "%Y%m%d"
plays = "artist_moving"
downloads = "artist_downloads"
collects = "artist_collects"
listeners = "artist_listeners"

[catalogue]
path = "songs.csv"
song = "song"
artist = "artist"
publish = "released"
publish_format = "%Y%m%d"
""",
    "daily-song": """\
# Daily counts per song, and a catalogue of songs to artists: forecast per artist
# (series_level = "song" forecasts every song instead). No listeners: per-song distinct
# listeners do not add up to an artist's (a listener of two songs counts once).
[source]
kind = "daily"
path = "song_plays.csv.gz"
series = "song"
day = "date"
plays = "streams"
downloads = "downloads"
collects = "likes"

[catalogue]
path = "songs.csv"
song = "song"
artist = "artist"
publish = "released"
publish_format = "%Y%m%d"

[forecast]
series_level = "artist"
""",
}


def write_shape(shape: str, out_dir: Path, seed: int = 0, raw_dir: Path | None = None) -> Path:
    """Write `shape` into `out_dir` (with its musictrend.toml); returns the toml's path.

    The events shapes convert the expanded competition log (``raw_dir`` when it already holds
    one, else it is expanded into a temporary folder with ``seed``).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    toml = out / "musictrend.toml"
    if toml.exists():
        raise FileExistsError(f"{toml}: already exists (not overwritten)")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        if shape.startswith("events"):
            tmp = None
            if raw_dir is None:
                tmp = Path(tempfile.mkdtemp(prefix="tianchi-s1-"))
                expand_tianchi_s1(tmp, seed=seed, progress=False)
                raw_dir = tmp
            try:
                _events(con, shape, Path(raw_dir), out)
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
        else:
            _daily(con, shape, seed, out)
    finally:
        con.close()
    toml.write_text(TOMLS[shape], encoding="utf-8")
    return toml


def _read_raw(name: str, n: int) -> str:
    cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n + 1))
    return f"read_csv('{literal_path(name)}', header = false, auto_detect = false, columns = {{{cols}}})"


def _events(con: duckdb.DuckDBPyConnection, shape: str, raw: Path, out: Path) -> None:
    actions = _read_raw(str(raw / f"{ACTIONS_PREFIX}.csv"), 5)
    songs = _read_raw(str(raw / SONGS_FILE), 6)
    events = out / "events"
    events.mkdir()
    if shape == "events-csv":
        con.execute(
            f"COPY (SELECT c1 AS track, c2 AS singer, c3 AS released FROM {songs}) TO "
            f"'{literal_path(out / 'catalogue.csv')}' (HEADER, DELIMITER ',')"
        )
        months = [m for (m,) in con.execute(f"SELECT DISTINCT left(c5, 6) FROM {actions} ORDER BY 1").fetchall()]
        for month in months:
            con.execute(
                f"COPY (SELECT c1 AS listener, c2 AS track, {_ISO} AS played_at, {_EVENT} AS event "
                f"FROM {actions} WHERE left(c5, 6) = '{month}') "
                f"TO '{literal_path(events / f'{month[:4]}-{month[4:]}.csv')}' (HEADER, DELIMITER ',')"
            )
        return
    con.execute(
        f"COPY (SELECT c1 AS sid, c2 AS singer, strptime(c3, '%Y%m%d')::DATE AS released FROM {songs}) "
        f"TO '{literal_path(out / 'catalogue.parquet')}' (FORMAT parquet)"
    )
    con.execute(
        f"""COPY (
            SELECT a.c1 AS uid, a.c2 AS sid, s.c2 AS singer, to_timestamp(CAST(a.c3 AS BIGINT)) AS ts,
                {_EVENT.replace("c4", "a.c4")} AS action, strptime(a.c5, '%Y%m%d')::DATE AS dt
            FROM {actions} AS a JOIN {songs} AS s ON s.c1 = a.c2
        ) TO '{literal_path(events)}' (FORMAT parquet, PARTITION_BY (dt), COMPRESSION zstd)"""
    )
    for folder in sorted(events.iterdir()):
        parts = sorted(folder.glob("*.parquet"))
        for i, part in enumerate(parts):
            part.rename(folder / f"part-{i}.parquet")


def _daily(con: duckdb.DuckDBPyConnection, shape: str, seed: int, out: Path) -> None:
    artist_daily, songs, song_daily = song_level(np.random.default_rng(np.random.SeedSequence([seed, 0x7A1C])))
    catalogue = songs.select(song="song_id", artist="artist_id", released=pl.col("publish_time").cast(pl.String))
    catalogue.write_csv(out / "songs.csv")
    if shape == "daily-artist":
        frame = artist_daily.select(
            "artist_id",
            gmt_date=artist_daily["ds"].dt.strftime("%Y%m%d"),
            artist_moving="plays",
            artist_downloads="downloads",
            artist_collects="collects",
            artist_listeners="distinct_users",
        ).sort("artist_id", "gmt_date")
        frame.write_csv(out / "plays.csv")
        return
    frame = song_daily.select(
        song="song_id", date=song_daily["ds"].cast(str), streams="plays", downloads="downloads", likes="collects"
    ).sort("date", "song")
    con.register("frame", frame.to_arrow())
    con.execute(f"COPY frame TO '{literal_path(out / 'song_plays.csv.gz')}' (HEADER, DELIMITER ',', COMPRESSION gzip)")
