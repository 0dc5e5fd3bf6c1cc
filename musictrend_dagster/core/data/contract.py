"""The raw-file contract, stated once: what a good line of each raw file is.

Every rule is data: an id, a SQL predicate that is TRUE when a line breaks the rule, the
quarantine reason (a SQL text expression) and a sentence for people. The first rule a line
breaks gives its reason. Any engine evaluates the same rules: it provides, per line,

- ``line``: the line's text without its terminator (a UTF-8 BOM on line 1 removed, bytes
  that are not UTF-8 replaced by U+FFFD), ``line_bytes``: its length in bytes;
- ``nfields``: the number of comma-separated fields, ``c1`` .. ``cN``: the fields (NULL past
  the last one); and the named typed values of ``RawFormat.derived``, computed from them;

and the rules read the warehouse view ``raw_songs`` (actions: "unknown song_id") and, for
songs, the relation ``conflicting_songs`` (song ids listed with two artists in the same
file), built from ``RawFormat.relations``. ``render`` fills in the per-file values (the
run's day in UTC+8, a drop file's day). The SQL is DuckDB's dialect restricted to what
sqlglot transpiles to Spark SQL (a test checks that), so a second engine reuses it as is.

The bad-input table of docs/lake-and-bad-input.md is generated from ``RULES`` (``bad_input_table``; a test keeps
them equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from musictrend_dagster.core.data.source import EXTRA_COUNTS

# No good line comes near this (ids are at most 64 characters); longer lines are quarantined
# as a whole, whatever they hold, and only their first bytes are kept in the quarantine table.
MAX_LINE_BYTES = 1 << 20
QUARANTINED_TEXT_BYTES = 4096
MAX_ID_CHARS = 64
# gmt_create must fall in [2000-01-01, 2100-01-01) UTC: far wider than any real log,
# narrow enough to catch milliseconds or garbage.
GMT_MIN = 946_684_800
GMT_MAX = 4_102_444_800
UTC8 = timezone(timedelta(hours=8))
# Whitespace (Unicode Z and ASCII), control/format/private characters (Unicode C), quotes and
# U+FFFD (what undecodable bytes become). RE2 (DuckDB) and java.util.regex (Spark) agree on it.
ID_FORBIDDEN_RE = "[\\s\\p{Z}\\p{C}\"'\ufffd]"


def unquoted(field: str) -> str:
    """SQL: a CSV field's value: wrapped in double quotes (RFC 4180, as R's write.csv and warehouse exports
    write strings), the text inside with "" read as "; otherwise the field as it is. Fields are split at
    every comma first, so a quoted field holding a comma still gives the line a wrong column count."""
    inside = f"""replace(substr({field}, 2, length({field}) - 2), '""', '"')"""
    return f"""CASE WHEN {field} LIKE '"%"' THEN {inside} ELSE {field} END"""


def unquoted_name(field: str) -> str:
    """`unquoted` for a header's column name, in Python."""
    return field[1:-1].replace('""', '"') if len(field) >= 2 and field[0] == field[-1] == '"' else field


@dataclass(frozen=True)
class Rule:
    id: str
    when: str  # SQL predicate: TRUE when the line breaks the rule
    reason: str  # SQL text expression: the quarantine reason
    doc: str  # for people: the bad-input table of docs/lake-and-bad-input.md
    recheck: str | None = None  # SQL: the day from which a line it quarantined may pass (rules on the clock)
    # True when no line made only of SAFE_BYTES can break the rule: an engine may skip it for a
    # file whose bytes it has seen are all safe (the character rules cost a regex per field).
    screened: bool = False


# Printable ASCII without quotes, the delimiter and the line feed (a CR only as part of CRLF).
SAFE_BYTES = frozenset(b for b in range(0x21, 0x7F) if b not in b"\"'") | {ord(","), ord("\n")}


