"""Continue a raw log by one day, as a drop file, so sensors and incremental loads can be exercised."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import cast

import duckdb
import numpy as np
import polars as pl

from musictrend_dagster.core.data.lake import literal_path, sql_literal
from musictrend_dagster.core.sample.synthetic import (
    DIURNAL,
    day_slots,
    encode_rows,
    hex_ids,
    ids_to_bytes,
)
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

ACTION_COLUMNS = {
    "user_id": "VARCHAR",
    "song_id": "VARCHAR",
    "gmt_create": "BIGINT",
    "action_type": "INTEGER",
    "Ds": "VARCHAR",
}
SONG_COLUMNS = {
    "song_id": "VARCHAR",
    "artist_id": "VARCHAR",
    "publish_time": "VARCHAR",
    "song_init_plays": "BIGINT",
    "Language": "INTEGER",
    "Gender": "INTEGER",
}
_DROP = re.compile(rf"^{ACTIONS_PREFIX}(_\d{{8}})?\.csv(\.gz)?$")
# How far back the per-artist level, weekday factors and listener pool look.
LEVEL_DAYS, WEEKDAY_DAYS, USER_DAYS = 14, 56, 7
NOISE_SD = 0.08
NEW_USER_SHARE = 0.1


def action_files(raw_dir: Path) -> list[Path]:
    """The base log and every daily drop file in raw_dir, plain or gzip, in name order."""
    return sorted(p for p in Path(raw_dir).iterdir() if p.is_file() and _DROP.match(p.name))


def _source(paths: list[Path], cols: dict[str, str]) -> str:
    """A read_csv over explicit files with explicit column types: no type guessing, no glob expansion."""
    quoted = ", ".join(sql_literal(literal_path(p)) for p in paths)
    return f"read_csv([{quoted}], header=false, delim=',', columns={cols!r}, auto_detect=false)"


def _run(con: duckdb.DuckDBPyConnection, sql: str, paths: list[Path], params: list | None = None):
    """Run a query over the raw files; a parse failure names the files (duckdb names the line)."""
    try:
        return con.execute(sql, params)
    except duckdb.Error as e:
        raise ValueError(f"cannot read {', '.join(p.name for p in paths)} in {paths[0].parent}: {e}") from e


def write_next_day(raw_dir: Path, seed: int = 0) -> Path:
    """Write mars_tianchi_user_actions_<lastday+1>.csv continuing each artist's recent behaviour.

    Per artist: recent median plays x weekday factor x noise; downloads and collects keep the
    artist's recent mix; songs and listeners are drawn from the artist's recent ones.
    """
    raw_dir = Path(raw_dir)
    files = action_files(raw_dir) if raw_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no {ACTIONS_PREFIX}*.csv[.gz] files in {raw_dir}")
    songs_path = raw_dir / SONGS_FILE
    if not songs_path.is_file():
        raise FileNotFoundError(f"{songs_path} is missing")
    con = duckdb.connect()
    _run(con, f"create table songs as select * from {_source([songs_path], SONG_COLUMNS)}", [songs_path])
    actions = _source(files, ACTION_COLUMNS)
    n_bad, bad, last = _run(
        con,
        f"select count(*) filter (d is null), any_value(Ds) filter (d is null), max(d) "
        f"from (select Ds, try_strptime(Ds, '%Y%m%d')::date as d from {actions})",
        files,
    ).fetchall()[0]
    if n_bad:
        raise ValueError(f"{raw_dir}: Ds value {bad!r} is not yyyymmdd ({n_bad} rows)")
    if last is None:
        raise ValueError(f"{raw_dir}: the action files hold no rows")
    target_day = last + timedelta(days=1)
    out = raw_dir / f"{ACTIONS_PREFIX}_{target_day:%Y%m%d}.csv"
    for existing in (out, out.with_name(out.name + ".gz")):
        if existing.exists():
            raise ValueError(f"refusing to overwrite existing drop file {existing}")

    _run(
        con,
        f"""create table recent as
           select s.artist_id, a.song_id, a.user_id, a.action_type,
                  strptime(a.Ds, '%Y%m%d')::date as ds,
                  ((a.gmt_create + 8 * 3600) % 86400) // 3600 as hour
           from {actions} a join songs s using (song_id)
           where a.Ds > ?""",
        files,
        [f"{last - timedelta(days=WEEKDAY_DAYS):%Y%m%d}"],
    )
    artists = sorted(r[0] for r in con.execute("select distinct artist_id from recent").fetchall())
    if not artists:
        raise ValueError(f"{raw_dir}: no recent action matches a song of {SONGS_FILE}")
    # Dense daily plays per artist over the weekday window (missing days are zero plays).
    daily = cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                "select artist_id, ds, count(*) filter (action_type = 1) as plays, "
                "count(*) filter (action_type = 2) as downloads, count(*) filter (action_type = 3) as collects "
                "from recent group by all"
            ).to_arrow_table()
        ),
    )
    span = [last - timedelta(days=i) for i in range(WEEKDAY_DAYS - 1, -1, -1)]
    grid = pl.DataFrame({"artist_id": artists}).join(pl.DataFrame({"ds": span}), how="cross")
    daily = grid.join(daily, on=["artist_id", "ds"], how="left").fill_null(0).sort("artist_id", "ds")
    plays = daily["plays"].to_numpy().reshape(len(artists), WEEKDAY_DAYS).astype(np.float64)
    level = np.median(plays[:, -LEVEL_DAYS:], axis=1)
    weekday = np.array([d.weekday() for d in span])
    overall = plays.mean(axis=1)
    same = plays[:, weekday == target_day.weekday()].mean(axis=1)
    factor = np.clip(np.where(overall > 0, same / np.maximum(overall, 1e-9), 1.0), 0.7, 1.4)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD209, target_day.toordinal()]))
    n_play = rng.poisson(level * factor * np.exp(rng.normal(0.0, NOISE_SD, len(artists))))
    mix = daily.group_by("artist_id").agg(pl.col("plays", "downloads", "collects").sum()).sort("artist_id")
    mix_np = mix.select("plays", "downloads", "collects").to_numpy().astype(np.float64)
    ratio = mix_np[:, 1:] / np.maximum(mix_np[:, :1], 1.0)
    n_dl = rng.poisson(n_play * ratio[:, 0])
    n_col = rng.poisson(n_play * ratio[:, 1])

    # Hours follow the log's own recent hour-of-day profile (falls back to the real one).
    hours = con.execute("select hour, count(*) from recent group by 1").fetchall()
    profile = np.zeros(24)
    for h, c in hours:
        profile[int(h)] = c
    profile = profile / profile.sum() if profile.sum() else DIURNAL

    song_w = cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                "select artist_id, song_id, count(*) as n from recent group by all order by artist_id, song_id"
            ).to_arrow_table()
        ),
    )
    user_w = cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                "select artist_id, user_id, count(*) as n from recent where ds > ?::date - ? "
                "group by all order by artist_id, user_id",
                params=[last, USER_DAYS],
            ).to_arrow_table()
        ),
    )
    song_tab = ids_to_bytes(song_w["song_id"], SONGS_FILE)
    known_users = user_w["user_id"].unique().sort()
    n_new_users = max(100, int(NEW_USER_SHARE * (n_play + n_dl + n_col).sum()))
    user_tab = np.concatenate(
        [ids_to_bytes(known_users, "action files"), hex_ids(rng.integers(0, 256, (n_new_users, 16), dtype=np.uint8))]
    )
    user_code = user_w.with_columns(u=pl.col("user_id").cast(pl.Enum(known_users)).to_physical().cast(pl.Int64))

    parts_user, parts_song, parts_action, parts_hour = [], [], [], []
    song_art = song_w["artist_id"].to_numpy()
    song_n = song_w["n"].to_numpy().astype(np.float64)
    user_art = user_code["artist_id"].to_numpy()
    user_u = user_code["u"].to_numpy()
    user_n = user_code["n"].to_numpy().astype(np.float64)
    for i, artist in enumerate(artists):
        m = int(n_play[i] + n_dl[i] + n_col[i])
        if m == 0:
            continue
        s_idx = np.nonzero(song_art == artist)[0]
        parts_song.append(rng.choice(s_idx, m, p=song_n[s_idx] / song_n[s_idx].sum()))
        u_idx = np.nonzero(user_art == artist)[0]
        users = rng.integers(len(known_users), len(user_tab), m)  # newcomers by default
        if len(u_idx):
            returning = rng.random(m) >= NEW_USER_SHARE
            users[returning] = user_u[rng.choice(u_idx, int(returning.sum()), p=user_n[u_idx] / user_n[u_idx].sum())]
        parts_user.append(users)
        parts_action.append(
            np.repeat(np.array([1, 2, 3], dtype=np.uint8), [int(n_play[i]), int(n_dl[i]), int(n_col[i])])
        )
        parts_hour.append(rng.choice(24, m, p=profile))
    tmp = out.with_name(out.name + ".partial")
    if parts_user:
        user, song, action, hour = (np.concatenate(p) for p in (parts_user, parts_song, parts_action, parts_hour))
        order = np.lexsort((action, song, user, hour))
        slot_gmt, slot_ds = day_slots([target_day])
        data = encode_rows(user_tab, user[order], song_tab, song[order], slot_gmt, slot_ds, hour[order], action[order])
    else:
        data = b""
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out
