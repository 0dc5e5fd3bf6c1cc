"""Ingest and SQL models on Apache Spark: the same contract, lake, models and checks as on DuckDB.

Why it is built this way:
- Nothing is stated twice. The contract's rules, derived values and lake columns
  (``core.data.contract``) and the SQL models and tests (``dbt_like_sql/``) are DuckDB SQL; they
  are transpiled to Spark SQL by sqlglot at run time (``transpile.to_spark``). What this
  module writes in Spark SQL itself is what the contract asks an engine to provide: each
  line's text and length, its fields ``c1..cN`` and their count.
- One raw file is one Spark read of its lines (``lineSep`` "\\n": a stray CR stays inside its
  line, as the contract wants; Hadoop's line reader drops a BOM at the start of the file, as
  the contract wants). Every line gets its reason (NULL = good) from the rules in one pass,
  and the good rows are written as Parquet, Hive-partitioned by day, in the same job: a clean
  file costs one read and one write, on as many executors as the file has splits.
- Spark does not number lines. Only when a line failed (loaded < lines read) does a second
  pass collect the failing lines with where they sit (partition, split start, row id inside
  the partition, all taken right at the scan) and a third count each split's lines: a line's
  number is the lines of the splits before it plus its place in its own split.
- "Lines read" comes from the same independent pass as on DuckDB (``rawdir.ContentScan``: line
  count + content hash, beside the Spark job), so loaded + quarantined = lines read is checked
  against a count Spark did not make, and the content hash drives change detection the same
  way on both engines.
- The warehouse stays the catalogue: every relation (the raw datasets, the models' tables and
  views) is registered as a Spark temporary view from ``lake.Lake.relations`` before any SQL
  runs, so the transpiled SQL reads exactly the files the manifest lists.
- Only DataFrame and SQL calls (no RDDs, no SparkContext): the same code runs on ``local[*]``,
  a standalone or YARN/Kubernetes cluster and through Spark Connect. Every path Spark reads
  is escaped for Hadoop's glob syntax (``literal``), so a folder named ``raw[1]`` is read as
  itself. The lake must be on a filesystem the driver and every executor see at the same path.
"""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa
from sqlglot import exp

from musictrend_dagster.core.data import contract
from musictrend_dagster.core.data.contract import RawFormat
from musictrend_dagster.core.data.engines import ModelOutput, Staged, empty_quarantine, staged_files
from musictrend_dagster.core.data.engines.transpile import to_spark
from musictrend_dagster.core.data.lake import Lake, Relation
from musictrend_dagster.core.data.rawdir import (
    Compression,
    ContentScan,
    IngestError,
    RawFile,
    check_delimiter,
    is_gzip,
    scan,
)
from musictrend_dagster.core.settings import ConfigError

# Spark type names (DataType.simpleString) -> the DuckDB types the warehouse records.
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "date": "DATE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "timestamp_ntz": "TIMESTAMP",
}
_SCRATCH_VIEWS = ("_text", "_fields", "lines")


def literal(path: str | os.PathLike) -> str:
    """A local path as a Hadoop path that is never glob-expanded: its glob characters escaped with a backslash."""
    return "".join(f"\\{ch}" if ch in "\\*?[]{}" else ch for ch in str(path))


def spark_schema(columns: tuple[tuple[str, str], ...]) -> str:
    """(name, DuckDB type) pairs as a Spark DDL schema."""
    return ", ".join(f"`{name}` {exp.DataType.build(typ, dialect='duckdb').sql('spark')}" for name, typ in columns)


def duckdb_type(spark_type: str) -> str:
    if spark_type.startswith("decimal"):
        return spark_type.upper()
    try:
        return _DUCKDB_TYPES[spark_type]
    except KeyError:
        raise ValueError(f"no warehouse type for Spark's {spark_type}") from None


def check_java() -> None:
    """pyspark starts a JVM: say what is missing rather than let it die with "Java gateway process exited"."""
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").exists()) and shutil.which("java") is None:
        raise ConfigError(
            "the Spark engine needs Java 17 or later (no `java` on PATH and no JAVA_HOME): "
            "apt-get install openjdk-17-jre-headless, or set JAVA_HOME"
        )


