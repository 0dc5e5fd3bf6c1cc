"""One test per bad-input case: the right rows load, each bad line is quarantined with
file, 1-based line, raw text and reason (or the file fails with one clear error), and
loaded + quarantined = lines read."""

from __future__ import annotations

import gzip
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musictrend_dagster.core.data import ingest, warehouse
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

NOON = 1425168000 + 4 * 3600  # 2015-03-01 12:00 UTC+8
GOOD = f"u1,s1,{NOON},1,20150301"
SONGS = ["s1,a1,20140101,100,1,1", "s2,a2,20140202,200,2,2"]
BULK = f"{ACTIONS_PREFIX}.csv"


@pytest.fixture
def con(tmp_path):
    c = warehouse.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    yield c
    c.close()


@pytest.fixture
def raw(tmp_path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    (d / SONGS_FILE).write_text("\n".join(SONGS) + "\n")
    return d


def ingest_dir(con, raw: Path) -> ingest.IngestResult:
    if not any(p.name.startswith(BULK) for p in raw.iterdir()):
        (raw / BULK).write_bytes(b"")
    return ingest.ingest_raw_dir(con, raw, raw.parent / "lake")


def load(con, raw: Path, body: bytes, name: str = BULK) -> ingest.FileReport:
    """Write one raw file and ingest the folder; the file's report, with loaded + quarantined = lines on disk."""
    path = raw / name
    path.write_bytes(body)
    report = ingest_dir(con, raw).report(name.removesuffix(".gz"))
    plain = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    assert report.lines_read == plain.count(b"\n") + (not plain.endswith(b"\n") and bool(plain))
    assert report.loaded + report.quarantined == report.lines_read
    counted = con.execute(
        "SELECT count(*) FROM raw_user_actions WHERE source_file = $f", {"f": report.file}
    ).fetchone()[0]
    assert counted == report.loaded
    return report


def quarantine(con, table: str = "quarantine_user_actions") -> list[tuple]:
    return con.execute(f"SELECT source_file, line_no, raw_line, reason FROM {table} ORDER BY line_no").fetchall()


ACTION_CASES = {
    "too_few_columns": ("u1,s1,1425182400,1", "wrong column count: 4 (expected 5)"),
    "too_many_columns": (GOOD + ",x,y", "wrong column count: 7 (expected 5)"),
    "trailing_comma": (GOOD + ",", "wrong column count: 6 (expected 5)"),
    "empty_user_id": (f",s1,{NOON},1,20150301", "empty user_id"),
    "empty_song_id": (f"u1,,{NOON},1,20150301", "empty song_id"),
    "gmt_create_not_integer": ("u1,s1,12:00,1,20150301", "gmt_create not an integer"),
    "gmt_create_decimal": (f"u1,s1,{NOON}.5,1,20150301", "gmt_create not an integer"),
    "gmt_create_negative": ("u1,s1,-5,1,20150301", "gmt_create negative"),
    "gmt_create_milliseconds": (f"u1,s1,{NOON}000,1,20150301", "gmt_create out of range"),
    "action_type_zero": (f"u1,s1,{NOON},0,20150301", "action_type not in 1..3"),
    "action_type_four": (f"u1,s1,{NOON},4,20150301", "action_type not in 1..3"),
    "action_type_word": (f"u1,s1,{NOON},play,20150301", "action_type not in 1..3"),
    "ds_impossible_date": (f"u1,s1,{NOON},1,20150230", "Ds not a valid yyyymmdd date"),
    "ds_short": (f"u1,s1,{NOON},1,2015031", "Ds not a valid yyyymmdd date"),
    "ds_far_from_gmt_create": (f"u1,s1,{NOON},1,20150310", "Ds more than one day from gmt_create (UTC+8)"),
    "unknown_song_id": (f"u1,s9,{NOON},1,20150301", "unknown song_id"),
    "blank_line": ("", "empty line"),
    "invalid_utf8": (None, "invalid UTF-8"),
    # Case 7: ids that would inflate distinct listeners.
    "user_id_whitespace_only": (
        f"   ,s1,{NOON},1,20150301",
        "user_id holds whitespace, a control character or a quote",
    ),
    "user_id_tab": (f"u\t1,s1,{NOON},1,20150301", "user_id holds whitespace, a control character or a quote"),
    "user_id_nbsp": (f"u\u00a01,s1,{NOON},1,20150301", "user_id holds whitespace, a control character or a quote"),
    "user_id_line_separator": (
        f"u\u20281,s1,{NOON},1,20150301",
        "user_id holds whitespace, a control character or a quote",
    ),
    "user_id_nul": (f"u\x001,s1,{NOON},1,20150301", "user_id holds whitespace, a control character or a quote"),
    "user_id_double_quote": (f'"u1",s1,{NOON},1,20150301', "user_id holds whitespace, a control character or a quote"),
    "user_id_single_quote": (f"u'1,s1,{NOON},1,20150301", "user_id holds whitespace, a control character or a quote"),
    "user_id_65_chars": (f"{'u' * 65},s1,{NOON},1,20150301", "user_id longer than 64 characters"),
    "song_id_zero_width_space": (
        f"u1,s\u200b1,{NOON},1,20150301",
        "song_id holds whitespace, a control character or a quote",
    ),
    # Case 4: a contract-valid line far in the future.
    "ds_in_the_future": ("u1,s1,4102358400,1,20991231", "ds in the future"),
}


@pytest.mark.parametrize("case", sorted(ACTION_CASES))
def test_bad_action_line_is_quarantined(con, raw, case):
    text, reason = ACTION_CASES[case]
    bad = b"u\xff1,s1,1,1,20150301" if text is None else text.encode()
    report = load(con, raw, b"\n".join([GOOD.encode(), bad, GOOD.encode()]) + b"\n")
    assert (report.lines_read, report.loaded, report.quarantined) == (3, 2, 1)
    assert report.reasons == {reason: 1}
    assert quarantine(con) == [(BULK, 2, bad.decode("utf-8", "replace"), reason)]


def test_a_user_id_of_64_printable_characters_loads(con, raw):
    report = load(con, raw, f"{'é' * 64},s1,{NOON},1,20150301\n{GOOD}\n".encode())
    assert (report.loaded, report.quarantined) == (2, 0)


def test_an_over_long_line_is_quarantined_alone_with_its_line_number(con, raw):
    """Case 5: one 3 MiB line with five valid-looking fields fails that line, not the file."""
    huge = f"{'u' * (3 << 20)},s1,{NOON},1,20150301"
    report = load(con, raw, "\n".join([GOOD, huge, GOOD, GOOD]).encode() + b"\n")
    assert (report.lines_read, report.loaded, report.quarantined) == (4, 3, 1)
    ((source, line_no, text, reason),) = quarantine(con)
    assert (source, line_no, reason) == (BULK, 2, "line longer than 1048576 bytes")
    assert text == "u" * 4096, "only the first bytes of an endless line are kept"


def test_a_future_day_is_checked_again_once_it_has_come(con, raw):
    """Case 4: quarantined while in the future, loaded on the first run on or after that day."""
    from datetime import datetime

    tomorrow = f"u1,s1,{NOON + 86400},1,20150302"
    (raw / BULK).write_text(f"{GOOD}\n{tomorrow}\n")
    today = datetime(2015, 3, 1, 12, tzinfo=UTC)
    first = ingest.ingest_raw_dir(con, raw, raw.parent / "lake", now=today).report(BULK)
    assert (first.loaded, first.reasons) == (1, {"ds in the future": 1})
    assert ingest.ingest_raw_dir(con, raw, raw.parent / "lake", now=today).report(BULK).status == "unchanged"
    later = ingest.ingest_raw_dir(con, raw, raw.parent / "lake", now=today.replace(day=2)).report(BULK)
    assert (later.status, later.loaded, later.quarantined) == ("replaced", 2, 0)


def test_missing_bulk_file_is_an_error_naming_it(con, raw):
    with pytest.raises(ingest.IngestError, match=f"{BULK}: bulk actions file not found"):
        ingest.ingest_raw_dir(con, raw, raw.parent / "lake")


def test_missing_songs_file_is_an_error_naming_it(con, tmp_path):
    (tmp_path / BULK).write_text(GOOD + "\n")
    with pytest.raises(ingest.IngestError, match=f"{SONGS_FILE}: songs file not found"):
        ingest.ingest_raw_dir(con, tmp_path, tmp_path / "lake")


def test_no_drop_files_is_fine(con, raw):
    (raw / BULK).write_text(GOOD + "\n")
    assert [r.file for r in ingest_dir(con, raw).files] == [SONGS_FILE, BULK]


def test_empty_file_loads_zero_lines(con, raw):
    report = load(con, raw, b"")
    assert (report.lines_read, report.loaded, report.quarantined) == (0, 0, 0)


def test_zero_byte_drop_files_next_to_the_bulk_file(con, raw):
    """Two empty drops hold the same (empty) content: not a duplicate."""
    (raw / BULK).write_text(GOOD + "\n")
    drops = [f"{ACTIONS_PREFIX}_20150302.csv", f"{ACTIONS_PREFIX}_20150303.csv"]
    for drop in drops:
        (raw / drop).write_bytes(b"")
    result = ingest_dir(con, raw)
    assert [(result.report(n).lines_read, result.report(n).loaded) for n in [BULK, *drops]] == [(1, 1), (0, 0), (0, 0)]
    assert all(r.skipped_unchanged for r in ingest_dir(con, raw).files)


def test_header_line_is_quarantined(con, raw):
    report = load(con, raw, f"user_id,song_id,gmt_create,action_type,Ds\n{GOOD}\n".encode())
    assert (report.lines_read, report.loaded) == (2, 1)
    assert quarantine(con) == [(BULK, 1, "user_id,song_id,gmt_create,action_type,Ds", "header line")]


@pytest.mark.parametrize(("delim", "name"), [(";", "';'"), ("\t", "tab")])
def test_wrong_delimiter_is_one_clear_error(con, raw, delim, name):
    (raw / BULK).write_text(GOOD.replace(",", delim) + "\n")
    with pytest.raises(ingest.IngestError, match=f"{BULK}: line 1 is delimited by {name}, expected ','"):
        ingest_dir(con, raw)
    assert con.execute("SELECT count(*) FROM ingested_files WHERE file = $f", {"f": BULK}).fetchone() == (0,)


def test_gzip_detected_by_magic_bytes(con, raw):
    body = f"{GOOD}\nu1,s9,{NOON},1,20150301\n{GOOD}\n".encode()
    report = load(con, raw, gzip.compress(body), name=f"{ACTIONS_PREFIX}_20150301.csv.gz")
    assert (report.file, report.lines_read, report.loaded, report.quarantined) == (
        f"{ACTIONS_PREFIX}_20150301.csv",
        3,
        2,
        1,
    )
    assert quarantine(con)[0][1:] == (2, f"u1,s9,{NOON},1,20150301", "unknown song_id")
    plain_named = load(con, raw, gzip.compress(body.replace(b"u1,", b"u2,")), name=BULK)
    assert plain_named.loaded == 2


def test_crlf_and_bom(con, raw):
    body = b"\xef\xbb\xbf" + f"{GOOD}\r\nu1,s1,{NOON},9,20150301\r\n{GOOD}\r\n".encode()
    report = load(con, raw, body)
    assert (report.lines_read, report.loaded, report.quarantined) == (3, 2, 1)
    assert quarantine(con) == [(BULK, 2, f"u1,s1,{NOON},9,20150301", "action_type not in 1..3")]
    assert con.execute("SELECT DISTINCT user_id FROM raw_user_actions").fetchall() == [("u1",)]


def test_bom_on_a_bad_first_line_keeps_line_numbers(con, raw):
    report = load(con, raw, b"\xef\xbb\xbf" + f"u1,s9,{NOON},1,20150301\n{GOOD}".encode())
    assert (report.lines_read, report.loaded) == (2, 1)
    assert quarantine(con) == [(BULK, 1, f"u1,s9,{NOON},1,20150301", "unknown song_id")]


def test_missing_trailing_newline(con, raw):
    report = load(con, raw, f"{GOOD}\n{GOOD}".encode())
    assert (report.lines_read, report.loaded, report.quarantined) == (2, 2, 0)


def test_mixed_line_endings(con, raw):
    report = load(con, raw, f"{GOOD}\r\n{GOOD}\nu1,s9,{NOON},1,20150301\r\n".encode())
    assert (report.lines_read, report.loaded, report.quarantined) == (3, 2, 1)


def songs_load(con, raw: Path, lines: list[str]) -> ingest.FileReport:
    (raw / SONGS_FILE).write_text("\n".join(lines) + "\n")
    report = ingest_dir(con, raw).report(SONGS_FILE)
    assert report.loaded + report.quarantined == report.lines_read == len(lines)
    return report


SONG_CASES = {
    "missing_artist_id": ("s3,,20140101,1,1,1", "missing artist_id"),
    "publish_time_not_a_date": ("s3,a1,2014-01-01,1,1,1", "publish_time not a valid yyyymmdd date"),
    "song_init_plays_not_numeric": ("s3,a1,20140101,many,1,1", "song_init_plays not a non-negative integer"),
    "language_not_numeric": ("s3,a1,20140101,1,zh,1", "Language not an integer"),
    "wrong_column_count": ("s3,a1,20140101,1,1", "wrong column count: 5 (expected 6)"),
    "empty_song_id": (",a1,20140101,1,1,1", "empty song_id"),
}


@pytest.mark.parametrize("case", sorted(SONG_CASES))
def test_bad_song_line_is_quarantined(con, raw, case):
    line, reason = SONG_CASES[case]
    report = songs_load(con, raw, [SONGS[0], line, SONGS[1]])
    assert (report.lines_read, report.loaded, report.quarantined) == (3, 2, 1)
    assert quarantine(con, "quarantine_songs") == [(SONGS_FILE, 2, line, reason)]


def test_song_with_conflicting_artists_is_quarantined_on_every_line(con, raw):
    lines = [SONGS[0], "s3,a1,20140101,1,1,1", SONGS[1], "s3,a2,20140101,1,1,1", "s3,a1,20140101,1,1,1"]
    report = songs_load(con, raw, lines)
    assert (report.loaded, report.quarantined) == (2, 3)
    assert [(n, r) for _, n, _, r in quarantine(con, "quarantine_songs")] == [
        (2, "song_id has conflicting artist_id"),
        (4, "song_id has conflicting artist_id"),
        (5, "song_id has conflicting artist_id"),
    ]


def test_songs_header_and_wrong_delimiter(con, raw):
    report = songs_load(con, raw, ["song_id,artist_id,publish_time,song_init_plays,Language,Gender", *SONGS])
    assert report.reasons == {"header line": 1}
    (raw / SONGS_FILE).write_text(SONGS[0].replace(",", ";") + "\n")
    with pytest.raises(ingest.IngestError, match=f"{SONGS_FILE}: line 1 is delimited by ';'"):
        ingest_dir(con, raw)


BROKEN = st.sampled_from(
    [
        "",
        "u1,s1",
        GOOD + ",",
        GOOD + ",extra,more",
        f",s1,{NOON},1,20150301",
        "u1,s1,x,1,20150301",
        f"u1,s1,{NOON},4,20150301",
        f"u1,s1,{NOON},1,20151301",
        f"u1,s9,{NOON},1,20150301",
        "a;b;c;d;e",
        f"u1,s1,{NOON},1,20150305",
        "user_id,song_id,gmt_create,action_type,Ds",
        "\xe9t\xe9,s1,1,1,1",
    ]
)
GOOD_LINES = st.builds(
    lambda u, s, h, k, ds_shift: f"u{u},s{s},{NOON + h * 3600},{k},{20150301 + ds_shift}",
    st.integers(0, 5),
    st.integers(1, 2),
    st.integers(-3, 3),
    st.integers(1, 3),
    st.integers(0, 1),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.tuples(st.booleans(), GOOD_LINES, BROKEN), min_size=1, max_size=30),
    ending=st.sampled_from(["\n", "\r\n"]),
    trailing=st.booleans(),
)
def test_random_mixes_of_good_and_broken_lines(tmp_path_factory, lines, ending, trailing):
    d = tmp_path_factory.mktemp("mix")
    con = warehouse.connect(d / "wh.duckdb", memory_limit="1GB")
    (d / SONGS_FILE).write_text("\n".join(SONGS) + "\n")
    chosen = [good if is_good else bad for is_good, good, bad in lines]
    if chosen[0].startswith("a;b"):  # a wrong-delimiter first line fails the whole file by design
        chosen[0] = GOOD
    body = ending.join(chosen) + (ending if trailing else "")
    (d / BULK).write_bytes(body.encode())
    report = ingest.ingest_raw_dir(con, d, d / "lake").report(BULK)
    expected_lines = len(chosen) - (not trailing and chosen[-1] == "")  # an unterminated empty last line is no line
    assert report.loaded + report.quarantined == report.lines_read
    good_texts = [line for (is_good, _, _), line in zip(lines, chosen, strict=False) if is_good or line == GOOD]
    loaded = con.execute(
        "SELECT user_id || ',' || song_id || ',' || gmt_create || ',' || action_type || ',' || "
        "strftime(ds, '%Y%m%d') FROM raw_user_actions"
    ).fetchall()
    assert sorted(r[0] for r in loaded) == sorted(good_texts)
    q = con.execute("SELECT line_no, raw_line FROM quarantine_user_actions ORDER BY line_no").fetchall()
    for line_no, raw_line in q:
        assert chosen[line_no - 1] == raw_line
    assert report.lines_read == expected_lines
    con.close()


