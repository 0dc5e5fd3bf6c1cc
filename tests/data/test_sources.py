"""Described sources (musictrend.toml): daily counts and event logs, CSV and Parquet, on DuckDB.

What a description that cannot work says (one message naming the key and the file, nothing
loaded), what each hostile row becomes (quarantined with its line or row and reason), and the
real season-1 data in every ``musictrend sample --as`` shape giving exactly today's artist_daily.
"""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from musictrend_dagster.core.data import ingest, source, warehouse
from musictrend_dagster.core.data import sql_models as sm
from musictrend_dagster.core.data.source import SourceError
from musictrend_dagster.core.sample.shapes import write_shape

PACKAGED_ARTIST_DAILY = Path(sm.__file__).resolve().parents[2] / "data" / "tianchi_s1" / "artist_daily.csv"


def _project(folder: Path, toml: str, files: dict[str, str | bytes]) -> source.Config:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (folder / "musictrend.toml").write_text(toml)
    return source.load_config(cwd=folder)


def _ingest(tmp_path: Path, config: source.Config, **kw) -> tuple[duckdb.DuckDBPyConnection, ingest.IngestResult]:
    con = warehouse.connect(tmp_path / "wh.duckdb")
    return con, ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=config, **kw)


def _quarantine(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    return dict(con.execute("SELECT line_no, reason FROM quarantine_user_actions ORDER BY line_no").fetchall())


def _daily(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], int]:
    sm.build_all(con, sm.SQL_DIR)
    return {(a, str(d)): p for a, d, p in con.execute("SELECT artist_id, ds, plays FROM artist_daily").fetchall()}


def build_to_artist_daily(con: duckdb.DuckDBPyConnection, engine=None) -> None:
    """The SQL models up to artist_daily (not the rolling statistics: per-song series make them large)."""
    models = {m.name: m for m in sm.load_models(sm.SQL_DIR)}
    for name in ("stg_songs", "stg_user_actions", "stg_daily_plays", "artist_day_actions", "artist_daily"):
        sm.build_model(con, models[name], engine=engine)


# ---------------------------------------------------------------------------- the description


def test_long_format_runs_from_kind_and_path_only(tmp_path):
    config = _project(
        tmp_path / "p",
        '[source]\nkind = "daily"\npath = "plays.csv"\n',
        {"plays.csv": "unique_id,ds,y\na1,2015-03-01,3\na1,2015-03-03,5\na2,2015-03-02,1\n"},
    )
    assert (config.source.series, config.source.day, config.source.plays) == ("unique_id", "ds", "y")
    assert config.forecast.horizon == 60
    con, result = _ingest(tmp_path, config)
    (report,) = result.files
    assert (report.file, report.lines_read, report.loaded, report.quarantined) == ("plays.csv", 3, 3, 0)
    assert _daily(con) == {
        ("a1", "2015-03-01"): 3,
        ("a1", "2015-03-02"): 0,
        ("a1", "2015-03-03"): 5,
        ("a2", "2015-03-01"): 0,
        ("a2", "2015-03-02"): 1,
        ("a2", "2015-03-03"): 0,
    }
    downloads = con.execute("SELECT sum(downloads + collects + listeners) FROM artist_daily").fetchone()[0]
    assert downloads == 0


def test_no_description_is_the_builtin_tianchi_source(tmp_path, monkeypatch):
    monkeypatch.delenv(source.CONFIG_ENV, raising=False)
    assert source.load_config(cwd=tmp_path) is source.BUILTIN
    assert source.BUILTIN.source.kind == "tianchi"