@dataclass(frozen=True)
class RawFormat:
    kind: str  # "actions" | "songs"
    n_fields: int
    header_first: str  # the first column's name: a header line starts with it
    derived: tuple[tuple[str, str], ...]  # (name, SQL over c1..cN): typed values the rules and columns use
    columns: tuple[tuple[str, str, str], ...]  # (lake column, SQL type, SQL expression) of a good line
    rules: tuple[Rule, ...]  # in order: the first one broken gives the reason
    relations: tuple[tuple[str, str], ...] = ()  # (name, SQL over the file's parsed lines `lines`)
    partition_by: str | None = None  # the lake column the files are Hive-partitioned by
    header_lines: int = 0  # lines before the data (a source's header): neither rows read nor checked
    # "csv": fields c1..cN are the text between commas; "parquet": c1..cN are these SQL expressions
    # over the file's typed columns (read as typed, never as text) and the line rules do not apply.
    reader: str = "csv"
    parquet_fields: tuple[str, ...] = ()
    parquet_types: tuple[str, ...] = ()  # their types in the file (for the quarantine's text of a row)
    named: tuple[tuple[str, str], ...] = ()  # (description key, its field's SQL): for checks before loading
    # CSV fields in double quotes are read as their values (`unquoted`): a described source's files, as
    # exports write them; the competition's files have no quoting, so a quote there is a bad id.
    quoted: bool = False


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _line_rules(n: int) -> tuple[Rule, ...]:
    """Rules about the line as a whole; a line that breaks one has no fields worth reading."""
    return (
        Rule(
            "line_too_long",
            f"line_bytes > {MAX_LINE_BYTES}",
            f"'line longer than {MAX_LINE_BYTES} bytes'",
            f"a line longer than {MAX_LINE_BYTES:,} bytes (only its first {QUARANTINED_TEXT_BYTES:,} bytes are kept)",
        ),
        Rule(
            "invalid_utf8",
            "contains(line, '\ufffd')",
            "'invalid UTF-8'",
            "bytes that are not UTF-8 (or U+FFFD, which undecodable bytes turn into)",
        ),
        Rule("empty_line", "trim(line) = ''", "'empty line'", "an empty or blank line"),
        Rule(
            "stray_cr",
            "contains(line, chr(13))",
            "'stray carriage return'",
            "a carriage return inside a line (CRLF line ends are fine)",
        ),
        Rule(
            "column_count",
            f"nfields <> {n}",
            f"'wrong column count: ' || CAST(nfields AS VARCHAR) || ' (expected {n})'",
            f"not exactly {n} comma-separated fields (a trailing comma is one field more)",
        ),
    )


def _id_rules(col: str, name: str, empty_reason: str) -> tuple[Rule, ...]:
    a = "an" if name[0] in "aeiou" else "a"
    return (
        Rule(f"empty_{name}", f"{col} = ''", _sql_text(empty_reason), f"an empty {name}"),
        Rule(
            f"{name}_too_long",
            f"length({col}) > {MAX_ID_CHARS}",
            _sql_text(f"{name} longer than {MAX_ID_CHARS} characters"),
            f"{a} {name} longer than {MAX_ID_CHARS} characters",
        ),
        Rule(
            f"{name}_not_printable",
            f"regexp_matches({col}, {_sql_text(ID_FORBIDDEN_RE)})",
            _sql_text(f"{name} holds whitespace, a control character or a quote"),
            f"{a} {name} holding whitespace (also NBSP, U+2028), a control character (also NUL) or a quote",
            screened=True,
        ),
    )


def _header_rule(first: str) -> Rule:
    return Rule(
        "header",
        f"length(c1) = {len(first)} AND lower(c1) = '{first}'",
        "'header line'",
        "a header line (the files have none)",
    )