def test_lines_counted_across_read_buffers(con, raw):
    """The line count reads 1 MiB at a time: lines straddling buffers and an unterminated
    last line past the first MiB must each count once."""
    lines = [GOOD] * 40_000 + [f"u1,s9,{NOON},1,20150301", GOOD]
    report = load(con, raw, "\n".join(lines).encode())  # > 1 MiB, no trailing newline
    assert (report.lines_read, report.loaded, report.quarantined) == (40_002, 40_001, 1)
    assert quarantine(con)[0][1] == 40_001


def test_the_docs_bad_input_table_is_the_contract():
    from musictrend_dagster.core.data import contract

    page = (Path(__file__).resolve().parents[2] / "docs" / "lake-and-bad-input.md").read_text()
    assert contract.bad_input_table() in page, (
        "regenerate: python -c 'from musictrend_dagster.core.data import contract; print(contract.bad_input_table())'"
    )


def test_every_rule_transpiles_to_spark_sql():
    """The rules are the one statement both engines evaluate: each parses as DuckDB SQL and transpiles."""
    from datetime import date

    import sqlglot

    from musictrend_dagster.core.data import contract

    for fmt in contract.FORMATS.values():
        for rule in fmt.rules:
            for sql in (rule.when, rule.reason):
                rendered = contract.render(sql, date(2015, 9, 1), date(2015, 8, 31))
                assert sqlglot.transpile(f"SELECT {rendered}", read="duckdb", write="spark"), rule.id