def test_config_option_and_env_var_find_the_file(tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text("unique_id,ds,y\n")
    other = tmp_path / "other.toml"
    other.write_text('[source]\nkind = "daily"\npath = "data.csv"\n[forecast]\nhorizon = 7\n')
    monkeypatch.setenv(source.CONFIG_ENV, str(other))
    assert source.load_config(cwd=tmp_path).forecast.horizon == 7
    monkeypatch.delenv(source.CONFIG_ENV)
    assert source.load_config(other).file == other.resolve()
    with pytest.raises(SourceError, match="source description not found"):
        source.load_config(tmp_path / "missing.toml")


def test_init_writes_an_example_that_parses_and_never_overwrites(tmp_path):
    for kind in ("daily", "events"):
        folder = tmp_path / kind
        folder.mkdir()
        written = source.write_example(folder, kind)
        text = written.read_text()
        assert text.count("#") > 5
        (folder / "data").mkdir()
        (folder / "data" / "events").mkdir()
        (folder / "data" / "plays.csv").write_text("unique_id,ds,y\n")
        assert source.parse_file(written).source.kind == kind
        with pytest.raises(SourceError, match="already exists"):
            source.write_example(folder, kind)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[source]\nkind = "daily"\npath = "p.csv"\nseries_name = "a"\n', "[source] series_name"),
        ('[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nhorizon = 0\n', "[forecast] horizon"),
        ('[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nhorizon = 366\n', "[forecast] horizon"),
        ('[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nhorizon = "60"\n', "[forecast] horizon"),
        ('[source]\nkind = "daily"\npath = "p.csv"\ntimezone = "Mars/Olympus"\n', "[source] timezone"),
        ('[source]\nkind = "weekly"\npath = "p.csv"\n', "[source] kind"),
        ('[source]\nkind = "daily"\npath = "nowhere.csv"\n', "[source] path"),
        ('[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nseries_level = "album"\n', "[forecast] series_level"),
        ('[source]\nkind = "daily"\npath = "p.csv"\nday_format = "yyyymmdd"\n', "[source] day_format"),
        ('[source]\nkind = "events"\npath = "p.csv"\ntime = "t"\n', "[source] artist"),
        ('[sauce]\nkind = "daily"\n', "[sauce]"),
        ('[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nmodels = "median14"\n', "[forecast] models"),
        ('[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nmodels = []\n', "[forecast] models"),
        ('[source]\nkind = "daily"\npath = "p.csv"\nseries_is = "album"\n', "[source] series_is"),
        ('[source]\nkind = "daily"\npath = "p.csv"\nseries_is = "song"\n', "[source] series_is"),
        (
            '[source]\nkind = "daily"\npath = "p.csv"\nseries_is = "artist"\n[forecast]\nseries_level = "song"\n',
            "[source] series_is",
        ),
        (  # per-song distinct listeners do not add up to an artist's: refused, never summed
            '[source]\nkind = "daily"\npath = "p.csv"\nlisteners = "users"\n'
            '[catalogue]\npath = "p.csv"\nsong = "unique_id"\nartist = "y"\n',
            "[source] listeners = 'users'",
        ),
    ],
)
def test_a_bad_key_is_one_message_naming_the_key_and_the_file(tmp_path, toml, key):
    (tmp_path / "p.csv").write_text("unique_id,ds,y\n")
    (tmp_path / "musictrend.toml").write_text(toml)
    with pytest.raises(SourceError) as err:
        source.load_config(cwd=tmp_path)
    message = str(err.value)
    assert key in message
    assert str(tmp_path / "musictrend.toml") in message
    assert "\n" not in message


DAILY_TOML = '[source]\nkind = "daily"\npath = "data"\nseries = "artist"\nday = "day"\nplays = "n"\n'


@pytest.mark.parametrize(
    ("toml", "files", "key", "also"),
    [
        (DAILY_TOML, {"data/a.csv": "artist,day,count\nx,2015-03-01,1\n"}, "[source] plays = 'n'", "no column 'n'"),
        (
            DAILY_TOML,
            {"data/a.csv": "artist,day,n\nx,March 1,1\nx,March 2,2\n"},
            "[source] day = 'day'",
            "no value of the first 2 rows",
        ),
        (
            DAILY_TOML,
            {"data/a.csv": "artist,day,n\nx,2015-03-01,one\nx,2015-03-02,two\n"},
            "[source] plays = 'n'",
            "whole number",
        ),
        (
            '[source]\nkind = "events"\npath = "data"\nuser = "u"\nsong = "s"\nartist = "a"\ntime = "t"\n'
            'time_format = "epoch_s"\naction = "e"\nplays_when = ["stream"]\n',
            {"data/a.csv": "u,s,a,t,e\nu1,s1,a1,1425182400,play\nu1,s1,a1,1425182401,skip\n"},
            "[source] plays_when",
            "event names found: 'play', 'skip'",
        ),
        (
            '[source]\nkind = "events"\npath = "data"\nuser = "u"\nsong = "s"\ntime = "t"\ntime_format = "epoch_s"\n'
            '[catalogue]\npath = "songs.csv"\nsong = "song"\nartist = "artist"\n',
            {"data/a.csv": "u,s,t\nu1,s1,1425182400\n", "songs.csv": "song,artist\ns9,a9\n"},
            "[catalogue] song",
            "maps no song of the source",
        ),
    ],
)
def test_a_description_the_data_cannot_meet_stops_before_anything_loads(tmp_path, toml, files, key, also):
    config = _project(tmp_path / "p", toml, files)
    con = warehouse.connect(tmp_path / "wh.duckdb")
    with pytest.raises(SourceError) as err:
        ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=config)
    message = str(err.value)
    assert key in message and also in message
    assert str(config.file) in message
    assert con.execute("SELECT count(*) FROM ingested_files").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM lake_files").fetchone()[0] == 0


