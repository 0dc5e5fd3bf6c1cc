"""Described sources on Spark: the same lake, quarantine and artist_daily as on DuckDB.

One local session (the conftest's ``spark_session``), small inputs: the real daily-artist shape
(all 9,150 artist-days, exact against the packaged aggregates) and a hostile project: a daily CSV
with a header and bad rows, and an events log as Hive-partitioned Parquet with bad rows and
timestamps on both sides of midnight in Shanghai.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_sources import DAILY_TOML, QUOTED_LINES, _mismatches, build_to_artist_daily

from musictrend_dagster.core.data import ingest, source, sql_models, warehouse
from musictrend_dagster.core.sample.shapes import write_shape

EVENTS_TOML = """\
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
"""


def _hostile(root: Path) -> tuple[source.Config, source.Config]:
    daily = root / "daily"
    (daily / "data").mkdir(parents=True)
    lines = ["artist,day,n"] + [f"a{i % 7},2015-03-{1 + i // 7:02d},{i}" for i in range(140)]
    lines[5] = lines[4].rsplit(",", 1)[0] + ",77"  # a duplicate series-day (lines 5 and 6)
    lines[20] = "a1,2015-02-30,1"
    lines[30] = "a2,2015-03-31,-3"
    lines[40] = ",2015-03-09,1"
    lines[50] = "a3,2015-03-31,1.5"
    (daily / "data" / "plays.csv").write_text("\n".join(lines) + "\n")
    (daily / "musictrend.toml").write_text(DAILY_TOML)

    events = root / "events"
    midnight = datetime(2015, 3, 1, 16, tzinfo=UTC)  # 00:00 on Mar 2 in Shanghai
    for day, rows in {
        "2015-03-01": [
            ("u1", "s1", "x", midnight.timestamp() - 1, "play"),
            ("u2", "s1", "x", midnight.timestamp(), "play"),  # Mar 2 local, in Mar 1's (UTC) folder
            ("u3", "s2", "y", midnight.timestamp() - 60, "download"),
            ("u3", "s2", "y", midnight.timestamp() - 30, "like"),  # unmapped
            ("", "s2", "y", midnight.timestamp() - 30, "play"),  # empty user
            ("u4", "s2", None, midnight.timestamp() - 30, "play"),  # no artist
        ],
        "2015-03-02": [("u1", "s1", "x", midnight.timestamp() + 3600, "play")],
    }.items():
        folder = events / "events" / f"dt={day}"
        folder.mkdir(parents=True)
        uid, sid, singer, ts, action = zip(*rows, strict=True)
        pq.write_table(
            pa.table(
                {
                    "uid": list(uid),
                    "sid": list(sid),
                    "singer": list(singer),
                    "ts": pa.array([datetime.fromtimestamp(t, UTC) for t in ts], pa.timestamp("us", tz="UTC")),
                    "action": list(action),
                }
            ),
            folder / "part-0.parquet",
        )
    (events / "musictrend.toml").write_text(EVENTS_TOML)
    return source.load_config(cwd=daily), source.load_config(cwd=events)


EVENTS_CSV_TOML = """\
[source]
kind = "events"
path = "log"
user = "listener"
song = "track"
time = "played_at"
timezone = "Asia/Shanghai"
action = "event"
plays_when = ["play"]
downloads_when = ["download"]
other_when = ["skip"]