def spark_config(master: str) -> dict[str, str]:
    """The session's settings: the master (or Spark Connect URL) and what the results must not depend on.

    Anything else (executor memory, event logs, ...) goes in Spark's own ``spark-defaults.conf``
    (``SPARK_CONF_DIR``), which every session reads.
    """
    return {
        "spark.remote" if master.startswith("sc://") else "spark.master": master,
        "spark.app.name": "musictrend",
        "spark.sql.session.timeZone": "UTC",  # dates and timestamps as DuckDB reads them
        "spark.sql.ansi.enabled": "true",  # the transpiled SQL relies on TRY_* for bad values, errors elsewhere
        "spark.ui.showConsoleProgress": "false",  # stage bars would garble the run's log
        # lower() through the JVM, not ICU: ICU's case-mapping tables take a minute or more to load
        # in every executor JVM (measured on 2 busy cores), and the contract only lowers ids to
        # compare them with an ASCII header name.
        "spark.sql.icu.caseMappings.enabled": "false",
    }


class SparkEngine:
    """The data layer on a SparkSession (classic or Spark Connect)."""

    name = "spark"
    concurrent_files = 1  # each file is already a job spread over the executors

    def __init__(self, session: Any) -> None:
        self.spark = session
        self._registered: dict[str, Relation] = {}  # the temporary views made from the catalogue

    # ------------------------------------------------------------------ catalogue

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """Every relation of the warehouse's catalogue as a temporary view of this session.

        A lake dataset whose files did not change since the last call keeps its view (reading
        a dataset lists its files, a Spark job of its own past a few dozen); the SQL views are
        cheap and always re-made, so they resolve against the current datasets.
        """
        relations = Lake.recorded(con).relations(con)
        for name in set(self._registered) - {rel.name for rel in relations}:
            self.spark.catalog.dropTempView(name)
            del self._registered[name]
        for rel in relations:
            if rel.is_view:
                self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW `{rel.name}` AS {to_spark(cast(str, rel.sql))}")
            elif self._registered.get(rel.name) != rel:
                self._frame(rel).createOrReplaceTempView(rel.name)
            self._registered[rel.name] = rel

    def _frame(self, rel: Relation):
        schema = spark_schema(rel.columns)
        if not rel.files:
            return self.spark.createDataFrame([], schema)
        reader = self.spark.read.schema(schema)
        if rel.partition_by:
            reader = reader.option("basePath", str(rel.base))
        return reader.parquet(*(literal(p) for p in rel.files)).select(*(f"`{name}`" for name, _ in rel.columns))

    # ------------------------------------------------------------------ ingest

    def stage(self, con: duckdb.DuckDBPyConnection, fmt: RawFormat, raw: RawFile, staging: Path, today: date) -> Staged:
        """Validate `raw` with the contract's rules and write its good rows under `staging` (Parquet, zstd)."""
        from pyspark.errors import PySparkException

        if fmt.reader == "parquet":
            return self._stage_parquet(con, fmt, raw, staging, today)
        gz = is_gzip(raw.real)
        check_delimiter(raw.real, gz, fmt.n_fields)
        counter = ContentScan(raw.real, gz)  # the independent line count and hash, beside the Spark job
        try:
            self.register(con)  # raw_songs, for "unknown song_id"
            checked = self._checked(fmt, raw, gz, staging, today)
            files, loaded = self._write_good(fmt, raw, checked, staging)
            content = counter.result()
            lines_read = max(content.lines - fmt.header_lines, 0)
            quarantine, recheck_on = empty_quarantine(), None
            if loaded != lines_read:
                quarantine, recheck_on = self._quarantine(checked)
            if loaded + quarantine.num_rows != lines_read:
                raise IngestError(
                    f"{raw.path}: accounting mismatch: {lines_read} lines read, "
                    f"{loaded} loaded + {quarantine.num_rows} quarantined"
                )
        except PySparkException as exc:
            raise IngestError(f"{raw.path}: Spark could not read it: {_first_line(exc)}") from exc
        finally:
            counter.join()
            for name in (*_SCRATCH_VIEWS, *(n for n, _ in fmt.relations)):
                self.spark.catalog.dropTempView(name)
        return Staged(files, lines_read, loaded, quarantine, content.hash, recheck_on)

    def _stage_parquet(
        self, con: duckdb.DuckDBPyConnection, fmt: RawFormat, raw: RawFile, staging: Path, today: date
    ) -> Staged:
        """A Parquet file read typed (no text parse), every row numbered (from 1) by Spark's ``_metadata.row_index``."""
        import pyarrow.parquet as pq
        from pyspark.errors import PySparkException
        from pyspark.sql import functions as F

        try:
            self.register(con)  # raw_songs, for "series not in the catalogue"
            rows_read = pq.read_metadata(raw.real).num_rows
            source = staging / "input.parquet"
            os.symlink(raw.real, source)
            self.spark.read.parquet(literal(source)).select(
                "*", F.col("_metadata.row_index").alias("_row")
            ).createOrReplaceTempView("_text")
            fields = ", ".join(f"{to_spark(expr)} AS c{i}" for i, expr in enumerate(fmt.parquet_fields, start=1))
            derived = ", ".join(f"{to_spark(expr)} AS {name}" for name, expr in fmt.derived)
            self.spark.sql(
                f"SELECT *, {derived} FROM (SELECT _row + 1 AS line_no, {fmt.n_fields} AS nfields, {fields} FROM _text)"
            ).createOrReplaceTempView("lines")
            for name, sql in fmt.relations:
                self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {to_spark(sql)}")
            reason = to_spark(contract.reason_case(fmt, today, None))
            recheck = to_spark(contract.recheck_case(fmt, today, None))
            checked = self.spark.sql(f"SELECT *, {reason} AS reason, {recheck} AS recheck FROM lines")
            files, loaded = self._write_good(fmt, raw, checked, staging)
            quarantine, recheck_on = empty_quarantine(), None
            if loaded != rows_read:
                bad = (
                    checked.where("reason IS NOT NULL")
                    .selectExpr(
                        "line_no", f"{to_spark(contract.parquet_raw_line(fmt))} AS raw_line", "reason", "recheck"
                    )
                    .toArrow()
                    .sort_by("line_no")
                )
                rechecks = [d for d in bad.column("recheck").to_pylist() if d is not None]
                quarantine = bad.select(["line_no", "raw_line", "reason"]).cast(empty_quarantine().schema)
                recheck_on = min(rechecks, default=None)
            if loaded + quarantine.num_rows != rows_read:
                raise IngestError(
                    f"{raw.path}: accounting mismatch: {rows_read} rows read, "
                    f"{loaded} loaded + {quarantine.num_rows} quarantined"
                )
        except PySparkException as exc:
            raise IngestError(f"{raw.path}: Spark could not read it: {_first_line(exc)}") from exc
        finally:
            for name in (*_SCRATCH_VIEWS, *(n for n, _ in fmt.relations)):
                self.spark.catalog.dropTempView(name)
        return Staged(files, rows_read, loaded, quarantine, scan(raw.real, False).hash, recheck_on)

    def _write_good(self, fmt: RawFormat, raw: RawFile, checked, staging: Path):
        """The rows without a reason, as the lake's columns, written under ``staging/out``: (files, rows)."""
        from pyspark.sql import functions as F

        out = staging / "out"
        good = checked.where("reason IS NULL").selectExpr(
            *(
                f"CAST({to_spark(expr)} AS {exp.DataType.build(typ, dialect='duckdb').sql('spark')}) AS {name}"
                for name, typ, expr in fmt.columns
            )
        )
        writer = good.withColumn("source_file", F.lit(raw.name)).write.option("compression", "zstd")
        if fmt.partition_by:
            writer = writer.partitionBy(fmt.partition_by)
        writer.parquet(literal(out))
        files = staged_files(out, fmt.partition_by)
        return files, sum(f.rows for f in files)

    def _checked(self, fmt: RawFormat, raw: RawFile, gz: Compression, staging: Path, today: date):
        """Every line of the file with its place in the read, its fields, derived values, reason and recheck day."""
        from pyspark.sql import functions as F

        # Spark decompresses by file name: read through a link whose name says what the bytes are.
        source = staging / ("input.csv.zst" if gz == "zstd" else "input.csv.gz" if gz else "input.csv")
        os.symlink(raw.real, source)
        (
            self.spark.read.option("lineSep", "\n")
            .text(literal(source))
            .select(
                "value",
                F.col("_metadata.file_block_start").alias("blk"),
                F.spark_partition_id().alias("pid"),
                F.monotonically_increasing_id().alias("rid"),
            )
            .createOrReplaceTempView("_text")
        )
        n, cut, keep = fmt.n_fields, contract.MAX_LINE_BYTES, contract.QUARANTINED_TEXT_BYTES
        # A header is the file's first line: the first row of the split that starts at byte 0.
        header = "WHERE NOT (blk = 0 AND rid = shiftleft(CAST(pid AS BIGINT), 33))" if fmt.header_lines else ""
        split = ", ".join(f"try_element_at(f, {i}) AS r{i}" for i in range(1, n + 1))
        fields = ", ".join(
            f"{to_spark(contract.unquoted(f'r{i}')) if fmt.quoted else f'r{i}'} AS c{i}" for i in range(1, n + 1)
        )
        derived = ", ".join(f"{to_spark(expr)} AS {name}" for name, expr in fmt.derived)
        # The line without its terminator (a CRLF's CR) and, past the length limit, only its first
        # bytes; bytes that are not UTF-8 become U+FFFD. Cut as bytes, then made valid text.
        self.spark.sql(f"""
            SELECT *, {fields} FROM (SELECT *, size(f) AS nfields, {split}
            FROM (
                SELECT blk, pid, rid, line, line_bytes, left(line, {keep}) AS raw_line, split(line, ',', -1) AS f
                FROM (
                    SELECT blk, pid, rid,
                        octet_length(value) - CAST(crlf AS INT) AS line_bytes,
                        make_valid_utf8(CAST(substr(CAST(value AS BINARY), 1,
                            CASE WHEN octet_length(value) > {cut} THEN {keep}
                                 ELSE octet_length(value) - CAST(crlf AS INT) END) AS STRING)) AS line
                    FROM (SELECT *, octet_length(value) <= {cut} AND substr(CAST(value AS BINARY), -1) = X'0D' AS crlf
                          FROM _text {header})
                )
            ))
        """).createOrReplaceTempView("_fields")
        self.spark.sql(f"SELECT *, {derived} FROM _fields").createOrReplaceTempView("lines")
        for name, sql in fmt.relations:
            self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {to_spark(sql)}")
        reason = to_spark(contract.reason_case(fmt, today, raw.day))
        recheck = to_spark(contract.recheck_case(fmt, today, raw.day))
        return self.spark.sql(f"SELECT *, {reason} AS reason, {recheck} AS recheck FROM lines")

    def _quarantine(self, checked) -> tuple[pa.Table, date | None]:
        """The failing lines with their 1-based numbers, reasons and the day from which one may pass."""
        from pyspark.sql import functions as F

        bad = checked.where("reason IS NOT NULL").select("pid", "blk", "rid", "raw_line", "reason", "recheck").toArrow()
        splits = sorted(
            self.spark.table("_text")
            .groupBy("pid", "blk")
            .agg(F.count("*").alias("n"), F.min("rid").alias("first"))
            .collect(),
            key=lambda r: (r.blk, r.pid),
        )
        offsets, before = {}, 0
        for s in splits:
            offsets[(s.pid, s.blk)] = (before, s.first)
            before += s.n
        places = zip(
            bad.column("pid").to_pylist(), bad.column("blk").to_pylist(), bad.column("rid").to_pylist(), strict=False
        )
        numbers = [offsets[(p, b)][0] + (r - offsets[(p, b)][1]) + 1 for p, b, r in places]
        table = pa.table(
            {
                "line_no": pa.array(numbers, pa.int64()),
                "raw_line": bad.column("raw_line"),
                "reason": bad.column("reason"),
            }
        ).sort_by("line_no")
        rechecks = [d for d in bad.column("recheck").to_pylist() if d is not None]
        return table.cast(empty_quarantine().schema), min(rechecks, default=None)

    # ------------------------------------------------------------------ SQL models

    def write_model(
        self, con: duckdb.DuckDBPyConnection, sql: str, partition_by: str | None, staging: Path
    ) -> ModelOutput:
        """The model's SELECT, transpiled, written as one file per partition (or one file: models are small)."""
        self.register(con)
        frame = self.spark.sql(to_spark(sql))
        columns = tuple((f.name, duckdb_type(f.dataType.simpleString())) for f in frame.schema.fields)
        if partition_by:
            writer = frame.repartition(partition_by).write.partitionBy(partition_by)
        else:
            writer = frame.coalesce(1).write
        out = staging / "out"
        writer.option("compression", "zstd").parquet(literal(out))
        return ModelOutput(staged_files(out, partition_by), columns)

    def run_test(self, con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
        """One job when the test passes (no rows); the count only when there are more rows than the sample."""
        self.register(con)
        frame = self.spark.sql(to_spark(sql))
        sample = [tuple(row) for row in frame.limit(limit + 1).collect()]
        n = len(sample) if len(sample) <= limit else frame.count()
        return n, sample[:limit]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
