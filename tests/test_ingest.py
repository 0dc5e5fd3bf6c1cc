"""Ingest behaviour on small hand-written raw folders: loading, atomicity, idempotency, drops."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import duckdb
import pytest

from musictrend_dagster.core import ingest
from musictrend_dagster.settings import ACTIONS_PREFIX, SONGS_FILE

DAY0 = 1425168000  # 2015-03-01 00:00 UTC
NOON = DAY0 + 4 * 3600  # 2015-03-01 12:00 UTC+8
SONGS = ["s1,a1,20140101,100,1,1", "s2,a1,20140202,200,1,1", "s3,a2,20140303,300,2,2"]


def write_lines(path: Path, lines: list[str], ending: str = "\n") -> Path:
    path.write_bytes("".join(line + ending for line in lines).encode())
    return path


def action(user: str, song: str, ts: int = NOON, kind: int = 1, ds: str = "20150301") -> str:
    return f"{user},{song},{ts},{kind},{ds}"


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    write_lines(d / SONGS_FILE, SONGS)
    write_lines(d / f"{ACTIONS_PREFIX}.csv", [action("u1", "s1"), action("u2", "s3", kind=2), action("u1", "s2", kind=3)])
    return d


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = ingest.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    yield c
    c.close()


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    return {t: sorted(con.execute(f"SELECT * EXCLUDE ({'loaded_at' if t == 'ingested_files' else 'source_file'}) FROM {t}").fetchall(), key=repr)
            for t in ("raw_user_actions", "raw_songs", "quarantine_user_actions", "quarantine_songs", "ingested_files")}


def test_loads_small_folder_with_types(raw, con):
    reports = ingest.ingest_raw_dir(con, raw)
    assert [(r.file, r.lines_read, r.loaded, r.quarantined) for r in reports] == [
        (SONGS_FILE, 3, 3, 0), (f"{ACTIONS_PREFIX}.csv", 3, 3, 0)]
    rows = con.execute("SELECT * FROM raw_user_actions ORDER BY user_id, song_id").fetchall()
    assert rows[0] == ("u1", "s1", NOON, 1, date(2015, 3, 1), f"{ACTIONS_PREFIX}.csv")
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'raw_user_actions'").fetchall())
    assert types == {"user_id": "VARCHAR", "song_id": "VARCHAR", "gmt_create": "BIGINT", "action_type": "UTINYINT",
                     "ds": "DATE", "source_file": "VARCHAR"}
    assert con.execute("SELECT * EXCLUDE (source_file) FROM raw_songs WHERE song_id = 's3'").fetchall() == [
        ("s3", "a2", date(2014, 3, 3), 300, 2, 2)]


def test_failure_mid_load_leaves_previous_tables(raw, con, monkeypatch):
    ingest.ingest_raw_dir(con, raw)
    before = snapshot(con)
    bulk = raw / f"{ACTIONS_PREFIX}.csv"
    write_lines(bulk, [action("u9", "s1")] * 5 + ["broken"])
    os.utime(bulk, ns=(1, 1))

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest, "_record_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest.load_actions(con, bulk)
    assert snapshot(con) == before
    monkeypatch.undo()
    report = ingest.load_actions(con, bulk)  # and the next attempt loads it
    assert (report.loaded, report.quarantined, report.skipped_unchanged) == (5, 1, False)


def test_sigkill_mid_load_leaves_previous_tables(raw, tmp_path):
    db = tmp_path / "killed.duckdb"
    con = ingest.connect(db, memory_limit="1GB")
    ingest.ingest_raw_dir(con, raw)
    before = snapshot(con)
    con.close()
    bulk = raw / f"{ACTIONS_PREFIX}.csv"
    write_lines(bulk, [action("u9", "s1")] * 7)
    script = textwrap.dedent(f"""
        import os, signal
        from musictrend_dagster.core import ingest
        ingest._record_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        con = ingest.connect({str(db)!r}, memory_limit="1GB")
        ingest.load_actions(con, {str(bulk)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    con = ingest.connect(db, memory_limit="1GB")
    assert snapshot(con) == before
    con.close()


def test_loading_twice_changes_nothing(raw, con):
    first = ingest.ingest_raw_dir(con, raw)
    before = snapshot(con)
    second = ingest.ingest_raw_dir(con, raw)
    assert [r.skipped_unchanged for r in second] == [True, True]
    assert [(r.lines_read, r.loaded, r.quarantined) for r in second] == [
        (r.lines_read, r.loaded, r.quarantined) for r in first]
    assert snapshot(con) == before


def test_drop_files_load_once_each_in_date_order(raw, con):
    ingest.ingest_raw_dir(con, raw)
    write_lines(raw / f"{ACTIONS_PREFIX}_20150302.csv", [action("u5", "s1", NOON + 86400, 1, "20150302")])
    write_lines(raw / f"{ACTIONS_PREFIX}_20150303.csv", [action("u6", "s2", NOON + 2 * 86400, 1, "20150303")])
    assert [p.name for p in ingest.discover_action_files(raw)] == [
        f"{ACTIONS_PREFIX}.csv", f"{ACTIONS_PREFIX}_20150302.csv", f"{ACTIONS_PREFIX}_20150303.csv"]
    reports = ingest.ingest_raw_dir(con, raw)
    assert [r.skipped_unchanged for r in reports] == [True, True, False, False]
    again = ingest.ingest_raw_dir(con, raw)
    assert all(r.skipped_unchanged for r in again)
    assert con.execute("SELECT source_file, count(*) FROM raw_user_actions GROUP BY 1 ORDER BY 1").fetchall() == [
        (f"{ACTIONS_PREFIX}.csv", 3), (f"{ACTIONS_PREFIX}_20150302.csv", 1), (f"{ACTIONS_PREFIX}_20150303.csv", 1)]


def test_progress_reports_running_total(raw, con):
    write_lines(raw / f"{ACTIONS_PREFIX}_20150302.csv", [action("u5", "s1", NOON + 86400, 1, "20150302")] * 2)
    seen: list[int] = []
    ingest.ingest_raw_dir(con, raw, progress=seen.append)
    assert seen == [3, 5]


def test_neighbouring_day_rows_load_but_two_days_away_do_not(raw, con):
    late_evening = DAY0 + 15 * 3600 + 1800  # 2015-03-01 23:30 UTC+8
    write_lines(raw / f"{ACTIONS_PREFIX}.csv", [
        action("u1", "s1", late_evening, 1, "20150302"),  # next day: loaded (Ds is authoritative)
        action("u1", "s1", late_evening, 1, "20150228"),  # previous day: loaded
        action("u1", "s1", late_evening, 1, "20150303"),  # two days away: quarantined
    ])
    (_, report) = ingest.ingest_raw_dir(con, raw)
    assert (report.loaded, report.quarantined) == (2, 1)
    assert con.execute("SELECT ds FROM raw_user_actions ORDER BY ds").fetchall() == [
        (date(2015, 2, 28),), (date(2015, 3, 2),)]
    assert con.execute("SELECT line_no, reason FROM quarantine_user_actions").fetchall() == [
        (3, "Ds more than one day from gmt_create (UTC+8)")]


def test_exact_duplicate_lines_are_kept(raw, con):
    write_lines(raw / f"{ACTIONS_PREFIX}.csv", [action("u1", "s1")] * 3 + [action("u2", "s1")])
    (_, report) = ingest.ingest_raw_dir(con, raw)
    assert (report.lines_read, report.loaded, report.quarantined) == (4, 4, 0)
    assert con.execute("SELECT count(*) FROM raw_user_actions WHERE user_id = 'u1'").fetchone() == (3,)


def test_changed_songs_file_reloads_actions(raw, con):
    write_lines(raw / f"{ACTIONS_PREFIX}.csv", [action("u1", "s1"), action("u1", "s4")])
    (_, report) = ingest.ingest_raw_dir(con, raw)
    assert report.reasons == {"unknown song_id": 1}
    write_lines(raw / SONGS_FILE, SONGS + ["s4,a2,20140404,1,1,1"])
    (songs, report) = ingest.ingest_raw_dir(con, raw)
    assert not songs.skipped_unchanged and not report.skipped_unchanged
    assert (report.loaded, report.quarantined) == (2, 0)
    assert con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone() == (0,)
