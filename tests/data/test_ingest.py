"""Ingest on small hand-written raw folders: the lake mirrors the raw folder, atomically.

Loading, types, idempotency, drops, the mirror rules (changed, removed, gzip twins, same
content twice), literal paths, symlinks, naming-contract warnings, and what a failure or a
SIGKILL in the middle of a publish leaves behind.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from musictrend_dagster.core.data import ingest, rawdir, warehouse
from musictrend_dagster.core.data.ingest import IngestFailed
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

DAY0 = 1425168000  # 2015-03-01 00:00 UTC
NOON = DAY0 + 4 * 3600  # 2015-03-01 12:00 UTC+8
SONGS = ["s1,a1,20140101,100,1,1", "s2,a1,20140202,200,1,1", "s3,a2,20140303,300,2,2"]
BULK = f"{ACTIONS_PREFIX}.csv"


def write_lines(path: Path, lines: list[str], ending: str = "\n") -> Path:
    path.write_bytes("".join(line + ending for line in lines).encode())
    return path


def action(user: str, song: str, ts: int = NOON, kind: int = 1, ds: str = "20150301") -> str:
    return f"{user},{song},{ts},{kind},{ds}"


def drop_name(day: str) -> str:
    return f"{ACTIONS_PREFIX}_{day}.csv"


def day_lines(day: int, n: int, user: str = "u", song: str = "s1") -> list[str]:
    """n good lines on 2015-03-<day> (noon UTC+8)."""
    return [action(f"{user}{i}", song, NOON + (day - 1) * 86400, 1, f"201503{day:02d}") for i in range(n)]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    write_lines(d / SONGS_FILE, SONGS)
    write_lines(d / BULK, [action("u1", "s1"), action("u2", "s3", kind=2), action("u1", "s2", kind=3)])
    return d


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    yield c
    c.close()


def run(con, raw: Path, **kwargs) -> ingest.IngestResult:
    return ingest.ingest_raw_dir(con, raw, raw.parent / "lake", **kwargs)


def rows_by_file(con) -> dict[str, int]:
    return dict(con.execute("SELECT source_file, count(*) FROM raw_user_actions GROUP BY 1 ORDER BY 1").fetchall())


def snapshot(con) -> dict[str, list]:
    """What readers see: the views, quarantine, bookkeeping and manifest (no timestamps)."""
    tables = {
        "raw_user_actions": "*",
        "raw_songs": "*",
        "quarantine_user_actions": "*",
        "quarantine_songs": "*",
        "ingested_files": "* EXCLUDE (loaded_at)",
        "lake_files": "*",
    }
    return {t: sorted(con.execute(f"SELECT {cols} FROM {t}").fetchall(), key=repr) for t, cols in tables.items()}


def lake_files_on_disk(raw: Path) -> set[str]:
    lake = raw.parent / "lake"
    return {str(p.relative_to(lake)) for p in lake.rglob("*.parquet")}


def assert_lake_matches_manifest(con, raw: Path) -> None:
    listed = {p for (p,) in con.execute("SELECT path FROM lake_files").fetchall()}
    assert lake_files_on_disk(raw) == listed


# ---------------------------------------------------------------------------- loading


def test_loads_small_folder_into_the_lake_with_types(raw, con):
    result = run(con, raw)
    assert [(r.file, r.status, r.lines_read, r.loaded, r.quarantined) for r in result.files] == [
        (SONGS_FILE, "loaded", 3, 3, 0),
        (BULK, "loaded", 3, 3, 0),
    ]
    rows = con.execute("SELECT * FROM raw_user_actions ORDER BY user_id, song_id").fetchall()
    assert rows[0] == ("u1", "s1", NOON, 1, date(2015, 3, 1), BULK)
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'raw_user_actions'"
        ).fetchall()
    )
    assert types == {
        "user_id": "VARCHAR",
        "song_id": "VARCHAR",
        "gmt_create": "BIGINT",
        "action_type": "TINYINT",
        "ds": "DATE",
        "source_file": "VARCHAR",
    }
    assert con.execute("SELECT * EXCLUDE (source_file) FROM raw_songs WHERE song_id = 's3'").fetchall() == [
        ("s3", "a2", date(2014, 3, 3), 300, 2, 2)
    ]
    assert lake_files_on_disk(raw) == {
        f"user_actions/ds=2015-03-01/{BULK}.{result_load_id(con, BULK)}.0.parquet",
        f"songs/{SONGS_FILE}.{result_load_id(con, SONGS_FILE)}.0.parquet",
    }


def result_load_id(con, name: str) -> str:
    return con.execute("SELECT load_id FROM ingested_files WHERE file = $f", {"f": name}).fetchone()[0]


def test_the_lake_is_plain_hive_parquet_that_other_readers_read(raw, con):
    """No warehouse needed: polars and a bare DuckDB read the lake folder directly."""
    import polars as pl

    run(con, raw)
    lake = raw.parent / "lake"
    frame = pl.scan_parquet(lake / "user_actions" / "**" / "*.parquet", hive_partitioning=True).collect()
    assert frame.height == 3 and frame["ds"].dtype == pl.Date and set(frame["ds"]) == {date(2015, 3, 1)}
    bare = duckdb.connect()
    assert bare.execute(
        f"SELECT count(*), min(ds) FROM read_parquet('{lake}/user_actions/*/*.parquet', hive_partitioning = true)"
    ).fetchone() == (3, date(2015, 3, 1))


def test_loading_twice_changes_nothing(raw, con):
    first = run(con, raw)
    before = snapshot(con)
    second = run(con, raw)
    assert [r.status for r in second.files] == ["unchanged", "unchanged"]
    assert [(r.lines_read, r.loaded, r.quarantined) for r in second.files] == [
        (r.lines_read, r.loaded, r.quarantined) for r in first.files
    ]
    assert snapshot(con) == before


def test_drop_files_load_once_each_in_date_order(raw, con):
    run(con, raw)
    write_lines(raw / drop_name("20150302"), day_lines(2, 1))
    write_lines(raw / drop_name("20150303"), day_lines(3, 1))
    result = run(con, raw)
    assert [(r.file, r.status) for r in result.files] == [
        (SONGS_FILE, "unchanged"),
        (BULK, "unchanged"),
        (drop_name("20150302"), "loaded"),
        (drop_name("20150303"), "loaded"),
    ]
    assert all(r.skipped_unchanged for r in run(con, raw).files)
    assert rows_by_file(con) == {BULK: 3, drop_name("20150302"): 1, drop_name("20150303"): 1}
    assert con.execute(
        "SELECT DISTINCT ds FROM raw_user_actions WHERE source_file = $f", {"f": drop_name("20150303")}
    ).fetchall() == [(date(2015, 3, 3),)]


def test_progress_reports_running_total(raw, con):
    write_lines(raw / drop_name("20150302"), day_lines(2, 2))
    seen: list[int] = []
    run(con, raw, progress=seen.append)
    assert seen == [3, 5]


def test_neighbouring_day_rows_load_but_two_days_away_do_not(raw, con):
    late_evening = DAY0 + 15 * 3600 + 1800  # 2015-03-01 23:30 UTC+8
    write_lines(
        raw / BULK,
        [
            action("u1", "s1", late_evening, 1, "20150302"),  # next day: loaded (Ds is authoritative)
            action("u1", "s1", late_evening, 1, "20150228"),  # previous day: loaded
            action("u1", "s1", late_evening, 1, "20150303"),  # two days away: quarantined
        ],
    )
    report = run(con, raw).report(BULK)
    assert (report.loaded, report.quarantined) == (2, 1)
    assert con.execute("SELECT ds FROM raw_user_actions ORDER BY ds").fetchall() == [
        (date(2015, 2, 28),),
        (date(2015, 3, 2),),
    ]
    assert con.execute("SELECT line_no, reason FROM quarantine_user_actions").fetchall() == [
        (3, "Ds more than one day from gmt_create (UTC+8)")
    ]


def test_exact_duplicate_lines_are_kept(raw, con):
    write_lines(raw / BULK, [action("u1", "s1")] * 3 + [action("u2", "s1")])
    report = run(con, raw).report(BULK)
    assert (report.lines_read, report.loaded, report.quarantined) == (4, 4, 0)
    assert con.execute("SELECT count(*) FROM raw_user_actions WHERE user_id = 'u1'").fetchone() == (3,)


def test_changed_song_ids_reload_the_actions_but_other_song_changes_do_not(raw, con):
    write_lines(raw / BULK, [action("u1", "s1"), action("u1", "s4")])
    assert run(con, raw).report(BULK).reasons == {"unknown song_id": 1}
    write_lines(raw / SONGS_FILE, [*SONGS, "s4,a2,20140404,1,1,1"])
    result = run(con, raw)
    assert [r.status for r in result.files] == ["replaced", "replaced"]
    assert (result.report(BULK).loaded, result.report(BULK).quarantined) == (2, 0)
    assert con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone() == (0,)
    write_lines(raw / SONGS_FILE, [s.replace(",1,1", ",9,9") for s in SONGS] + ["s4,a2,20140404,1,9,9"])
    result = run(con, raw)
    assert [r.status for r in result.files] == ["replaced", "unchanged"]


# ---------------------------------------------------------------------------- the mirror


def test_a_changed_file_leaves_exactly_its_new_rows(raw, con):
    """Issue 15 #2: re-ingesting a changed file must not keep any of its old rows."""
    run(con, raw)
    write_lines(raw / BULK, [action("u7", "s2"), action("u8", "s2"), action("u9", "s3"), action("u9", "s9")])
    report = run(con, raw).report(BULK)
    assert (report.status, report.loaded, report.quarantined, report.removed) == ("replaced", 3, 1, 3)
    assert sorted(con.execute("SELECT user_id, song_id FROM raw_user_actions").fetchall()) == [
        ("u7", "s2"),
        ("u8", "s2"),
        ("u9", "s3"),
    ]
    assert con.execute("SELECT line_no, reason FROM quarantine_user_actions").fetchall() == [(4, "unknown song_id")]
    assert_lake_matches_manifest(con, raw)


