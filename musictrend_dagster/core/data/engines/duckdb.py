"""Ingest on DuckDB: one raw file -> validated Parquet in the load's staging folder + its quarantine.

Why it is built this way:
- DuckDB parses the file (all columns VARCHAR, explicit schema, no sniffing) and the
  contract's field rules run as SQL in the same pass that hands the good rows, as Arrow
  batches, to ``lake.ParquetParts`` (pyarrow writes the day files at about a third of the CPU
  of DuckDB's partitioned COPY), so a clean file costs one ``read_csv`` + one Parquet write.
  The rules a file of safe bytes cannot break (a regex per id, ~2 of ~9 CPU-s on tianchi-s1)
  are left out when the byte screen beside the scan passes; a file that fails it is
  validated again with every rule. The reader declares one column
  more than the format has, with ``null_padding`` and a NULL string that can never occur in
  a field (a newline), so an extra field is visible to SQL (DuckDB otherwise accepts a
  trailing delimiter); ``nfields`` is computed exactly only for lines that fail the cheap
  test ``cN IS NOT NULL AND cN+1 IS NULL``.
- "Lines read" comes from a Python pass running beside the DuckDB scan (it also hashes the
  content, see ``rawdir.scan``), not from DuckDB: ``ignore_errors`` drops lines (blank,
  undecodable, too many fields, too long) without counting them.
- Only when some line failed (loaded < lines read) does a second pass give every failing
  line its 1-based line number and its reason: the texts of the failing rows come from
  DuckDB, the lines DuckDB dropped are recognised in Python, and then ALL the contract's
  rules, line rules included, are evaluated in SQL on those lines' text. A line counted good
  in Python must be one DuckDB wrote and vice versa: loaded + quarantined = lines read, or
  the load fails naming the file ("accounting mismatch"), never a silent drop.
"""

from __future__ import annotations

import os
import shutil
import warnings
from datetime import date
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa

from musictrend_dagster.core.data import contract
from musictrend_dagster.core.data.contract import RawFormat
from musictrend_dagster.core.data.engines import ModelOutput, Staged, empty_quarantine, staged_files
from musictrend_dagster.core.data.lake import ParquetParts, literal_path, sql_literal
from musictrend_dagster.core.data.rawdir import (
    Compression,
    ContentScan,
    IngestError,
    RawFile,
    check_delimiter,
    duckdb_compression,
    is_gzip,
    iter_lines,
    scan,
)

BATCH_ROWS = 100_000