def test_a_line_count_the_rows_cannot_account_for_fails_the_file(con, raw, monkeypatch):
    """Issue 15 #3: lines read come from an independent count; when loaded + quarantined misses it
    (a line neither loaded nor quarantined), the file fails naming it and nothing of it is published."""
    from musictrend_dagster.core.data.engines import duckdb as engine
    from musictrend_dagster.core.data.rawdir import Content

    real = engine.ContentScan.result

    def one_line_more(self) -> Content:
        content = real(self)
        return Content(content.lines + (self.path.name == BULK), content.hash, content.safe)

    monkeypatch.setattr(engine.ContentScan, "result", one_line_more)
    (raw / BULK).write_text(f"{GOOD}\n{GOOD}\n")
    with pytest.raises(
        ingest.IngestError, match=f"{BULK}: accounting mismatch: 3 lines read, 2 loaded \\+ 0 quarantined"
    ):
        ingest_dir(con, raw)
    assert con.execute("SELECT count(*) FROM raw_user_actions").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM ingested_files WHERE file = $f", {"f": BULK}).fetchone() == (0,)


def test_a_line_the_reader_rejects_but_no_rule_explains_fails_the_file(con, raw, monkeypatch):
    """A good line that the DuckDB pass did not load (a reader quirk, say) is never quarantined
    without a reason: the file fails naming the line."""
    from musictrend_dagster.core.data import contract

    real = contract.field_rules

    def one_more_rule(fmt, screened_out=False):  # stands in for a reader that drops u2's line
        return (*real(fmt, screened_out), contract.Rule("quirk", "c1 = 'u2'", "'quirk'", "test only"))

    monkeypatch.setattr(contract, "field_rules", one_more_rule)
    (raw / BULK).write_text(f"{GOOD}\n{GOOD.replace('u1', 'u2')}\n")
    with pytest.raises(ingest.IngestError, match=rf"{BULK}: accounting mismatch: line\(s\) \[2\] were not loaded"):
        ingest_dir(con, raw)
    assert con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone() == (0,)