def test_a_parquet_count_column_of_strings_is_one_clear_error(tmp_path):
    folder = tmp_path / "p"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"artist": ["x"], "day": [date(2015, 3, 1)], "n": ["3"]}), folder / "data" / "a.parquet")
    (folder / "musictrend.toml").write_text(DAILY_TOML)
    con = warehouse.connect(tmp_path / "wh.duckdb")
    with pytest.raises(SourceError, match=r"\[source\] plays = 'n': .*a.parquet: column 'n' is VARCHAR"):
        ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=source.load_config(cwd=folder))


# ---------------------------------------------------------------------------- hostile rows


def test_daily_hostile_rows_are_quarantined_with_line_and_reason(tmp_path):
    lines = [
        "artist,day,n",
        "a1,2015-03-01,3",  # 2
        "a1,2015-03-02,4",  # 3: duplicate of 6
        "a1,2015-03-03,-1",  # 4: negative
        "a1,2015-03-04,2.5",  # 5: not whole
        "a1,2015-03-02,9",  # 6: duplicate of 3
        ",2015-03-05,1",  # 7: empty id
        "a2,2015-02-30,1",  # 8: not in the calendar
        "a2,2015-03-01,7.0",  # 9: a whole number written as a float: fine
        "a2,2015-03-01",  # 10: a field short (and a duplicate of nothing: not counted)
        "a2,20150302,1",  # 11: another day format in the same file
        "a2,2015-03-03,",  # 12: missing count
    ]
    config = _project(tmp_path / "p", DAILY_TOML, {"data/a.csv": "\n".join(lines) + "\n"})
    con, result = _ingest(tmp_path, config)
    (report,) = result.files
    assert (report.lines_read, report.loaded, report.quarantined) == (11, 2, 9)
    q = _quarantine(con)
    assert sorted(q) == [3, 4, 5, 6, 7, 8, 10, 11, 12]
    assert q[3] == "two rows for series a1 on 2015-03-02: also at line 6"
    assert q[6] == "two rows for series a1 on 2015-03-02: also at line 3"
    assert q[4] == q[5] == q[12] == "n not a non-negative whole number"
    assert q[7] == "empty or missing series"
    assert q[8] == q[11] == "day not an ISO date"
    assert q[10] == "wrong column count: 2 (expected 3)"
    assert _daily(con) == {("a1", "2015-03-01"): 3, ("a2", "2015-03-01"): 7}


# A daily CSV as R's write.csv or a warehouse export writes it: the header and the strings in double quotes.
QUOTED_LINES = [
    '"artist","day","n"',
    '"a1","2015-03-01",3',  # 2
    '"a1","2015-03-02","4"',  # 3: a quoted count
    "a2,2015-03-01,7",  # 4: unquoted in the same file; a duplicate of 7 once 7 is unquoted
    '"a""2","2015-03-01",1',  # 5: an escaped quote: the id holds a quote
    '"a,3","2015-03-01",1',  # 6: a comma inside quotes: quoting is read for whole fields only
    '"a2","2015-03-01",2',  # 7
    '"a1","2015-03-03",""',  # 8: an empty quoted count
]