[catalogue]
path = "catalogue.csv"
song = "track"
artist = "singer"
publish = "released"
publish_format = "%Y%m%d"
"""


def _hostile_csv(root: Path) -> tuple[source.Config, source.Config]:
    """An events CSV with a catalogue (its own bad lines too), and a zstd daily CSV: both hostile."""
    import zstandard

    events = root / "events-csv"
    (events / "log").mkdir(parents=True)
    (events / "catalogue.csv").write_text(
        "track,singer,released\n"
        "s1,x,20150201\n"
        "s2,y,20150230\n"  # 3: not a day
        "s3,x,\n"  # 4: no date: fine
        "s4,x,20150101\n"  # 5: s4 with two artists (5 and 6)
        "s4,y,20150101\n"
        ",y,20150101\n"  # 7: empty song
    )
    log = [
        "listener,track,played_at,event",
        "u1,s1,2015-03-01T23:59:59+08:00,play",  # 2: Mar 1
        "u2,s1,2015-03-01T16:00:00Z,play",  # 3: 00:00 on Mar 2 in Shanghai
        "u3,s3,2015-03-01T10:00:00+08:00,download",  # 4
        "u3,s3,2015-03-01T10:00:00+08:00,like",  # 5: unmapped event
        "u4,s9,2015-03-01T10:00:00+08:00,play",  # 6: song not in the catalogue
        "u4,s1,1425182400,play",  # 7: a second time format
        "u5,s1,2015-03-01T11:00:00+08:00,skip",  # 8: kept, no play
        "u6,s1,2015-03-01T11:00:00+08:00",  # 9: a field short
        ",s1,2015-03-01T11:00:00+08:00,play",  # 10: empty listener
        "u7,s4,2015-03-01T11:00:00+08:00,play",  # 11: its song was quarantined (two artists)
    ]
    (events / "log" / "2015-03.csv").write_text("\n".join(log) + "\n")
    (events / "musictrend.toml").write_text(EVENTS_CSV_TOML)

    daily = root / "daily-zst"
    (daily / "data").mkdir(parents=True)
    lines = ["artist,day,n"] + [f"a{i % 5},2015-03-{1 + i // 5:02d},{i}" for i in range(50)]
    lines[7] = "a1,2015-03-32,1"
    lines[9] = "a3,2015-03-02,x"
    text = "\n".join(lines) + "\n"
    (daily / "data" / "plays.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    (daily / "musictrend.toml").write_text(DAILY_TOML)
    return source.load_config(cwd=events), source.load_config(cwd=daily)


def _run(home: Path, config: source.Config, engine) -> dict[str, list]:
    home.mkdir()
    con = warehouse.connect(home / "wh.duckdb")
    ingest.ingest_raw_dir(con, None, home / "lake", config=config, engine=engine)
    sql_models.build_all(con, engine=engine)
    found = {
        t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        for t in (
            "raw_daily_plays",
            "raw_events",
            "raw_songs",
            "quarantine_user_actions",
            "quarantine_songs",
            "artist_daily",
        )
    }
    found["files"] = con.execute(
        "SELECT file, lines_read, loaded, quarantined, reasons FROM ingested_files ORDER BY file"
    ).fetchall()
    con.close()
    return found


@pytest.mark.spark
def test_described_sources_on_spark_equal_duckdb_and_the_real_data(spark_session, tmp_path):
    from musictrend_dagster.core.data.engines.spark import SparkEngine

    spark = SparkEngine(spark_session)
    daily, events = _hostile(tmp_path / "in")
    for name, config in (("daily", daily), ("events", events)):
        on_duckdb = _run(tmp_path / f"{name}-duckdb", config, None)
        on_spark = _run(tmp_path / f"{name}-spark", config, spark)
        assert on_spark == on_duckdb, name
        quarantined = sum(q for _, _, _, q, _ in on_duckdb["files"])
        assert quarantined == {"daily": 6, "events": 3}[name]
    reasons = dict((line, reason) for _, line, _, reason in on_duckdb["quarantine_user_actions"])
    assert reasons[4] == "event like in none of plays_when, downloads_when, collects_when, other_when"
    plays = {(a, str(d)): p for a, d, p, *_ in on_duckdb["artist_daily"]}
    assert plays == {("x", "2015-03-01"): 1, ("x", "2015-03-02"): 2, ("y", "2015-03-01"): 0, ("y", "2015-03-02"): 0}

    toml = write_shape("daily-artist", tmp_path / "real")
    con = warehouse.connect(tmp_path / "real-home.duckdb")
    ingest.ingest_raw_dir(con, None, tmp_path / "real-lake", config=source.load_config(toml), engine=spark)
    build_to_artist_daily(con, engine=spark)
    assert con.execute("SELECT count(*) FROM artist_daily").fetchone()[0] == 9150
    assert _mismatches(con) == []


@pytest.mark.spark
def test_an_events_csv_with_a_catalogue_and_a_zstd_csv_on_spark_equal_duckdb(spark_session, tmp_path):
    from musictrend_dagster.core.data.engines.spark import SparkEngine

    spark = SparkEngine(spark_session)
    events, daily = _hostile_csv(tmp_path / "in")
    found = {}
    for name, config in (("events", events), ("daily", daily)):
        on_duckdb = _run(tmp_path / f"{name}-duckdb", config, None)
        on_spark = _run(tmp_path / f"{name}-spark", config, spark)
        assert on_spark == on_duckdb, name
        found[name] = on_duckdb
    songs = {line: reason for _, line, _, reason in found["events"]["quarantine_songs"]}
    assert songs == {
        3: "released not a day as %Y%m%d",
        5: "song listed with two different artists",
        6: "song listed with two different artists",
        7: "empty or missing song",
    }
    actions = {line: reason for _, line, _, reason in found["events"]["quarantine_user_actions"]}
    assert actions == {
        5: "event like in none of plays_when, downloads_when, collects_when, other_when",
        6: "song not in the catalogue",
        7: "played_at not an ISO-8601 time with an offset (2026-11-30T23:59:59+08:00)",
        9: "wrong column count: 3 (expected 4)",
        10: "empty or missing user",
        11: "song not in the catalogue",
    }
    plays = {(a, str(d)): (p, dl) for a, d, p, dl, *_ in found["events"]["artist_daily"]}
    assert plays == {("x", "2015-03-01"): (1, 1), ("x", "2015-03-02"): (1, 0)}
    daily_reasons = {line: reason for _, line, _, reason in found["daily"]["quarantine_user_actions"]}
    assert daily_reasons == {8: "day not an ISO date", 10: "n not a non-negative whole number"}
    assert [(f, r, lo, q) for f, r, lo, q, _ in found["daily"]["files"]] == [("plays.csv.zst", 50, 48, 2)]


@pytest.mark.spark
def test_quoted_csv_fields_on_spark_equal_duckdb(spark_session, tmp_path):
    from musictrend_dagster.core.data.engines.spark import SparkEngine

    project = tmp_path / "in"
    (project / "data").mkdir(parents=True)
    (project / "data" / "a.csv").write_text("\n".join(QUOTED_LINES) + "\n")
    (project / "musictrend.toml").write_text(DAILY_TOML)
    config = source.load_config(cwd=project)
    on_duckdb = _run(tmp_path / "duckdb", config, None)
    assert _run(tmp_path / "spark", config, SparkEngine(spark_session)) == on_duckdb
    assert [(f, r, lo, q) for f, r, lo, q, _ in on_duckdb["files"]] == [("a.csv", 7, 2, 5)]