ACTIONS = RawFormat(
    kind="actions",
    n_fields=5,
    header_first="user_id",
    derived=(
        ("g", "TRY_CAST(c3 AS BIGINT)"),
        ("d", "CAST(TRY_STRPTIME(c5, '%Y%m%d') AS DATE)"),
    ),
    columns=(
        ("user_id", "VARCHAR", "c1"),
        ("song_id", "VARCHAR", "c2"),
        ("gmt_create", "BIGINT", "g"),
        ("action_type", "TINYINT", "CAST(c4 AS TINYINT)"),
        ("ds", "DATE", "d"),
    ),
    partition_by="ds",
    rules=(
        *_line_rules(5),
        _header_rule("user_id"),
        *_id_rules("c1", "user_id", "empty user_id"),
        *_id_rules("c2", "song_id", "empty song_id"),
        Rule(
            "gmt_not_integer",
            "g IS NULL OR CAST(g AS VARCHAR) <> c3",
            "'gmt_create not an integer'",
            "`gmt_create` not a plain integer (no sign, spaces, decimals or exponents)",
        ),
        Rule("gmt_negative", "g < 0", "'gmt_create negative'", "a negative `gmt_create`"),
        Rule(
            "gmt_out_of_range",
            f"g < {GMT_MIN} OR g >= {GMT_MAX}",
            "'gmt_create out of range'",
            "`gmt_create` outside 2000-01-01..2099-12-31 (milliseconds, garbage)",
        ),
        Rule("action_type", "c4 NOT IN ('1', '2', '3')", "'action_type not in 1..3'", "`action_type` not 1, 2 or 3"),
        Rule(
            "ds_not_a_date",
            "d IS NULL OR CAST(year(d) * 10000 + month(d) * 100 + day(d) AS VARCHAR) <> c5",
            "'Ds not a valid yyyymmdd date'",
            "`Ds` not a real yyyymmdd date",
        ),
        Rule(
            "ds_in_future",
            "d > {today}",
            "'ds in the future'",
            "`Ds` after the run's day in UTC+8 (the line is checked again once that day has come)",
            recheck="d",
        ),
        Rule(
            "ds_not_drop_day",
            "d <> {file_day}",
            "'Ds ' || c5 || ' is not the drop file''s day {file_day_text}'",
            "in a drop file `..._YYYYMMDD.csv`, `Ds` not that day (the reason names both days)",
        ),
        Rule(
            "ds_far_from_gmt",
            "abs(date_diff('day', DATE '1970-01-01', d) - floor((g + 28800) / 86400)) > 1",
            "'Ds more than one day from gmt_create (UTC+8)'",
            "`Ds` more than one day away from `gmt_create`'s day in UTC+8",
        ),
        # NOT EXISTS, not NOT IN: both engines make it a hash join, where Spark turns a NOT IN
        # in an expression into a null-aware nested-loop join (lines x songs). The same for
        # every line that gets here: c2 is not NULL (column_count) and no song_id is NULL.
        Rule(
            "unknown_song",
            "NOT EXISTS (SELECT 1 FROM raw_songs WHERE raw_songs.song_id = c2)",
            "'unknown song_id'",
            "a `song_id` that the songs file does not list",
        ),
    ),
)

SONGS = RawFormat(
    kind="songs",
    n_fields=6,
    header_first="song_id",
    derived=(
        ("pt", "CAST(TRY_STRPTIME(c3, '%Y%m%d') AS DATE)"),
        ("plays", "TRY_CAST(c4 AS BIGINT)"),
        ("lang", "TRY_CAST(c5 AS INTEGER)"),
        ("gender", "TRY_CAST(c6 AS INTEGER)"),
    ),
    columns=(
        ("song_id", "VARCHAR", "c1"),
        ("artist_id", "VARCHAR", "c2"),
        ("publish_time", "DATE", "pt"),
        ("song_init_plays", "BIGINT", "plays"),
        ("language", "INTEGER", "lang"),
        ("gender", "INTEGER", "gender"),
    ),
    relations=(
        (
            "conflicting_songs",
            "SELECT c1 AS song_id FROM lines WHERE nfields = 6 AND c1 <> '' AND c2 <> '' "
            "GROUP BY c1 HAVING count(DISTINCT c2) > 1",
        ),
    ),
    rules=(
        *_line_rules(6),
        _header_rule("song_id"),
        *_id_rules("c1", "song_id", "empty song_id"),
        *_id_rules("c2", "artist_id", "missing artist_id"),
        Rule(
            "publish_time",
            "pt IS NULL OR CAST(year(pt) * 10000 + month(pt) * 100 + day(pt) AS VARCHAR) <> c3",
            "'publish_time not a valid yyyymmdd date'",
            "`publish_time` not a real yyyymmdd date",
        ),
        Rule(
            "song_init_plays",
            "plays IS NULL OR CAST(plays AS VARCHAR) <> c4 OR plays < 0",
            "'song_init_plays not a non-negative integer'",
            "`song_init_plays` not a non-negative integer",
        ),
        Rule(
            "language",
            "lang IS NULL OR CAST(lang AS VARCHAR) <> c5",
            "'Language not an integer'",
            "`Language` not an integer",
        ),
        Rule(
            "gender",
            "gender IS NULL OR CAST(gender AS VARCHAR) <> c6",
            "'Gender not an integer'",
            "`Gender` not an integer",
        ),
        Rule(
            "conflicting_artist",
            "c1 IN (SELECT song_id FROM conflicting_songs)",
            "'song_id has conflicting artist_id'",
            "a `song_id` listed with two different artists in the file (every such line)",
        ),
    ),
)

