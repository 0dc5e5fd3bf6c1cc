"""The engines that run the data layer: DuckDB in this process (``duckdb``), or Apache Spark on
anything from ``local[*]`` to a cluster (``spark``).

An engine does the heavy part and writes aside; everything else is engine-neutral and lives in
``ingest``, ``sql_models`` and ``lake``: which files and days to (re)do, publishing into the
lake, the warehouse's bookkeeping and catalogue. So the lake layout, the quarantine, the
manifest and the incremental state are the same whichever engine ran, and either engine picks
up where the other left off. An engine provides:

- ``stage(con, fmt, raw, staging, today) -> Staged``: one raw file validated with the contract's
  rules (``core.data.contract``), its good rows written as Parquet under ``staging``, its quarantine;
  ``concurrent_files`` of them may run at once, from threads, each with its own cursor as ``con``;
- ``write_model(con, sql, partition_by, staging) -> ModelOutput``: a SQL model's SELECT (DuckDB
  SQL) run and written as Parquet under ``staging``, with the result's columns;
- ``run_test(con, sql, limit) -> (rows, sample)``: a singular SQL test (DuckDB SQL) run.

``con`` is the warehouse (DuckDB): the catalogue every engine reads its relations from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from musictrend_dagster.core.data.contract import RawFormat
from musictrend_dagster.core.data.lake import StagedFile
from musictrend_dagster.core.data.rawdir import RawFile

if TYPE_CHECKING:  # only for annotations: a module attribute `duckdb` would shadow the engines.duckdb submodule
    import duckdb

NAMES = ("duckdb", "spark")


@dataclass
class Staged:
    """One raw file, validated and written aside: what publishing it needs."""

    files: list[StagedFile]
    lines_read: int
    loaded: int
    quarantine: pa.Table  # line_no, raw_line, reason
    content_hash: str
    recheck_on: date | None = None  # the first day on which a quarantined line may pass (a future Ds)

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows

    def reasons(self) -> dict[str, int]:
        return dict(sorted(Counter(self.quarantine.column("reason").to_pylist()).items()))


@dataclass(frozen=True)
class ModelOutput:
    files: list[StagedFile]
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type) in the SELECT's order


class Engine(Protocol):
    name: str
    concurrent_files: int  # raw files it may stage at once (each on its own cursor of the warehouse)

    def stage(
        self, con: duckdb.DuckDBPyConnection, fmt: RawFormat, raw: RawFile, staging: Path, today: date
    ) -> Staged: ...

    def write_model(
        self, con: duckdb.DuckDBPyConnection, sql: str, partition_by: str | None, staging: Path
    ) -> ModelOutput: ...

    def run_test(self, con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> tuple[int, list[tuple[Any, ...]]]: ...


def staged_files(folder: Path, partition_by: str | None) -> list[StagedFile]:
    """The non-empty Parquet files an engine wrote under `folder` (``<column>=<value>/`` when partitioned)."""
    files = []
    for path in sorted(folder.rglob("*.parquet")):
        rows = pq.read_metadata(path).num_rows
        if rows == 0:
            continue
        ds = date.fromisoformat(path.parent.name.split("=", 1)[1]) if partition_by else None
        files.append(StagedFile(path, ds, rows))
    return files


def empty_quarantine() -> pa.Table:
    return pa.table(
        {
            "line_no": pa.array([], pa.int64()),
            "raw_line": pa.array([], pa.string()),
            "reason": pa.array([], pa.string()),
        }
    )


def duckdb_engine() -> Engine:
    """The default engine (what runs when nobody chose another)."""
    from musictrend_dagster.core.data.engines.duckdb import ENGINE

    return ENGINE