def test_quoted_csv_fields_are_read_as_their_values(tmp_path):
    config = _project(tmp_path / "p", DAILY_TOML, {"data/a.csv": "\n".join(QUOTED_LINES) + "\n"})
    con, result = _ingest(tmp_path, config)
    (report,) = result.files
    assert (report.lines_read, report.loaded, report.quarantined) == (7, 2, 5)
    assert _quarantine(con) == {
        4: "two rows for series a2 on 2015-03-01: also at line 7",
        5: "series holds whitespace, a control character or a quote",
        6: "wrong column count: 4 (expected 3)",
        7: "two rows for series a2 on 2015-03-01: also at line 4",
        8: "n not a non-negative whole number",
    }
    lines = dict(con.execute("SELECT line_no, raw_line FROM quarantine_user_actions").fetchall())
    assert lines[5] == QUOTED_LINES[4] and lines[6] == QUOTED_LINES[5]  # the line as written
    assert _daily(con) == {("a1", "2015-03-01"): 3, ("a1", "2015-03-02"): 4}


def test_daily_extra_counts_are_loaded_and_checked_like_plays(tmp_path):
    """downloads, collects and listeners: optional columns, summed per artist, quarantined when not whole."""
    toml = DAILY_TOML + 'downloads = "dl"\ncollects = "fav"\nlisteners = "users"\n'
    lines = [
        "artist,day,n,dl,fav,users",
        "a1,2015-03-01,3,1,0,2",  # 2
        "a1,2015-03-02,4,-1,0,2",  # 3: negative downloads
        "a1,2015-03-03,4,0,0.5,2",  # 4: collects not whole
        "a1,2015-03-04,4,0,0,",  # 5: missing listeners
        "a2,2015-03-01,5,2,1,3",  # 6
    ]
    config = _project(tmp_path / "p", toml, {"data/a.csv": "\n".join(lines) + "\n"})
    con, result = _ingest(tmp_path, config)
    assert [(r.loaded, r.quarantined) for r in result.files] == [(2, 3)]
    assert _quarantine(con) == {
        3: "dl not a non-negative whole number",
        4: "fav not a non-negative whole number",
        5: "users not a non-negative whole number",
    }
    sm.build_all(con, sm.SQL_DIR)
    rows = con.execute(
        "SELECT artist_id, plays, downloads, collects, listeners FROM artist_daily WHERE plays > 0 ORDER BY 1"
    ).fetchall()
    assert rows == [("a1", 3, 1, 0, 2), ("a2", 5, 2, 1, 3)]
    (config.file).write_text(toml.replace('listeners = "users"', 'listeners = "listeners"'))
    with pytest.raises(SourceError, match=r"\[source\] listeners = 'listeners': .*no column 'listeners'"):
        ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=source.load_config(config.file))
    (config.file).write_text(toml.replace('downloads = "dl"', 'downloads = "artist"'))  # the wrong column
    (tmp_path / "again").mkdir()
    with pytest.raises(SourceError, match=r"\[source\] downloads = 'artist': .*reads as a whole number"):
        _ingest(tmp_path / "again", source.load_config(config.file))


def test_daily_artist_series_with_a_catalogue_of_publish_dates(tmp_path):
    """series_is = "artist": the catalogue gives the artists' songs (release features), never maps the series."""
    toml = DAILY_TOML + 'series_is = "artist"\n[catalogue]\npath = "songs.csv"\npublish = "released"\n'
    files = {
        "data/a.csv": "artist,day,n\nx,2015-03-01,3\ny,2015-03-01,4\n",
        # song "y" has the id of an artist: an artist series is never read as that song
        "songs.csv": "song_id,artist_id,released\ns1,x,2015-02-01\ny,x,2015-02-02\n",
    }
    config = _project(tmp_path / "p", toml, files)
    con, result = _ingest(tmp_path, config)
    assert sum(r.quarantined for r in result.files) == 0
    sm.build_all(con, sm.SQL_DIR)
    assert con.execute("SELECT artist_id, plays FROM artist_daily ORDER BY 1").fetchall() == [("x", 3), ("y", 4)]
    assert con.execute("SELECT count(*) FROM stg_songs WHERE publish_time IS NOT NULL").fetchone()[0] == 2


