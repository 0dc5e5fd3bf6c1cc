"""DuckDB SQL -> Spark SQL, by sqlglot: how the contract's rules and the SQL models run on Spark.

The project's SQL is written once, in DuckDB's dialect; the Spark engine transpiles it at run
time. sqlglot 30 covers everything the project uses but one function: it writes DuckDB's
``TRY_STRPTIME`` (a ``StrToTime`` marked safe) yet does not parse it, and its Spark generator
drops the "safe" flag (``TO_TIMESTAMP`` raises on a bad date under Spark 4's ANSI mode). The
two dialect subclasses below close that gap in sqlglot's own terms: ``TRY_STRPTIME(x, fmt)``
becomes Spark's ``TRY_TO_TIMESTAMP(x, fmt')`` with the format translated by sqlglot.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.spark import Spark


def _safe_strptime(args: list, dialect) -> exp.Expression:
    parsed = DuckDB.Parser.FUNCTIONS["STRPTIME"](args, dialect)
    parsed.set("safe", True)
    return parsed


class DuckDBSource(DuckDB):
    """DuckDB as the project writes it (``TRY_STRPTIME`` parsed like sqlglot generates it)."""

    # sqlglot binds DuckDB.Parser by assignment (Parser = DuckDBParser): mypy cannot subclass a variable
    class Parser(DuckDB.Parser):  # type: ignore[valid-type,misc]
        FUNCTIONS: ClassVar[dict[str, Any]] = {**DuckDB.Parser.FUNCTIONS, "TRY_STRPTIME": _safe_strptime}


class SparkTarget(Spark):
    """Spark 4 SQL with the safe ``StrToTime`` kept safe."""

    # sqlglot binds Spark.Generator by assignment (Generator = SparkGenerator): as for the Parser above
    class Generator(Spark.Generator):  # type: ignore[valid-type,misc]
        TRANSFORMS: ClassVar[dict[type, Any]] = {
            **Spark.Generator.TRANSFORMS,
            exp.StrToTime: lambda self, e: self.func(
                "TRY_TO_TIMESTAMP" if e.args.get("safe") else "TO_TIMESTAMP", e.this, self.format_time(e)
            ),
            exp.Anonymous: lambda self, e: _local_to_utc(self, e),
        }


def _local_to_utc(self, e: exp.Anonymous) -> str:
    """DuckDB's ``timezone(zone, naive)`` (a local time in `zone` as an instant) is Spark's ``to_utc_timestamp``."""
    if e.name.upper() == "TIMEZONE" and len(e.expressions) == 2:
        zone, ts = e.expressions
        return self.func("TO_UTC_TIMESTAMP", ts, zone)
    return self.anonymous_sql(e)


def to_spark(sql: str) -> str:
    """One DuckDB statement or expression as Spark SQL (comments dropped)."""
    (statement,) = sqlglot.transpile(sql, read=DuckDBSource, write=SparkTarget, comments=False)
    return statement
