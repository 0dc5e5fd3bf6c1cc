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
from test_sources import DAILY_TOML, _mismatches, build_to_artist_daily

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


def _run(home: Path, config: source.Config, engine) -> dict[str, list]:
    home.mkdir()
    con = warehouse.connect(home / "wh.duckdb")
    ingest.ingest_raw_dir(con, None, home / "lake", config=config, engine=engine)
    sql_models.build_all(con, engine=engine)
    found = {
        t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        for t in ("raw_daily_plays", "raw_events", "quarantine_user_actions", "artist_daily")
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