def test_daily_triplicate_names_both_other_lines_and_parquet_says_row(tmp_path):
    folder = tmp_path / "p"
    (folder / "data").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "artist": ["a", "a", "b", "a", None],
                "day": [date(2015, 3, 1)] * 5,
                "n": pa.array([1, 2, 3, 4, 5], pa.int64()),
            }
        ),
        folder / "data" / "a.parquet",
    )
    (folder / "musictrend.toml").write_text(DAILY_TOML)
    con, result = _ingest(tmp_path, source.load_config(cwd=folder))
    assert (result.files[0].lines_read, result.files[0].loaded, result.files[0].quarantined) == (5, 1, 4)
    q = _quarantine(con)
    assert q[1] == "two rows for series a on 2015-03-01: also at row 2, 4"
    assert q[4] == "two rows for series a on 2015-03-01: also at row 1, 2"
    assert q[5] == "empty or missing series"


EVENTS_TOML = """\
[source]
kind = "events"
path = "log.csv"
user = "who"
song = "what"
artist = "by"
time = "when"
timezone = "Asia/Shanghai"
action = "event"
plays_when = ["play", "stream"]
downloads_when = ["download"]
other_when = ["skip"]
"""


def test_events_day_boundary_is_the_configured_zone_and_bad_rows_say_why(tmp_path):
    lines = [
        "who,what,by,when,event",
        "u1,s1,a1,2015-03-01T23:59:59+08:00,play",  # 2: Mar 1 in Shanghai
        "u1,s1,a1,2015-03-01T16:00:00Z,play",  # 3: = Mar 2 00:00 in Shanghai
        "u2,s1,a1,2015-03-01T15:59:59+00:00,stream",  # 4: = Mar 1 23:59:59 in Shanghai
        "u2,s1,a1,2015-03-02T00:00:00+08:00,download",  # 5
        "u2,s1,a1,2015-03-02T01:00:00+08:00,skip",  # 6: kept, not a play
        "u3,s1,a1,2015-03-02T02:00:00+08:00,like",  # 7: unmapped
        "u3,s1,a1,1425232800,play",  # 8: another time format in the same file
        "u3,s1,a1,2015-03-02T02:00:00,play",  # 9: ISO without an offset
        ",s1,a1,2015-03-02T02:00:00+08:00,play",  # 10: empty user
        "u4,,a1,2015-03-02T02:00:00+08:00,play",  # 11: empty song
    ]
    config = _project(tmp_path / "p", EVENTS_TOML, {"log.csv": "\n".join(lines) + "\n"})
    con, result = _ingest(tmp_path, config)
    (report,) = result.files
    assert (report.lines_read, report.loaded, report.quarantined) == (10, 5, 5)
    q = _quarantine(con)
    assert q[7] == "event like in none of plays_when, downloads_when, collects_when, other_when"
    assert q[8] == q[9] == "when not an ISO-8601 time with an offset (2026-11-30T23:59:59+08:00)"
    assert q[10] == "empty or missing user"
    assert q[11] == "empty or missing song"
    sm.build_all(con, sm.SQL_DIR)
    rows = con.execute("SELECT ds, plays, downloads, listeners FROM artist_daily ORDER BY ds").fetchall()
    assert rows == [(date(2015, 3, 1), 2, 0, 2), (date(2015, 3, 2), 1, 1, 2)]


def test_events_epoch_ms_gzip_and_a_catalogue(tmp_path):
    toml = """\
[source]
kind = "events"
path = "logs"
user = "u"
song = "s"
time = "t"
time_format = "epoch_ms"
timezone = "America/New_York"

[catalogue]
path = "songs.csv"
song = "song"
artist = "artist"
"""
    # 2015-03-08 is a DST change in New York: local midnight of Mar 9 is 04:00 UTC.
    log = "u,s,t\nu1,s1,1425873599999\nu1,s1,1425873600000\nu1,s2,1425873600001\nu2,s9,1425873600001\n"
    config = _project(
        tmp_path / "p",
        toml,
        {"logs/x.csv.gz": gzip.compress(log.encode()), "songs.csv": "song,artist\ns1,a1\ns2,a2\n"},
    )
    con, result = _ingest(tmp_path, config)
    assert [(r.file, r.lines_read, r.loaded, r.quarantined) for r in result.files] == [
        ("catalogue/songs.csv", 2, 2, 0),
        ("x.csv.gz", 4, 3, 1),
    ]
    assert _quarantine(con) == {5: "song not in the catalogue"}
    assert _daily(con) == {
        ("a1", "2015-03-08"): 1,
        ("a1", "2015-03-09"): 1,
        ("a2", "2015-03-08"): 0,
        ("a2", "2015-03-09"): 1,
    }