def test_a_removed_drop_file_takes_its_rows_with_it(raw, con):
    """Case 1: a drop deleted from the raw folder loses its rows, quarantine and bookkeeping."""
    drop = raw / drop_name("20150302")
    write_lines(drop, [*day_lines(2, 4), "garbage"])
    run(con, raw)
    assert rows_by_file(con)[drop.name] == 4
    drop.unlink()
    result = run(con, raw)
    report = result.report(drop.name)
    assert (report.status, report.removed) == ("removed", 4)
    assert drop.name in report.message
    assert rows_by_file(con) == {BULK: 3}
    assert con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone() == (0,)
    assert con.execute("SELECT file FROM ingested_files ORDER BY file").fetchall() == [(SONGS_FILE,), (BULK,)]
    assert not (raw.parent / "lake" / "user_actions" / "ds=2015-03-02").exists()
    assert_lake_matches_manifest(con, raw)


def test_a_file_replaced_by_its_own_gzip_is_the_same_source(raw, con):
    """Case 1: `gzip mars_tianchi_user_actions.csv` then a run: nothing doubles, nothing is reloaded."""
    run(con, raw)
    before = rows_by_file(con)
    bulk = raw / BULK
    (raw / (BULK + ".gz")).write_bytes(gzip.compress(bulk.read_bytes()))
    bulk.unlink()
    result = run(con, raw)
    assert result.report(BULK).status == "unchanged"
    assert rows_by_file(con) == before == {BULK: 3}
    path = con.execute("SELECT path FROM ingested_files WHERE file = $f", {"f": BULK}).fetchone()[0]
    assert path.endswith(BULK + ".gz")
    assert run(con, raw).report(BULK).status == "unchanged"