FORMATS = {f.kind: f for f in (ACTIONS, SONGS)}
LINE_RULE_IDS = frozenset(r.id for r in _line_rules(1))


def today_utc8(now: datetime | None = None) -> date:
    """The run's day where the log's days are counted (the service is in UTC+8)."""
    return (now or datetime.now(UTC)).astimezone(UTC8).date()


def render(sql: str, today: date, file_day: date | None) -> str:
    """Fill a rule's per-run values in as SQL literals (an absent drop day makes its rule never fire)."""
    return (
        sql.replace("{today}", f"DATE '{today.isoformat()}'")
        .replace("{file_day}", f"DATE '{file_day.isoformat()}'" if file_day else "NULL")
        .replace("{file_day_text}", f"{file_day:%Y%m%d}" if file_day else "")
    )


def reason_case(fmt: RawFormat, today: date, file_day: date | None, rules: tuple[Rule, ...] | None = None) -> str:
    """One CASE expression: NULL for a good line, else the reason of the first rule it breaks."""
    return _case(rules if rules is not None else fmt.rules, today, file_day, lambda r: r.reason)


def recheck_case(fmt: RawFormat, today: date, file_day: date | None) -> str:
    """The day from which a quarantined line may pass (NULL: never, the file must change)."""
    return _case(fmt.rules, today, file_day, lambda r: r.recheck or "NULL")


def _case(rules: tuple[Rule, ...], today: date, file_day: date | None, then) -> str:
    whens = "\n".join(
        f"        WHEN {render(r.when, today, file_day)} THEN {render(then(r), today, file_day)}" for r in rules
    )
    return f"CASE\n{whens}\n    END"


def field_rules(fmt: RawFormat, screened_out: bool = False) -> tuple[Rule, ...]:
    """The rules about fields (and the field count): what a reader that already split a line checks.

    ``screened_out`` leaves out the rules no line of SAFE_BYTES can break (for a screened file).
    """
    return tuple(
        r
        for r in fmt.rules
        if (r.id not in LINE_RULE_IDS or r.id == "column_count") and not (screened_out and r.screened)
    )


