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