def test_the_lake_mirrors_a_hive_folder_new_changed_removed(tmp_path):
    folder = tmp_path / "p"
    data = folder / "data"

    def day(d: int, rows: list[tuple[str, int]]) -> None:
        part = data / f"dt=2015-03-0{d}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {"artist": [a for a, _ in rows], "day": [date(2015, 3, d)] * len(rows), "n": [n for _, n in rows]}
            ),
            part / "part-0.parquet",
        )

    day(1, [("a", 1), ("b", 2)])
    day(2, [("a", 3)])
    (folder / "musictrend.toml").write_text(DAILY_TOML)
    config = source.load_config(cwd=folder)
    con, result = _ingest(tmp_path, config)
    assert sorted(r.file for r in result.files) == ["dt=2015-03-01/part-0.parquet", "dt=2015-03-02/part-0.parquet"]
    assert _daily(con)[("a", "2015-03-02")] == 3
    day(2, [("a", 5)])
    day(3, [("b", 4)])
    (data / "dt=2015-03-01" / "part-0.parquet").unlink()
    (data / "dt=2015-03-01").rmdir()
    result = ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=config)
    assert {r.file: r.status for r in result.files} == {
        "dt=2015-03-01/part-0.parquet": "removed",
        "dt=2015-03-02/part-0.parquet": "replaced",
        "dt=2015-03-03/part-0.parquet": "loaded",
    }
    assert _daily(con) == {
        ("a", "2015-03-02"): 5,
        ("a", "2015-03-03"): 0,
        ("b", "2015-03-02"): 0,
        ("b", "2015-03-03"): 4,
    }
    again = ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=config)
    assert {r.status for r in again.files} == {"unchanged"}


# ---------------------------------------------------------------------------- the real data in every shape


def _mismatches(con: duckdb.DuckDBPyConnection, columns: str = "plays", where: str = "TRUE") -> list[tuple]:
    diff = " OR ".join(f"a.{c} IS DISTINCT FROM e.{c}" for c in columns.split(","))
    return con.execute(
        f"""
        SELECT e.artist_id, e.ds, e.plays, a.plays
        FROM (SELECT artist_id, strptime(ds, '%Y%m%d')::DATE AS ds, plays, downloads, collects,
                     distinct_users AS listeners
              FROM read_csv($p, header = true, auto_detect = false, columns = {{'artist_id': 'VARCHAR',
                  'ds': 'VARCHAR', 'plays': 'BIGINT', 'downloads': 'BIGINT', 'collects': 'BIGINT',
                  'distinct_users': 'BIGINT'}})) AS e
        FULL JOIN artist_daily AS a ON a.artist_id = e.artist_id AND a.ds = e.ds
        WHERE ({where.replace("ds", "coalesce(e.ds, a.ds)")}) AND ({diff})
        """,
        {"p": str(PACKAGED_ARTIST_DAILY)},
    ).fetchall()


@pytest.mark.parametrize(
    ("shape", "columns"),
    # per-song distinct listeners do not add up to an artist's: daily-song has none (0)
    [("daily-artist", "plays,downloads,collects,listeners"), ("daily-song", "plays,downloads,collects")],
)
def test_daily_shapes_give_todays_artist_daily_exactly(tmp_path, shape, columns):
    toml = write_shape(shape, tmp_path / shape)
    con, result = _ingest(tmp_path, source.load_config(toml))
    assert sum(r.quarantined for r in result.files) == 0
    assert sm.build_all(con, sm.SQL_DIR)["artist_daily"].rows == 9150
    assert _mismatches(con, columns) == []
    listeners = con.execute("SELECT sum(listeners) FROM artist_daily").fetchone()[0]
    assert (listeners > 0) == (shape == "daily-artist")