def bad_input_table() -> str:
    """The bad-input table of docs/lake-and-bad-input.md, generated from the rules."""
    lines = ["| file | rule | the line is quarantined when it has | reason recorded |", "|---|---|---|---|"]
    for fmt in FORMATS.values():
        for r in fmt.rules:
            reason = re.sub(r"'\s*\|\|.*?\|\|\s*'", "…", r.reason.replace("''", "'")).strip("'")
            reason = reason.replace("{file_day_text}", "YYYYMMDD")
            lines.append(f"| {fmt.kind} | `{r.id}` | {r.doc} | {reason} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- source descriptions
#
# The formats of an ``events`` or ``daily`` source (``core.data.source``) and of its catalogue,
# generated from the description and the file's own columns: the same kind of rules as above,
# evaluated by the same engines. A CSV file's columns are found by its header (line 1); a
# Parquet file's are read typed, so only the values are checked, never a text parse.
# A reason may hold ``{same_key:K}``: ingest replaces it by the lines (rows) of the file's
# other quarantined rows with the same K (a daily source's duplicate series-days).

SAME_KEY_RE = re.compile(r"\{same_key:(.*?)\}")
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_FLOAT_TYPES = ("FLOAT", "DOUBLE")
_DATE_ONLY_RE = re.compile(r"(%[Ymdjy]|[^%])*")


class FormatError(ValueError):
    """A column the description names cannot be read: ``(key, message)``; the caller names the file."""

    def __init__(self, table: str, key: str, message: str) -> None:
        super().__init__(message)
        self.table, self.key = table, key


class _Fields:
    """Which field ``c<i>`` holds each column the description names, and its type in the file."""

    def __init__(self, columns: list[tuple[str, str]], reader: str) -> None:
        self.columns, self.reader = columns, reader
        self.types = dict(columns)
        self.position = {name: i + 1 for i, (name, _) in enumerate(columns)}
        self.used: list[str] = []  # parquet: the SQL of c1..cN, in order
        self.used_types: list[str] = []

    def get(self, table: str, key: str, name: str, as_text: bool) -> tuple[str, str]:
        """(the field's SQL name, its type: VARCHAR for a CSV field or a column read as text)."""
        if name not in self.types:
            shown = ", ".join(n for n, _ in self.columns[:30])
            raise FormatError(table, key, f"no column {name!r} (the file's columns: {shown})")
        typ = self.types[name]
        if self.reader == "csv":
            return f"c{self.position[name]}", "VARCHAR"
        quoted = '"' + name.replace('"', '""') + '"'
        self.used.append(f"CAST({quoted} AS VARCHAR)" if as_text else quoted)
        self.used_types.append("VARCHAR" if as_text else typ)
        return f"c{len(self.used)}", "VARCHAR" if as_text else typ


def _base(typ: str) -> str:
    return typ.upper().split("(")[0].strip()


def _epoch_of_text(t: str, fmt: str, tz: str) -> tuple[str, str]:
    """(epoch seconds of a text time, what a good value looks like)."""
    if fmt == "iso":
        return (
            f"CASE WHEN regexp_matches({t}, '(Z|[+-][0-9][0-9](:?[0-9][0-9])?)$') "
            f"THEN CAST(floor(epoch(TRY_CAST({t} AS TIMESTAMPTZ))) AS BIGINT) END",
            "an ISO-8601 time with an offset (2026-11-30T23:59:59+08:00)",
        )
    if fmt in ("epoch_s", "epoch_ms"):
        n = f"TRY_CAST({t} AS BIGINT)"
        value = n if fmt == "epoch_s" else f"CAST(floor({n} / 1000) AS BIGINT)"
        return f"CASE WHEN CAST({n} AS VARCHAR) = {t} THEN {value} END", f"a whole number ({fmt})"
    parsed = f"TRY_STRPTIME({t}, {_sql_text(fmt)})"
    if "%z" not in fmt:
        parsed = f"timezone({_sql_text(tz)}, {parsed})"
    return f"CAST(floor(epoch({parsed})) AS BIGINT)", f"a time as {fmt}"


def _epoch(fields: _Fields, table: str, key: str, name: str, fmt: str, tz: str) -> tuple[str, str, str]:
    """(the field, the SQL of its epoch seconds, what a good value looks like) for a time column."""
    c, typ = fields.get(table, key, name, as_text=False)
    base = _base(typ)
    if base == "VARCHAR":
        return (c, *_epoch_of_text(c, fmt, tz))
    if base == "TIMESTAMP WITH TIME ZONE":
        return c, f"CAST(floor(epoch({c})) AS BIGINT)", "a timestamp"
    if base.startswith("TIMESTAMP"):  # no zone: a local time where the days begin
        return c, f"CAST(floor(epoch(timezone({_sql_text(tz)}, CAST({c} AS TIMESTAMP)))) AS BIGINT)", "a timestamp"
    if base in _INTEGER_TYPES and fmt in ("epoch_s", "epoch_ms"):
        value = c if fmt == "epoch_s" else f"CAST(floor({c} / 1000) AS BIGINT)"
        return c, f"CAST({value} AS BIGINT)", f"a whole number ({fmt})"
    raise FormatError(table, key, f"column {name!r} is {typ}, which cannot be a time as {fmt!r}")


def _fixed_offset(tz: str) -> int | None:
    """The zone's UTC offset in seconds when it is the same all through 2000..2099 (no DST), else None."""
    zone = ZoneInfo(tz)
    offsets = {
        datetime(year, month, 15, tzinfo=zone).utcoffset() for year in range(2000, 2100) for month in (1, 4, 7, 10)
    }
    (only,) = offsets if len(offsets) == 1 else (None,)
    return None if only is None else int(only.total_seconds())


def _local_day(g: str, tz: str) -> str:
    """The day in `tz` of epoch seconds `g`: arithmetic for a zone without DST (no zone conversion per
    row; docs/your-own-data.md), else AT TIME ZONE (sqlglot writes Spark's from_utc_timestamp)."""
    offset = _fixed_offset(tz)
    if offset is not None:
        return f"date_add(DATE '1970-01-01', CAST(floor(({g} + {offset}) / 86400) AS INTEGER))"
    return f"CAST(to_timestamp({g}) AT TIME ZONE {_sql_text(tz)} AS DATE)"


def _day(fields: _Fields, table: str, key: str, name: str, fmt: str, tz: str) -> tuple[str, str, str | None, str]:
    """(field, SQL of the day, SQL TRUE when the text is not exactly the day written back, what is expected)."""
    c, typ = fields.get(table, key, name, as_text=False)
    base = _base(typ)
    if base == "DATE":
        return c, c, None, "a date"
    if base in _INTEGER_TYPES and "%" in fmt:
        c, base = f"CAST({c} AS VARCHAR)", "VARCHAR"
    if base == "VARCHAR":
        if fmt == "iso":
            return c, f"TRY_CAST({c} AS DATE)", f"CAST(TRY_CAST({c} AS DATE) AS VARCHAR) <> {c}", "an ISO date"
        if "%" in fmt:
            day = f"CAST(TRY_STRPTIME({c}, {_sql_text(fmt)}) AS DATE)"
            exact = f"strftime({day}, {_sql_text(fmt)}) <> {c}" if _DATE_ONLY_RE.fullmatch(fmt) else None
            return c, day, exact, f"a day as {fmt}"
    _, g, expected = _epoch(fields, table, key, name, fmt, tz)
    return c, _local_day(g, tz), None, expected


def _count(fields: _Fields, key: str, name: str, reader: str) -> tuple[str, str]:
    """(the field, its value as DOUBLE: NULL when not a number) of a count column; a type no count
    can be (a Parquet string, a date) is a FormatError."""
    c, typ = fields.get("source", key, name, as_text=False)
    base = _base(typ)
    if base == "VARCHAR" and reader == "csv":
        return c, f"TRY_CAST({c} AS DOUBLE)"
    if base in _INTEGER_TYPES or base in _FLOAT_TYPES or base.startswith("DECIMAL"):
        return c, f"CAST({c} AS DOUBLE)"
    raise FormatError("source", key, f"column {name!r} is {typ}, expected a whole number")


def _value_rules(c: str, name: str) -> tuple[Rule, ...]:
    """An id: present, short, printable (the same rules as the competition's ids)."""
    return (
        Rule(f"empty_{name}", f"coalesce({c}, '') = ''", _sql_text(f"empty or missing {name}"), f"an empty {name}"),
        *_id_rules(c, name, f"empty {name}")[1:],
    )


def _csv_rules(fields: _Fields) -> tuple[Rule, ...]:
    if fields.reader != "csv":
        return ()
    first, second = fields.columns[0][0], fields.columns[min(1, len(fields.columns) - 1)][0]
    header = Rule(
        "header",
        f"c1 = {_sql_text(first)} AND c{min(2, len(fields.columns))} = {_sql_text(second)}",
        "'header line repeated'",
        "the header line again (files joined together?)",
    )
    return (*_line_rules(len(fields.columns)), header)


def _format(kind: str, fields: _Fields, header_lines: int, **kw) -> RawFormat:
    n = len(fields.columns) if fields.reader == "csv" else len(fields.used)
    return RawFormat(
        kind=kind,
        n_fields=n,
        header_first=fields.columns[0][0] if fields.columns else "",
        header_lines=header_lines if fields.reader == "csv" else 0,
        reader=fields.reader,
        parquet_fields=tuple(fields.used),
        parquet_types=tuple(fields.used_types),
        quoted=fields.reader == "csv",
        **kw,
    )


def parquet_raw_line(fmt: RawFormat) -> str:
    """A quarantined Parquet row as text, the same on every engine (a zoned timestamp in UTC, ``Z``)."""

    def text(i: int, typ: str) -> str:
        if _base(typ) == "TIMESTAMP WITH TIME ZONE":
            return f"strftime(c{i} AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') || 'Z'"
        return f"CAST(c{i} AS VARCHAR)"

    fields = ", ".join(f"coalesce({text(i, t)}, '')" for i, t in enumerate(fmt.parquet_types, start=1))
    return f"left(concat_ws(',', {fields}), {QUARANTINED_TEXT_BYTES})"


def source_format(config, file_columns: list[tuple[str, str]], reader: str) -> RawFormat:
    """The format of one data file of an events or daily source (``config``: ``source.Config``)."""
    src = config.source
    fields = _Fields(file_columns, reader)
    future = Rule(
        "ds_in_future",
        "d > {today}",
        "'day in the future'",
        "a day after the run's day (checked again once that day has come)",
        recheck="d",
    )
    by_song = config.forecast.series_level == "song"
    if src.kind == "daily":
        s, _ = fields.get("source", "series", src.series, as_text=True)
        dc, day, inexact, expected = _day(fields, "source", "day", src.day, src.day_format, src.timezone)
        pc, pd = _count(fields, "plays", src.plays, reader)
        # The optional counts beside plays: the same rules, 0 when the description names no column.
        counts = {key: _count(fields, key, getattr(src, key), reader) for key in EXTRA_COUNTS if getattr(src, key)}
        extra = {key: sql for key, (_, sql) in counts.items()}
        needs_catalogue = config.catalogue is not None and not by_song and src.series_is == "song"
        rules = [
            *_csv_rules(fields),
            *_value_rules(s, "series"),
            Rule(
                "day_not_a_day",
                "d IS NULL" + (f" OR {inexact}" if inexact else ""),
                _sql_text(f"{src.day} not {expected}"),
                f"a day that is not {expected} or not in the calendar (2015-02-30)",
            ),
            Rule(
                "plays_not_whole",
                "pd IS NULL OR pd < 0 OR pd > 1e15 OR pd <> floor(pd)",
                _sql_text(f"{src.plays} not a non-negative whole number"),
                "a count that is negative, not a whole number, or missing",
            ),
            *(
                Rule(
                    f"{key}_not_whole",
                    f"p_{key} IS NULL OR p_{key} < 0 OR p_{key} > 1e15 OR p_{key} <> floor(p_{key})",
                    _sql_text(f"{getattr(src, key)} not a non-negative whole number"),
                    f"a {key} count that is negative, not a whole number, or missing",
                )
                for key in extra
            ),
            future,
        ]
        if needs_catalogue:
            rules.append(
                Rule(
                    "unknown_song",
                    f"NOT EXISTS (SELECT 1 FROM raw_songs WHERE raw_songs.song_id = {s})",
                    "'series not in the catalogue'",
                    "a series (song) the catalogue does not list",
                )
            )
        rules.append(
            Rule(
                "duplicate_day",
                f"EXISTS (SELECT 1 FROM duplicate_days AS k WHERE k.series = {s} AND k.day = d)",
                f"'two rows for series ' || {s} || ' on ' || CAST(d AS VARCHAR) || ': also at {{same_key:' || "
                f"{s} || ' ' || CAST(d AS VARCHAR) || '}}'",
                "a second row for the same series and day (both rows; each reason names the other's line)",
            )
        )
        ok = f"coalesce({s}, '') <> '' AND d IS NOT NULL" + (
            f" AND nfields = {len(file_columns)}" if reader == "csv" else ""
        )
        return _format(
            "daily",
            fields,
            1,
            derived=(("d", day), ("pd", pd), *((f"p_{key}", sql) for key, sql in extra.items())),
            columns=(
                ("series_id", "VARCHAR", s),
                # the series' artist when the series are artists (NULL: the catalogue says, or songs are series)
                ("artist_id", "VARCHAR", s if src.series_is == "artist" else "CAST(NULL AS VARCHAR)"),
                ("plays", "BIGINT", "CAST(pd AS BIGINT)"),
                *(
                    (key, "BIGINT", f"CAST(p_{key} AS BIGINT)" if key in extra else "CAST(0 AS BIGINT)")
                    for key in EXTRA_COUNTS
                ),
                ("ds", "DATE", "d"),
            ),
            rules=tuple(rules),
            relations=(
                (
                    "duplicate_days",
                    f"SELECT {s} AS series, d AS day FROM lines WHERE {ok} GROUP BY {s}, d HAVING count(*) > 1",
                ),
            ),
            partition_by="ds",
            named=(
                ("series", s),
                ("day", dc),
                ("plays", pc),
                ("d", "d"),
                ("pd", "pd"),
                *((key, c) for key, (c, _) in counts.items()),
                *((f"p_{key}", f"p_{key}") for key in counts),
            ),
        )
    # events
    u, _ = fields.get("source", "user", src.user, as_text=True)
    so, _ = fields.get("source", "song", src.song, as_text=True)
    tc, g, expected = _epoch(fields, "source", "time", src.time, src.time_format, src.timezone)
    a = fields.get("source", "artist", src.artist, as_text=True)[0] if src.artist and not by_song else None
    rules = [*_csv_rules(fields), *_value_rules(u, "user"), *_value_rules(so, "song")]
    if a:
        rules += _value_rules(a, "artist")
    rules += [
        Rule("time_not_parsed", "g IS NULL", _sql_text(f"{src.time} not {expected}"), f"a time that is not {expected}"),
        Rule(
            "time_out_of_range",
            f"g < {GMT_MIN} OR g >= {GMT_MAX}",
            f"'{src.time} outside 2000..2099'",
            "a time outside 2000-01-01..2099-12-31 (milliseconds read as seconds, garbage)",
        ),
    ]
    if src.plays_when is None:
        action = "CAST(1 AS TINYINT)"
    else:
        ac, _ = fields.get("source", "action", src.action, as_text=True)
        whens = [
            (1, src.plays_when),
            (2, src.downloads_when),
            (3, src.collects_when),
            (0, src.other_when),
        ]
        arms = " ".join(
            f"WHEN {ac} IN ({', '.join(_sql_text(n) for n in names)}) THEN {code}" for code, names in whens if names
        )
        action = f"CAST(CASE {arms} END AS TINYINT)"
        rules.append(
            Rule(
                "unmapped_event",
                "act IS NULL",
                f"'event ' || coalesce({ac}, 'NULL') || "
                "' in none of plays_when, downloads_when, collects_when, other_when'",
                "an event name none of the *_when lists holds",
            )
        )
    rules.append(future)
    if config.catalogue is not None and not a and not by_song:
        rules.append(
            Rule(
                "unknown_song",
                f"NOT EXISTS (SELECT 1 FROM raw_songs WHERE raw_songs.song_id = {so})",
                "'song not in the catalogue'",
                "a song the catalogue does not list",
            )
        )
    artist = so if by_song else (a or "CAST(NULL AS VARCHAR)")
    return _format(
        "events",
        fields,
        1,
        derived=(("g", g), ("d", _local_day(g, src.timezone)), ("act", action)),
        columns=(
            ("user_id", "VARCHAR", u),
            ("song_id", "VARCHAR", so),
            ("artist_id", "VARCHAR", artist),
            ("gmt_create", "BIGINT", "g"),
            ("action_type", "TINYINT", "act"),
            ("ds", "DATE", "d"),
        ),
        rules=tuple(rules),
        partition_by="ds",
        named=(("user", u), ("song", so), ("time", tc), ("g", "g"), ("act", "act"))
        + ((("action", ac),) if src.plays_when is not None else ()),
    )


def catalogue_format(config, file_columns: list[tuple[str, str]], reader: str) -> RawFormat:
    """The catalogue's format: song -> artist (the song itself when the series are songs), publish date."""
    cat = config.catalogue
    fields = _Fields(file_columns, reader)
    s, _ = fields.get("catalogue", "song", cat.song, as_text=True)
    by_song = config.forecast.series_level == "song"
    a = s if by_song else fields.get("catalogue", "artist", cat.artist, as_text=True)[0]
    rules = [*_csv_rules(fields), *_value_rules(s, "song")]
    if not by_song:
        rules += _value_rules(a, "artist")
    derived: tuple[tuple[str, str], ...] = (("pt", "CAST(NULL AS DATE)"),)
    if cat.publish:
        pc, day, inexact, expected = _day(fields, "catalogue", "publish", cat.publish, cat.publish_format, "UTC")
        derived = (("pt", day),)
        rules.append(
            Rule(
                "publish_not_a_day",
                f"{pc} IS NOT NULL AND {pc} <> '' AND (pt IS NULL" + (f" OR {inexact})" if inexact else ")")
                if _base(fields.types[cat.publish]) == "VARCHAR" or reader == "csv"
                else "FALSE",
                _sql_text(f"{cat.publish} not {expected}"),
                f"a publish date that is not {expected} (an empty one is fine)",
            )
        )
    ok = f"coalesce({s}, '') <> '' AND coalesce({a}, '') <> ''"
    rules.append(
        Rule(
            "conflicting_artist",
            f"{s} IN (SELECT song_id FROM conflicting_songs)",
            "'song listed with two different artists'",
            "a song listed with two different artists (every such line)",
        )
    )
    return _format(
        "songs",
        fields,
        1,
        derived=derived,
        columns=(
            ("song_id", "VARCHAR", s),
            ("artist_id", "VARCHAR", a),
            ("publish_time", "DATE", "pt"),
            ("song_init_plays", "BIGINT", "CAST(0 AS BIGINT)"),
            ("language", "INTEGER", "CAST(0 AS INTEGER)"),
            ("gender", "INTEGER", "CAST(0 AS INTEGER)"),
        ),
        rules=tuple(rules),
        relations=(
            (
                "conflicting_songs",
                f"SELECT {s} AS song_id FROM lines WHERE {ok} GROUP BY {s} HAVING count(DISTINCT {a}) > 1",
            ),
        ),
        named=(("song", s), ("artist", a)),
    )