class DuckDBEngine:
    """The data layer in this process, on the warehouse's own DuckDB connection."""

    name = "duckdb"
    # Files staged at once: a one-row-group Parquet file (a day file) is one thread's scan, so one file at a
    # time leaves the other cores idle; DuckDB's scheduler shares its threads among the concurrent scans.
    concurrent_files = min(4, os.cpu_count() or 1)

    def stage(self, con: duckdb.DuckDBPyConnection, fmt: RawFormat, raw: RawFile, staging: Path, today: date) -> Staged:
        return stage(con, fmt, raw, staging, today)

    def write_model(
        self, con: duckdb.DuckDBPyConnection, sql: str, partition_by: str | None, staging: Path
    ) -> ModelOutput:
        """The SELECT streamed as Arrow into the lake's Parquet writer (only ``con.execute`` is used)."""
        columns = tuple((name, typ) for name, typ, *_ in con.execute(f"DESCRIBE {sql}").fetchall())
        parts = ParquetParts(staging, partition_by)
        try:
            with warnings.catch_warnings():  # the extra copy is of a model's rows: artists x days, small
                warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
                reader = cast(pa.RecordBatchReader, con.execute(sql).to_arrow_reader(BATCH_ROWS))
            for batch in reader:
                parts.add(batch)
        finally:
            parts.close()
        return ModelOutput(staged_files(staging, partition_by), columns)

    def run_test(self, con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
        (n,) = cast(tuple, con.execute(f"SELECT count(*) FROM (\n{sql}\n)").fetchone())
        sample = con.execute(f"SELECT * FROM (\n{sql}\n) LIMIT {int(limit)}").fetchall() if n else []
        return int(n), sample


ENGINE = DuckDBEngine()


def stage(con: duckdb.DuckDBPyConnection, fmt: RawFormat, raw: RawFile, staging: Path, today: date) -> Staged:
    """Validate `raw` and write its good rows under `staging` (Parquet, zstd, Hive-partitioned if the format is)."""
    if fmt.reader == "parquet":
        return _stage_parquet(con, fmt, raw, staging, today)
    gz = is_gzip(raw.real)
    check_delimiter(raw.real, gz, fmt.n_fields)
    counter = ContentScan(raw.real, gz)  # overlaps the DuckDB scan (DuckDB releases the GIL)
    params = {"path": literal_path(raw.real), "compression": duckdb_compression(gz)}
    try:
        # Optimistic: without the screened rules, which no file of safe bytes can break, and without
        # reading quotes, which such a file has none of; the screen runs beside this scan, and a file
        # that fails it is validated again in full.
        _relations(con, fmt, params, safe=True)
        loaded, strict = _write_good_any_endings(con, fmt, raw, staging, today, params, safe=True)
        content = counter.result()
        if not content.safe:
            if fmt.quoted:  # the relations compare the fields' values, which quotes change
                _relations(con, fmt, params, safe=False)
            loaded, strict = _write_good_any_endings(con, fmt, raw, staging, today, params, safe=False)
        lines_read, content_hash = max(content.lines - fmt.header_lines, 0), content.hash
        quarantine, recheck_on = empty_quarantine(), None
        if loaded != lines_read:
            quarantine, recheck_on = _quarantine(con, fmt, raw, gz, today, params, strict, content.safe)
        if loaded + quarantine.num_rows != lines_read:
            raise IngestError(
                f"{raw.path}: accounting mismatch: {lines_read} lines read, "
                f"{loaded} loaded + {quarantine.num_rows} quarantined"
            )
    except duckdb.Error as exc:
        raise IngestError(f"{raw.path}: DuckDB could not read it: {exc}") from exc
    finally:
        counter.join()
        for name, _ in fmt.relations:
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return Staged(staged_files(staging, fmt.partition_by), lines_read, loaded, quarantine, content_hash, recheck_on)


def _relations(con: duckdb.DuckDBPyConnection, fmt: RawFormat, params: dict, safe: bool) -> None:
    """The format's relations over the file's lines (e.g. a daily file's duplicate series-days)."""
    for name, sql in fmt.relations:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS WITH lines AS ({_parsed(fmt, False, safe)}) {sql}", params)


def _parsed(fmt: RawFormat, strict: bool, safe: bool) -> str:
    """Every line DuckDB can split, as fields c1..cN+1, the exact field count and the derived values.

    Where a quoted format's file is not `safe` (only contract.SAFE_BYTES: no quote), the fields as split
    are r1..rN+1 and c1..cN+1 are their values (`contract.unquoted`); otherwise c1..cN+1 are as split."""
    n = fmt.n_fields + 1  # one spare column makes extra fields visible
    split = _split_name(fmt, safe)
    cols = ", ".join(f"'{split}{i}': 'VARCHAR'" for i in range(1, n + 1))
    values = "".join(f", {contract.unquoted(f'r{i}')} AS c{i}" for i in range(1, n + 1)) if split == "r" else ""
    count = " + ".join(f"CAST(c{i} IS NOT NULL AS INTEGER)" for i in range(1, n + 1))
    derived = ", ".join(f"{expr} AS {name}" for name, expr in fmt.derived)
    return f"""
    SELECT *, CASE WHEN c{n - 1} IS NOT NULL AND c{n} IS NULL THEN {n - 1} ELSE {count} END AS nfields, {derived}
    FROM (SELECT *{values} FROM read_csv($path, header = false, delim = ',', quote = '', escape = '',
        auto_detect = false, columns = {{{cols}}}, null_padding = true, nullstr = '\n', ignore_errors = true,
        skip = {fmt.header_lines}, max_line_size = {contract.MAX_LINE_BYTES}, strict_mode = {str(strict).lower()},
        compression = $compression))
    """


def _split_name(fmt: RawFormat, safe: bool) -> str:
    """The prefix of the fields as split: "r" when their values are read out of quotes into c1..cN+1."""
    return "r" if fmt.quoted and not safe else "c"


def _checked(fmt: RawFormat, raw: RawFile, today: date, strict: bool, safe: bool) -> str:
    """The parsed lines with their reason (NULL = good) from the field rules (for a `safe` file, without
    the rules no safe byte can break)."""
    reason = contract.reason_case(fmt, today, raw.day, contract.field_rules(fmt, screened_out=safe))
    return f"SELECT *, {reason} AS reason FROM ({_parsed(fmt, strict, safe)}) AS lines"


def _write_good_any_endings(
    con: duckdb.DuckDBPyConnection,
    fmt: RawFormat,
    raw: RawFile,
    staging: Path,
    today: date,
    params: dict,
    safe: bool,
) -> tuple[int, bool]:
    """(rows written, whether the strict parser read the file); the staging folder holds only them."""
    _clear(staging)
    try:
        return _write_good(con, fmt, raw, staging, today, params, True, safe), True
    except (duckdb.InvalidInputException, OSError) as exc:
        # Mixed or stray line endings break DuckDB's strict parser; the lenient one copes,
        # and the accounting check still guards every line. Past the first batch the error
        # reaches us through the Arrow stream, as pyarrow's OSError with DuckDB's message.
        if isinstance(exc, OSError) and not str(exc).startswith("Invalid Input Error"):
            raise
        _clear(staging)
        return _write_good(con, fmt, raw, staging, today, params, False, safe), False


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _write_good(
    con: duckdb.DuckDBPyConnection,
    fmt: RawFormat,
    raw: RawFile,
    staging: Path,
    today: date,
    params: dict,
    strict: bool,
    safe: bool,
) -> int:
    cols = ", ".join(f"CAST({expr} AS {typ}) AS {name}" for name, typ, expr in fmt.columns)
    checked = _checked(fmt, raw, today, strict, safe)
    select = f"SELECT {cols}, {sql_literal(raw.name)} AS source_file FROM ({checked}) WHERE reason IS NULL"
    parts = ParquetParts(staging, fmt.partition_by)
    con.complete()  # a streaming relation needs the connection free of an earlier execute()'s result
    try:
        for batch in con.sql(select, params=params).to_arrow_reader(BATCH_ROWS):
            parts.add(batch)
    finally:
        rows = parts.close()
    return rows


def _quarantine(
    con: duckdb.DuckDBPyConnection,
    fmt: RawFormat,
    raw: RawFile,
    gz: Compression,
    today: date,
    params: dict,
    strict: bool,
    safe: bool,
) -> tuple[pa.Table, date | None]:
    """Slow path, only when some line failed: every failing line with its number and reason.

    A line is taken here when DuckDB rejected its text or could not have returned it as a row;
    every other line is one DuckDB wrote. If that ever disagrees with what DuckDB did, loaded +
    quarantined misses the line count and the caller's check fails the file.
    """
    n = fmt.n_fields + 1
    text = "concat_ws(',', " + ", ".join(f"{_split_name(fmt, safe)}{i}" for i in range(1, n + 1)) + ")"  # as split
    failing = {
        row[0].encode("utf-8")
        for row in con.execute(
            f"SELECT DISTINCT {text} FROM ({_checked(fmt, raw, today, strict, safe)}) WHERE reason IS NOT NULL", params
        ).fetchall()
    }
    commas = fmt.n_fields - 1
    numbers: list[int] = []
    lines: list[str] = []
    sizes: list[int] = []
    for line_no, line, size in iter_lines(raw.real, gz):
        if line_no <= fmt.header_lines:
            continue
        if (
            size > contract.MAX_LINE_BYTES
            or line in failing
            or line.count(b",") != commas
            or b"\r" in line
            or not line.strip()
            or not _utf8(line)
        ):
            numbers.append(line_no)
            lines.append(line.decode("utf-8", "replace"))
            sizes.append(size)
    batch = pa.table(
        {
            "line_no": pa.array(numbers, pa.int64()),
            "line": pa.array(lines, pa.string()),
            "line_bytes": pa.array(sizes, pa.int64()),
        }
    )
    split = ", ".join(f"{contract.unquoted(f'f[{i}]') if fmt.quoted else f'f[{i}]'} AS c{i}" for i in range(1, n + 1))
    derived = ", ".join(f"{expr} AS {name}" for name, expr in fmt.derived)
    reason = contract.reason_case(fmt, today, raw.day)
    sql = f"""
    WITH fields AS (SELECT line_no, line, line_bytes, string_split(line, ',') AS f FROM _quarantine_batch),
    lines AS (SELECT line_no, line, line_bytes, len(f) AS nfields, {split} FROM fields),
    typed AS (SELECT *, {derived} FROM lines)
    SELECT line_no, left(line, {contract.QUARANTINED_TEXT_BYTES}) AS raw_line, {reason} AS reason,
        {contract.recheck_case(fmt, today, raw.day)} AS recheck
    FROM typed ORDER BY line_no
    """
    con.register("_quarantine_batch", batch)
    try:
        result = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("_quarantine_batch")
    unexplained = [
        n
        for n, r in zip(result.column("line_no").to_pylist(), result.column("reason").to_pylist(), strict=False)
        if r is None
    ]
    if unexplained:
        raise IngestError(
            f"{raw.path}: accounting mismatch: line(s) {unexplained[:5]} were not loaded "
            "but break no rule of the contract"
        )
    rechecks = [d for d in result.column("recheck").to_pylist() if d is not None]
    return result.select(["line_no", "raw_line", "reason"]), min(rechecks, default=None)


def _utf8(line: bytes) -> bool:
    if line.isascii():
        return True
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _stage_parquet(con: duckdb.DuckDBPyConnection, fmt: RawFormat, raw: RawFile, staging: Path, today: date) -> Staged:
    """A Parquet file read typed (no text parse): every row checked by the rules, numbered by its row (from 1).

    Rows read come from the file's own metadata, not from the scan that checks them, so loaded +
    quarantined = rows read is checked against a count DuckDB's query did not make.
    """
    import pyarrow.parquet as pq

    params = {"path": literal_path(raw.real)}
    try:
        rows_read = pq.read_metadata(raw.real).num_rows
        for name, sql in fmt.relations:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS WITH lines AS ({parquet_lines(fmt)}) {sql}", params)
        reason = contract.reason_case(fmt, today, None)
        checked = f"SELECT *, {reason} AS reason FROM ({parquet_lines(fmt)}) AS lines"
        cols = ", ".join(f"CAST({expr} AS {typ}) AS {name}" for name, typ, expr in fmt.columns)
        select = f"SELECT {cols}, {sql_literal(raw.name)} AS source_file FROM ({checked}) WHERE reason IS NULL"
        _clear(staging)
        parts = ParquetParts(staging, fmt.partition_by)
        con.complete()
        try:
            for batch in con.sql(select, params=params).to_arrow_reader(BATCH_ROWS):
                parts.add(batch)
        finally:
            loaded = parts.close()
        quarantine, recheck_on = empty_quarantine(), None
        if loaded != rows_read:
            bad = con.sql(
                f"""SELECT line_no, {contract.parquet_raw_line(fmt)} AS raw_line, reason,
                    {contract.recheck_case(fmt, today, None)} AS recheck
                FROM ({checked}) WHERE reason IS NOT NULL ORDER BY line_no""",
                params=params,
            ).to_arrow_table()
            rechecks = [d for d in bad.column("recheck").to_pylist() if d is not None]
            quarantine, recheck_on = bad.select(["line_no", "raw_line", "reason"]), min(rechecks, default=None)
        if loaded + quarantine.num_rows != rows_read:
            raise IngestError(
                f"{raw.path}: accounting mismatch: {rows_read} rows read, "
                f"{loaded} loaded + {quarantine.num_rows} quarantined"
            )
    except duckdb.Error as exc:
        raise IngestError(f"{raw.path}: DuckDB could not read it: {exc}") from exc
    finally:
        for name, _ in fmt.relations:
            con.execute(f"DROP TABLE IF EXISTS {name}")
    content_hash = scan(raw.real, False).hash
    return Staged(staged_files(staging, fmt.partition_by), rows_read, loaded, quarantine, content_hash, recheck_on)


def parquet_lines(fmt: RawFormat) -> str:
    """A Parquet file's rows as the contract's fields c1..cN (typed), their row number and the derived values."""
    fields = ", ".join(f"{expr} AS c{i}" for i, expr in enumerate(fmt.parquet_fields, start=1))
    derived = ", ".join(f"{expr} AS {name}" for name, expr in fmt.derived)
    return f"""
    SELECT *, {derived} FROM (
        SELECT file_row_number + 1 AS line_no, {fmt.n_fields} AS nfields, {fields}
        FROM read_parquet($path, file_row_number = true, hive_partitioning = false)
    ) AS fields
    """


def csv_lines(fmt: RawFormat) -> str:
    """A CSV file's lines as DuckDB splits them (fields c1..cN+1, quotes read, and the derived values): for
    checks on a sample."""
    return _parsed(fmt, strict=False, safe=False)