def test_daily_song_per_song_series(tmp_path):
    toml = write_shape("daily-song", tmp_path / "s")
    toml.write_text(toml.read_text().replace('series_level = "artist"', 'series_level = "song"'))
    config = source.load_config(toml)
    assert config.forecast.series_level == "song"
    con, _ = _ingest(tmp_path, config)
    build_to_artist_daily(con)
    songs = con.execute("SELECT count(DISTINCT artist_id), sum(plays) FROM artist_daily").fetchone()
    expected = con.execute("SELECT count(DISTINCT series_id), sum(plays) FROM raw_daily_plays").fetchone()
    assert songs == expected
    assert songs[0] > 5000  # songs, not the 50 artists
    assert (
        con.execute(
            "SELECT count(*) FROM artist_daily WHERE artist_id NOT IN (SELECT song_id FROM raw_songs)"
        ).fetchone()[0]
        == 0
    )


@pytest.fixture(scope="module")
def shapes(tianchi, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return {s: write_shape(s, root / s, raw_dir=tianchi.actions_file.parent) for s in ("events-csv", "events-parquet")}


@pytest.mark.slow  # the real log, or a whole Dagster run in its own process
def test_events_csv_first_month_gives_todays_artist_daily(tmp_path, shapes):
    """A month of the real log (1.0M events) through the CSV shape: every column of artist_daily."""
    toml = shapes["events-csv"]
    text = toml.read_text().replace('path = "events"', 'path = "events/2015-03.csv"')
    config = source.parse(__import__("tomllib").loads(text), toml)
    con, result = _ingest(tmp_path, config)
    assert sum(r.quarantined for r in result.files) == 0
    sm.build_all(con, sm.SQL_DIR)
    assert con.execute("SELECT count(*), count(DISTINCT ds) FROM artist_daily").fetchone() == (50 * 31, 31)
    march = "ds < DATE '2015-04-01'"
    assert _mismatches(con, "plays,downloads,collects,listeners", march) == []


@pytest.mark.slow  # the real log, or a whole Dagster run in its own process
def test_events_parquet_full_log_gives_todays_artist_daily(tmp_path, shapes):
    """All 5.65M events, Hive-partitioned Parquet read typed, the artist in the log: every column."""
    con, result = _ingest(tmp_path, source.load_config(shapes["events-parquet"]))
    events = [r for r in result.files if r.kind == "events"]  # and the catalogue of publish dates
    assert len(events) == 183
    assert sum(r.loaded for r in events) == 5_652_232
    assert sum(r.quarantined for r in result.files) == 0
    assert sm.build_all(con, sm.SQL_DIR)["artist_daily"].rows == 9150
    assert _mismatches(con, "plays,downloads,collects,listeners") == []


def test_cli_init_and_sample_as(tmp_path, capsys):
    from musictrend_dagster.cli import main

    assert main(["init", "--kind", "events", "--dir", str(tmp_path)]) == 0
    assert 'kind = "events"' in (tmp_path / "musictrend.toml").read_text()
    assert main(["init", "--dir", str(tmp_path)]) == 2
    assert "already exists (not overwritten)" in capsys.readouterr().err
    out = tmp_path / "shape"
    assert main(["sample", "--source", "tianchi-s1", "--as", "daily-artist", "--out", str(out)]) == 0
    config = source.load_config(out / "musictrend.toml")
    assert (config.source.series, config.source.day_format) == ("artist_id", "%Y%m%d")
    assert (out / "plays.csv").read_text().splitlines()[0] == (
        "artist_id,gmt_date,artist_moving,artist_downloads,artist_collects,artist_listeners"
    )


@pytest.mark.slow  # the real log, or a whole Dagster run in its own process
def test_musictrend_ingest_reads_the_description_in_the_working_folder(tmp_path):
    """The real command, in its own process: ./musictrend.toml found, the ingest and SQL models through Dagster."""
    import os
    import subprocess
    import sys

    rows = [f"art{a},201502{d:02d},{10 * a + d}" for a in range(5) for d in range(1, 29)]
    _project(
        tmp_path,
        '[source]\nkind = "daily"\npath = "data/plays.csv"\nseries = "artist_id"\nday = "gmt_date"\n'
        'day_format = "%Y%m%d"\nplays = "artist_moving"\n',
        {"data/plays.csv": "artist_id,gmt_date,artist_moving\n" + "\n".join([*rows, "art1,20150230,5"]) + "\n"},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTREND_", "DAGSTER_", "MLFLOW_"))}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("musictrend")), "ingest", "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = {p[0]: p[1:] for line in done.stdout.splitlines() if (p := line.split()) and p[0] == "plays.csv"}
    assert table["plays.csv"] == ["loaded", "141", "140", "1", "0"]
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), sum(plays) FROM artist_daily").fetchone() == (
        140,
        sum(10 * a + d for a in range(5) for d in range(1, 29)),
    )