def test_a_file_and_its_gzip_side_by_side_is_one_error_naming_both(raw, con):
    """Case 1 with `gzip -k`: both present is an error naming both; neither is loaded twice."""
    run(con, raw)
    (raw / (BULK + ".gz")).write_bytes(gzip.compress((raw / BULK).read_bytes()))
    with pytest.raises(IngestFailed) as failed:
        run(con, raw)
    message = str(failed.value)
    assert str(raw / BULK) in message and str(raw / (BULK + ".gz")) in message and "twice" in message
    assert rows_by_file(con) == {BULK: 3}, "the previous rows stay while the error lasts"


def test_the_same_drop_under_two_names_is_refused_naming_both(raw, con):
    """Case 3: a drop's content saved again under another (valid) name loads once."""
    first, second = raw / drop_name("20150302"), raw / drop_name("20150303")
    write_lines(first, day_lines(2, 3))
    run(con, raw)
    shutil.copy(first, second)
    with pytest.raises(IngestFailed) as failed:
        run(con, raw)
    assert str(second) in str(failed.value) and first.name in str(failed.value)
    assert rows_by_file(con) == {BULK: 3, first.name: 3}


def test_files_staged_at_once_publish_exactly_as_one_at_a_time(raw, tmp_path, monkeypatch):
    """DuckDB stages several files at once (each on its own cursor) but publishes them in order: the lake,
    the quarantine and the reports equal a one-at-a-time run's, a repeated drop is refused naming the
    earlier one in both, and two files really were being staged at the same moment."""
    import threading
    import time

    from musictrend_dagster.core.data.engines import duckdb as duckdb_engine

    for day in range(2, 9):
        write_lines(raw / drop_name(f"201503{day:02d}"), day_lines(day, 40, user=f"d{day}u"))
    write_lines(raw / drop_name("20150305"), [*day_lines(5, 40, user="d5u"), "broken,line"])
    shutil.copy(raw / drop_name("20150303"), raw / drop_name("20150309"))  # the same drop under a later name
    stage, lock, active = duckdb_engine.stage, threading.Lock(), {"now": 0, "max": 0}

    def watched(*args, **kwargs):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            time.sleep(0.05)  # long enough for a second file to start beside this one
            return stage(*args, **kwargs)
        finally:
            with lock:
                active["now"] -= 1

    monkeypatch.setattr(duckdb_engine, "stage", watched)
    seen = {}
    for width in (1, 2):
        monkeypatch.setattr(duckdb_engine.DuckDBEngine, "concurrent_files", width)
        active["max"] = 0
        con = warehouse.connect(tmp_path / f"wh{width}.duckdb", memory_limit="1GB")
        try:
            with pytest.raises(IngestFailed) as failed:
                ingest.ingest_raw_dir(con, raw, tmp_path / f"lake{width}")
            tables = {
                t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("raw_user_actions", "quarantine_user_actions")
            }
        finally:
            con.close()
        seen[width] = (failed.value.result.files, failed.value.result.errors, tables, active["max"])
    assert seen[1][:3] == seen[2][:3]
    files, errors, tables, _ = seen[2]
    assert [r.file for r in files][-1] == drop_name("20150309") and files[-1].status == "refused"
    assert len(errors) == 1 and drop_name("20150303") in errors[0]
    assert len(tables["quarantine_user_actions"]) == 1 and len(tables["raw_user_actions"]) == 3 + 7 * 40
    assert (seen[1][3], seen[2][3]) == (1, 2)


