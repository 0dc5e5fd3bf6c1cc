"""Sample generators: the real Tianchi expansion is exact, synthetic logs are sized and shaped, drops continue."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc
from datetime import date
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from musictrend_dagster.core.sample import SOURCES, expand_tianchi_s1, generate_synthetic, write_next_day, write_sample
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

ACTIONS = "{'user_id':'VARCHAR','song_id':'VARCHAR','gmt_create':'BIGINT','action_type':'INTEGER','Ds':'VARCHAR'}"
SONGS = (
    "{'song_id':'VARCHAR','artist_id':'VARCHAR','publish_time':'VARCHAR','song_init_plays':'BIGINT',"
    "'language':'INTEGER','gender':'INTEGER'}"
)
MISSING_ARTIST = "4b8eb68442432c242e9242be040bacf9"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _con(raw: Path, actions: str | None = None) -> duckdb.DuckDBPyConnection:
    """Views over a raw folder read the way ingest will: explicit columns, no header."""
    con = duckdb.connect()
    con.execute(
        f"create view a as select * from read_csv('{actions or raw / f'{ACTIONS_PREFIX}.csv'}', header=false, "
        f"columns={ACTIONS}, auto_detect=false)"
    )
    con.execute(
        f"create table s as select * from read_csv('{raw / SONGS_FILE}', header=false, columns={SONGS}, "
        "auto_detect=false)"
    )
    return con


@pytest.fixture(scope="session")
def tianchi_db(tianchi):
    """The expansion loaded once into DuckDB (tables a, s), so each check scans memory, not 500 MB of CSV."""
    con = _con(tianchi.actions_file.parent)
    con.execute("create table a_mem as select * from a")
    con.execute("drop view a")
    con.execute("alter table a_mem rename to a")
    return con


@pytest.fixture(scope="session")
def packaged():
    with resources.as_file(resources.files("musictrend_dagster") / "data" / "tianchi_s1") as d:
        yield Path(d)


def test_tianchi_reproduces_artist_days_and_distinct_users_exactly(tianchi, tianchi_db, packaged):
    assert tianchi.rows == 5_652_232 and tianchi.artists == 50
    assert (tianchi.first_day, tianchi.last_day) == (date(2015, 3, 1), date(2015, 8, 30))
    con = tianchi_db.cursor()
    con.execute("""create temp table got as select artist_id, Ds::bigint ds, count(*) filter (action_type=1) plays,
                     count(*) filter (action_type=2) downloads, count(*) filter (action_type=3) collects,
                     count(distinct user_id) distinct_users
                     from a join s using (song_id) group by all""")
    got = con.table("got")
    want = con.sql(f"select * from read_csv('{packaged / 'artist_daily.csv'}') where plays + downloads + collects > 0")
    # Bound asserted: distinct listeners per artist-day EQUAL the real distinct_users on every row.
    assert len(got.fetchall()) == 9150 - 4  # 4 artist-days have no action at all
    assert got.except_(want).fetchall() == [] and want.except_(got).fetchall() == []
    assert con.execute("select count(*) from a anti join s using (song_id)").fetchall()[0][0] == 0


def test_tianchi_reproduces_song_days_and_synthesises_missing_artist(tianchi, tianchi_db, packaged):
    con = tianchi_db.cursor()
    con.execute(
        "create temp table sd as select song_id, ds, plays, downloads, collects "
        f"from read_csv('{packaged / 'song_daily_actions.csv.gz'}')"
    )
    con.execute(
        f"""create temp table got_sd as select song_id, Ds::bigint ds, count(*) filter (action_type=1) plays,
                     count(*) filter (action_type=2) downloads, count(*) filter (action_type=3) collects
                     from a join s using (song_id) where s.artist_id <> '{MISSING_ARTIST}' group by all"""
    )
    got = con.table("got_sd")
    assert got.except_(con.sql("select * from sd")).fetchall() == []
    assert con.sql("select * from sd").except_(got).fetchall() == []
    n_songs, n_new, spread = con.execute(f"""select count(*), count(*) filter (publish_time >= '20150301'),
        max(cnt) / sum(cnt) from s left join (select song_id, count(*) cnt from a group by 1) using (song_id)
        where artist_id = '{MISSING_ARTIST}'""").fetchall()[0]
    assert n_songs >= 50 and 0.02 < spread < 0.6  # a catalogue, not one song
    assert n_new == 0, "synthesised songs are dated before the log: their release dates are unknown"
    assert con.execute("select count(*) from s").fetchall()[0][0] == tianchi.songs == 8460 + n_songs


def test_tianchi_hours_are_whole_and_inside_the_utc8_day(tianchi_db):
    con = tianchi_db.cursor()
    bad = con.execute("""select count(*) filter (gmt_create % 3600 <> 0),
        count(*) filter (gmt_create - epoch(strptime(Ds, '%Y%m%d'))::bigint + 8*3600 not between 0 and 86399),
        count(distinct (gmt_create + 8*3600) % 86400 // 3600), count(distinct length(user_id)) from a""").fetchall()[0]
    assert bad == (0, 0, 24, 1)


def test_tianchi_is_deterministic_and_seed_changes_users(tianchi, tmp_path):
    again = expand_tianchi_s1(tmp_path / "same", seed=0, progress=False)
    assert _sha(again.actions_file) == _sha(tianchi.actions_file)
    assert _sha(again.songs_file) == _sha(tianchi.songs_file)
    other = expand_tianchi_s1(tmp_path / "other", seed=1, progress=False)

    def users(path: Path) -> set[bytes]:
        return {line[:32] for line in path.read_bytes()[: 88 * 20_000].splitlines()}

    assert users(other.actions_file).isdisjoint(users(tianchi.actions_file))
    assert _sha(other.actions_file) != _sha(tianchi.actions_file)


def test_synthetic_exact_rows_format_songs_and_weekly_cycle(tmp_path):
    s = generate_synthetic(tmp_path, artists=20, days=84, rows=600_000, seed=3, chunk_rows=100_000, progress=False)
    assert (s.rows, s.artists, s.first_day, s.last_day) == (600_000, 20, date(2015, 3, 1), date(2015, 5, 23))
    assert s.actions_file.stat().st_size == 600_000 * 88  # fixed-width rows: 32+32+10+1+8 and separators
    con = _con(tmp_path)
    n, bad_hours, days, orphans = con.execute("""select count(*), count(*) filter (gmt_create % 3600 <> 0
        or gmt_create - epoch(strptime(Ds, '%Y%m%d'))::bigint + 8*3600 not between 0 and 86399),
        count(distinct Ds), count(*) filter (s.song_id is null) from a left join s using (song_id)""").fetchall()[0]
    assert (n, bad_hours, days, orphans) == (600_000, 0, 84, 0)
    mix = dict(con.sql("select action_type, count(*) / 600000 from a group by 1").fetchall())
    assert 0.85 < mix[1] < 0.95 and 0.04 < mix[2] < 0.13 and 0.005 < mix[3] < 0.04
    weekend, weekday = con.execute("""select avg(n) filter (w in (0, 6)), avg(n) filter (w between 1 and 4)
        from (select dayofweek(strptime(Ds, '%Y%m%d')) w, count(*) n from a group by Ds)""").fetchall()[0]
    assert weekend > 1.05 * weekday
    top = con.sql("select count(*) from a join s using (song_id) group by artist_id order by 1 desc").fetchall()
    assert top[0][0] > 5 * top[len(top) // 2][0]  # heavy-tailed artists
    assert con.execute("select count(distinct artist_id) from s").fetchall()[0][0] == 20


def test_synthetic_is_deterministic_and_independent_of_chunking(tmp_path):
    a = generate_synthetic(tmp_path / "a", artists=5, days=10, rows=50_000, seed=1, chunk_rows=7_000, progress=False)
    b = generate_synthetic(
        tmp_path / "b", artists=5, days=10, rows=50_000, seed=1, chunk_rows=2_000_000, progress=False
    )
    c = generate_synthetic(tmp_path / "c", artists=5, days=10, rows=50_000, seed=2, progress=False)
    assert _sha(a.actions_file) == _sha(b.actions_file) != _sha(c.actions_file)
    assert _sha(a.songs_file) == _sha(b.songs_file)


def test_synthetic_memory_is_bounded_by_chunk_rows_not_rows(tmp_path):
    def peak(rows: int, chunk_rows: int) -> int:
        tracemalloc.start()  # numpy reports its buffers to tracemalloc
        try:
            generate_synthetic(
                tmp_path / f"{rows}-{chunk_rows}", artists=10, days=5, rows=rows, chunk_rows=chunk_rows, progress=False
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000_000, 50_000), peak(2_000_000, 400_000)
    # The file is 176 MB; with 50k-row chunks the peak stays a small fraction of it, and it is
    # chunk_rows, not rows, that moves it (the user population is capped at 1M ids).
    assert small < 30_000_000
    assert large > small + 20_000_000


def test_write_sample_dispatch_and_errors(tmp_path):
    assert SOURCES == ("tianchi-s1", "synthetic")
    s = write_sample("synthetic", tmp_path, rows=1000, artists=3, days=7, progress=False)
    assert s.rows == 1000 and s.artists == 3
    with pytest.raises(ValueError, match="rows"):
        write_sample("tianchi-s1", tmp_path, rows=10)
    with pytest.raises(ValueError, match="unknown sample source"):
        write_sample("kaggle", tmp_path)


def test_next_day_continues_each_artist_plausibly_and_refuses_overwrite(tmp_path):
    raw = tmp_path / "raw"
    generate_synthetic(raw, artists=8, days=60, rows=300_000, seed=5, progress=False)
    first = write_next_day(raw, seed=0)
    assert first.name == f"{ACTIONS_PREFIX}_20150430.csv"
    # A gzip drop file counts as history too: the next call continues after it.
    gz = first.with_name(first.name + ".gz")
    gz.write_bytes(gzip.compress(first.read_bytes()))
    first.unlink()
    second = write_next_day(raw, seed=0)
    assert second.name == f"{ACTIONS_PREFIX}_20150501.csv"
    con = _con(raw, actions=str(second))
    new = dict(
        con.sql(
            "select artist_id, count(*) filter (action_type = 1) from a join s using (song_id) group by 1"
        ).fetchall()
    )
    con.execute(
        f"create view h as select * from read_csv('{raw / f'{ACTIONS_PREFIX}.csv'}', header=false, "
        f"columns={ACTIONS}, auto_detect=false)"
    )
    recent = dict(
        con.sql("""select artist_id, median(n) from (select artist_id, Ds, count(*) filter (action_type = 1) n
        from h join s using (song_id) where Ds > '20150415' group by all) group by 1""").fetchall()
    )
    for artist, level in recent.items():
        if level >= 200:
            assert 0.5 * level < new.get(artist, 0) < 2.0 * level, artist
    assert con.execute("select count(*) from a anti join s using (song_id)").fetchall()[0][0] == 0
    assert con.execute("select count(*) from a where Ds <> '20150501' or gmt_create % 3600 <> 0").fetchall()[0][0] == 0
    # An (empty, half-written) drop file for the next day must not be overwritten.
    blocker = raw / f"{ACTIONS_PREFIX}_20150502.csv"
    blocker.write_bytes(b"")
    with pytest.raises(ValueError, match=blocker.name):
        write_next_day(raw)
    assert blocker.read_bytes() == b""


def test_next_day_reads_a_folder_with_glob_characters_literally(tmp_path):
    """`raw[1]` next to `raw1`: the drop continues raw[1]'s own log, not the other folder's."""
    weird, other = tmp_path / "raw[1]", tmp_path / "raw1"
    generate_synthetic(weird, artists=3, days=10, rows=3000, seed=1, progress=False)
    generate_synthetic(other, artists=3, days=20, rows=3000, seed=2, progress=False)
    assert write_next_day(weird, seed=0).name == f"{ACTIONS_PREFIX}_20150311.csv"