def test_two_files_with_the_same_series_day_fail_the_sql_test(tmp_path):
    config = _project(
        tmp_path / "p",
        DAILY_TOML,
        {
            "data/a.csv": "artist,day,n\nx,2015-03-01,1\n",
            "data/b.csv": "artist,day,n\nx,2015-03-01,2\ny,2015-03-01,1\n",
        },
    )
    con, _ = _ingest(tmp_path, config)
    sm.build_all(con, sm.SQL_DIR)
    (test,) = [t for t in sm.load_tests(sm.SQL_DIR / "tests") if t.model == "stg_daily_plays"]
    failing, sample = sm.run_test(con, test)
    assert failing == 1
    assert sample[0] == ("x", date(2015, 3, 1), 2, "a.csv", "b.csv")


def test_a_zstd_csv_is_read_and_its_bad_line_numbered(tmp_path):
    import zstandard

    text = "unique_id,ds,y\na,2015-03-01,1\na,2015-03-02,x\nb,2015-03-01,2\n"
    config = _project(
        tmp_path / "p",
        '[source]\nkind = "daily"\npath = "plays.csv.zst"\n',
        {"plays.csv.zst": zstandard.ZstdCompressor().compress(text.encode())},
    )
    con, result = _ingest(tmp_path, config)
    assert [(r.lines_read, r.loaded, r.quarantined) for r in result.files] == [(3, 2, 1)]
    assert _quarantine(con) == {3: "y not a non-negative whole number"}


def test_source_paths_are_literal_never_globs(tmp_path):
    """A folder `data[1]` and files `a*.csv` and `a?.parquet` are read as named, each once."""
    folder = tmp_path / "p"
    (folder / "data[1]").mkdir(parents=True)
    (folder / "data[1]" / "a*.csv").write_text("artist,day,n\nx,2015-03-01,1\n")
    pq.write_table(
        pa.table({"artist": ["y"], "day": [date(2015, 3, 1)], "n": pa.array([2], pa.int64())}),
        folder / "data[1]" / "a?.parquet",
    )
    (folder / "musictrend.toml").write_text(DAILY_TOML.replace('path = "data"', 'path = "data[1]"'))
    con, result = _ingest(tmp_path, source.load_config(cwd=folder))
    assert sorted((r.file, r.loaded) for r in result.files) == [("a*.csv", 1), ("a?.parquet", 1)]
    assert _daily(con) == {("x", "2015-03-01"): 1, ("y", "2015-03-01"): 2}


def test_a_changed_description_reloads_unchanged_files(tmp_path):
    """The same file read under another time zone is another load: replaced, not kept as it was."""
    log = "u,s,a,t\nu1,s1,a1,2015-03-01T20:00:00Z\n"
    toml = '[source]\nkind = "events"\npath = "log.csv"\nuser = "u"\nsong = "s"\nartist = "a"\ntime = "t"\n'
    config = _project(tmp_path / "p", toml, {"log.csv": log})
    con, _ = _ingest(tmp_path, config)
    assert _daily(con) == {("a1", "2015-03-01"): 1}
    again = ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=config)
    assert [r.status for r in again.files] == ["unchanged"]
    (tmp_path / "p" / "musictrend.toml").write_text(toml + 'timezone = "Asia/Shanghai"\n')
    moved = ingest.ingest_raw_dir(con, None, tmp_path / "lake", config=source.load_config(cwd=tmp_path / "p"))
    assert [r.status for r in moved.files] == ["replaced"]
    assert _daily(con) == {("a1", "2015-03-02"): 1}