def test_a_drop_holding_another_days_rows_is_quarantined_naming_both_days(raw, con):
    """Case 3: _20150831.csv holding 20150815's rows does not double 0815."""
    write_lines(raw / drop_name("20150302"), day_lines(2, 2) + day_lines(3, 1))
    report = run(con, raw).report(drop_name("20150302"))
    assert (report.loaded, report.quarantined) == (2, 1)
    assert con.execute("SELECT line_no, reason FROM quarantine_user_actions").fetchall() == [
        (3, "Ds 20150303 is not the drop file's day 20150302")
    ]


def test_an_impossible_date_in_a_drop_name_is_an_error_naming_it(raw, con):
    """Case 3: _20151399.csv is not a day; the other files still load."""
    bad = raw / drop_name("20151399")
    write_lines(bad, day_lines(2, 1))
    with pytest.raises(IngestFailed, match=f"{bad}: the date in the name is not a real day"):
        run(con, raw)
    assert rows_by_file(con) == {BULK: 3}


def test_an_in_place_edit_with_the_same_size_and_mtime_is_reloaded(raw, con):
    """Case 9: a file over 2 MiB rewritten in place, size and mtime restored: its ctime moved."""
    bulk = raw / BULK
    lines = [action(f"u{i:06d}", "s1") for i in range(80_000)]  # > 2 MiB
    write_lines(bulk, lines)
    assert bulk.stat().st_size > 2 << 20
    run(con, raw)
    st = bulk.stat()
    lines[20_000] = action("X00000", "s2", kind=2)  # same length, middle of the file
    with open(bulk, "r+b") as f:
        f.write("".join(line + "\n" for line in lines).encode())
    os.utime(bulk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (bulk.stat().st_size, bulk.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert run(con, raw).report(BULK).status == "replaced"
    assert con.execute(
        "SELECT count(*) FROM raw_user_actions WHERE user_id = 'X00000' AND action_type = 2"
    ).fetchone() == (1,)


def test_a_touched_file_is_read_once_and_not_reloaded(raw, con):
    """Identity changed, content did not: only the recorded identity moves."""
    run(con, raw)
    load_id = result_load_id(con, BULK)
    os.utime(raw / BULK, ns=(1, 1))
    assert run(con, raw).report(BULK).status == "unchanged"
    assert result_load_id(con, BULK) == load_id
    assert con.execute("SELECT mtime_ns FROM ingested_files WHERE file = $f", {"f": BULK}).fetchone() == (1,)


# ---------------------------------------------------------------------------- paths


def test_a_raw_folder_with_glob_characters_is_read_literally(tmp_path, con):
    """Case 2: `raw[1]` next to `raw1`: each folder's own file is read, never the other's."""
    for name, user in (("raw[1]", "mine"), ("raw1", "other")):
        d = tmp_path / name
        d.mkdir()
        write_lines(d / SONGS_FILE, SONGS)
        write_lines(d / BULK, [action(user, "s1")])
    weird = tmp_path / "raw[1]"
    ingest.ingest_raw_dir(con, weird, tmp_path / "lake[*]?")
    assert con.execute("SELECT user_id, source_file FROM raw_user_actions").fetchall() == [("mine", BULK)]
    assert con.execute("SELECT count(*) FROM raw_songs").fetchone() == (3,)


def test_a_symlink_leaving_the_raw_folder_is_refused(raw, con, tmp_path):
    """Case 6: a drop-named link to /etc/passwd is never read."""
    link = raw / drop_name("20150302")
    link.symlink_to("/etc/passwd")
    with pytest.raises(IngestFailed, match=f"{link}: refused, it is a symlink to /etc/passwd, outside the raw folder"):
        run(con, raw)
    assert con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM ingested_files WHERE path LIKE '%passwd%'").fetchone() == (0,)
    assert rows_by_file(con) == {BULK: 3}


def test_a_symlink_inside_the_raw_folder_is_followed(raw, con):
    archive = raw / "archive"
    archive.mkdir()
    write_lines(archive / "day2.txt", day_lines(2, 2))
    (raw / drop_name("20150302")).symlink_to(archive / "day2.txt")
    assert run(con, raw).report(drop_name("20150302")).loaded == 2


def test_names_missing_the_contract_are_warned_about(raw, con):
    """Case 10: .CSV, a dashed date, a copy: each named in a warning, none loaded."""
    odd = [f"{ACTIONS_PREFIX}_20150302.CSV", f"{ACTIONS_PREFIX}_2015-03-02.csv", f"{ACTIONS_PREFIX} (copy).csv"]
    for name in odd:
        write_lines(raw / name, day_lines(2, 1))
    (raw / "notes.md").write_text("not data")
    result = run(con, raw)
    assert len(result.warnings) == 3
    for name, warning in zip(sorted(odd), result.warnings, strict=False):
        assert str(raw / name) in warning and "naming contract" in warning
    assert rows_by_file(con) == {BULK: 3}


def test_missing_bulk_file_removes_nothing(raw, con):
    """An unmounted or emptied raw folder must not empty the lake."""
    run(con, raw)
    (raw / BULK).rename(raw.parent / "elsewhere.csv")
    with pytest.raises(ingest.IngestError, match=f"{BULK}: bulk actions file not found"):
        run(con, raw)
    assert rows_by_file(con) == {BULK: 3}


# ---------------------------------------------------------------------------- atomicity


def test_failure_mid_publish_leaves_previous_tables_and_no_files(raw, con, monkeypatch):
    run(con, raw)
    before, files_before = snapshot(con), lake_files_on_disk(raw)
    write_lines(raw / BULK, [action("u9", "s1")] * 5 + ["broken"])

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest, "_record_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        run(con, raw)
    assert snapshot(con) == before
    assert lake_files_on_disk(raw) == files_before
    monkeypatch.undo()
    report = run(con, raw).report(BULK)  # and the next attempt loads it
    assert (report.loaded, report.quarantined, report.status) == (5, 1, "replaced")


KILL_SCRIPT = """
import os, signal, sys
from musictrend_dagster.core.data import ingest
from musictrend_dagster.core.data import lake
from musictrend_dagster.core.data import warehouse
where = sys.argv[3]
if where == "before_commit":
    ingest._record_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
elif where == "after_commit":
    lake.Lake.delete = lambda self, paths: os.kill(os.getpid(), signal.SIGKILL) if paths else None
con = warehouse.connect(sys.argv[1], memory_limit="1GB")
ingest.ingest_raw_dir(con, sys.argv[2], os.path.join(os.path.dirname(sys.argv[2]), "lake"))
"""


@pytest.mark.parametrize(("where", "visible"), [("before_commit", "old"), ("after_commit", "new")])
def test_sigkill_mid_publish_shows_old_or_new_never_half_and_the_next_run_cleans_up(raw, tmp_path, where, visible):
    db = tmp_path / "killed.duckdb"
    con = warehouse.connect(db, memory_limit="1GB")
    run(con, raw)
    old = snapshot(con)
    con.close()
    write_lines(raw / BULK, [action("u9", "s1")] * 7)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(db), str(raw), where], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    con = warehouse.connect(db, memory_limit="1GB")
    after = snapshot(con)
    if visible == "old":
        assert after == old
    else:
        assert rows_by_file(con) == {BULK: 7}
    listed = {p for (p,) in con.execute("SELECT path FROM lake_files").fetchall()}
    assert lake_files_on_disk(raw) > listed, "the kill left files the manifest does not list"
    result = run(con, raw)
    assert result.garbage and all(Path(g).name.startswith(BULK) for g in result.garbage)
    assert rows_by_file(con) == {BULK: 7}
    assert_lake_matches_manifest(con, raw)
    con.close()


# ---------------------------------------------------------------------------- the content scan


@pytest.mark.parametrize(
    ("body", "safe"),
    [
        (b"u1,s1,1,1,20150301\n", True),
        (b"u1,s1,1,1,20150301\r\nu2,s1,1,1,20150301\r\n", True),  # CRLF line ends
        (b"u1,s1,1,1,20150301\r\n" * 60_000 + b"u1\r,s1\n", False),  # a lone CR after the first MiB
        (b"u1,s1,1,1,20150301", True),
        (b"u1,s1,1,1,20150301\r", False),
        (b"u 1,s1\n", False),
        (b"u\t1,s1\n", False),
        (b'"u1",s1\n', False),
        (b"u'1,s1\n", False),
        ("é,s1\n".encode(), False),
        (b"u\x001,s1\n", False),
        (b"u\x7f,s1\n", False),
    ],
)
def test_the_screen_lets_only_safe_bytes_skip_the_character_rules(tmp_path, body, safe):
    path = tmp_path / "f.csv"
    path.write_bytes(body)
    content = rawdir.scan(path, gz=False)
    assert content.safe is safe
    assert content.lines == body.count(b"\n") + (not body.endswith(b"\n"))


@pytest.mark.parametrize(("after_cr", "safe"), [(b"\n", True), (b"x\n", False)])
def test_a_cr_at_the_end_of_a_read_buffer_is_judged_by_the_next_byte(tmp_path, after_cr, safe):
    line = b"u1,s1,1425182400,1,20150301"
    pad = (1 << 20) - 2 - len(line)  # the CR is the last byte of the first MiB
    body = b"x" * pad + b"\n" + line + b"\r" + after_cr + line + b"\n"
    assert body.index(b"\r") == (1 << 20) - 1
    path = tmp_path / "f.csv"
    path.write_bytes(body)
    assert rawdir.scan(path, gz=False).safe is safe


# ---------------------------------------------------------------------------- the asset's metadata


def test_the_ingest_asset_shows_loaded_quarantined_lines_and_removed_files(raw, tmp_path):
    """Issue 15 #8: what docs/getting-started.md says the asset page shows, read back from the materialization."""
    import dagster as dg

    from musictrend_dagster.defs.assets.ingest import raw_songs, raw_user_actions
    from musictrend_dagster.defs.resources import WarehouseResource

    resources = {
        "warehouse": WarehouseResource(
            database=str(tmp_path / "wh.duckdb"), raw_dir=str(raw), lake_dir=str(tmp_path / "lake")
        )
    }

    def metadata() -> dict:
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize([raw_songs, raw_user_actions], resources=resources, instance=instance)
        (event,) = [
            e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "raw_user_actions"
        ]
        return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}

    drop = raw / drop_name("20150302")
    write_lines(drop, [*day_lines(2, 2), "u1,s1,oops,1,20150302"])
    first = metadata()
    assert (first["lines_read"], first["loaded"], first["quarantined"], first["rows_removed"]) == (6, 5, 1, 0)
    assert {r["file"]: r["status"] for r in first["file_reports"]} == {BULK: "loaded", drop.name: "loaded"}
    assert first["quarantine_reasons"] == {"gmt_create not an integer": 1}
    assert first["dagster/row_count"] == 5
    drop.unlink()
    second = metadata()
    assert (second["removed_files"], second["rows_removed"], second["dagster/row_count"]) == ([drop.name], 2, 3)
