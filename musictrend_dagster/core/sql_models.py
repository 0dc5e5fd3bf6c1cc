"""A small dbt-like layer: one SELECT per ``dbt_like_sql/<name>.sql``, built in dependency order.

Dependencies come from parsing each file with sqlglot (table references minus CTE names
and table functions), so adding a model never means editing a Python list. Tests are
dbt "singular" tests in ``dbt_like_sql/tests/<model>__<what>.sql``: a query returning the
offending rows; zero rows means pass. The model a test checks is the part of its file name
before ``__``, and it must be one of the tables the test reads (checked on load).

A model is a table unless its file starts with a ``-- materialized: view`` comment line
(used for the staging models over the raw tables, which would otherwise copy the whole
action log once more on every build).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_MATERIALIZATIONS = ("table", "view")


def _default_sql_dir() -> Path:
    env = os.environ.get("MUSICTREND_SQL_DIR")
    return Path(env).expanduser().resolve() if env else Path(__file__).resolve().parents[2] / "dbt_like_sql"


SQL_DIR: Path = _default_sql_dir()


class SqlModelError(Exception):
    """A model or test file is unusable; the message names the file."""


@dataclass(frozen=True)
class SqlModel:
    name: str
    sql: str
    path: Path
    deps: frozenset[str]
    materialized: str = "table"


@dataclass(frozen=True)
class SqlTest:
    name: str
    sql: str
    path: Path
    model: str


def _parse_select(path: Path, sql: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise SqlModelError(f"{path}: SQL does not parse: {exc}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        kinds = ", ".join(type(s).__name__ for s in statements) or "nothing"
        raise SqlModelError(f"{path}: expected a single SELECT, found {kinds}")
    return statements[0]


def _table_refs(tree: exp.Expression) -> frozenset[str]:
    """Names of the tables a query reads: table references that are neither CTEs nor functions."""
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return frozenset(
        t.name for t in tree.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier) and t.name and t.name not in ctes
    )


def _checked_name(path: Path, name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise SqlModelError(f"{path}: name {name!r} is not a valid model name (^[a-z_][a-z0-9_]*$)")
    return name


def _materialization(path: Path, sql: str) -> str:
    """Read a leading ``-- materialized: table|view`` comment (dbt's config, in a comment)."""
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        key, sep, value = stripped[2:].partition(":")
        if sep and key.strip() == "materialized":
            value = value.strip()
            if value not in _MATERIALIZATIONS:
                raise SqlModelError(f"{path}: materialized must be one of {_MATERIALIZATIONS}, got {value!r}")
            return value
    return "table"


def load_models(sql_dir: Path = SQL_DIR) -> list[SqlModel]:
    """Every ``*.sql`` directly in ``sql_dir``, sorted by name, with parsed dependencies."""
    sql_dir = Path(sql_dir)
    if not sql_dir.is_dir():
        raise SqlModelError(f"{sql_dir}: SQL model folder not found")
    models = []
    for path in sorted(sql_dir.glob("*.sql")):
        name = _checked_name(path, path.stem)
        sql = path.read_text(encoding="utf-8")
        tree = _parse_select(path, sql)
        deps = _table_refs(tree) - {name}
        models.append(SqlModel(name, sql, path, deps, _materialization(path, sql)))
    return models


def load_tests(tests_dir: Path = SQL_DIR / "tests") -> list[SqlTest]:
    """Every ``<model>__<what>.sql`` in ``tests_dir``; missing folder means no tests."""
    tests_dir = Path(tests_dir)
    if not tests_dir.is_dir():
        return []
    tests = []
    for path in sorted(tests_dir.glob("*.sql")):
        name = _checked_name(path, path.stem)
        model, sep, what = name.partition("__")
        if not sep or not model or not what:
            raise SqlModelError(f"{path}: test file must be named <model>__<what>.sql")
        sql = path.read_text(encoding="utf-8")
        refs = _table_refs(_parse_select(path, sql))
        if model not in refs:
            raise SqlModelError(f"{path}: test is named after model {model!r} but does not read it "
                                f"(it reads {sorted(refs)})")
        tests.append(SqlTest(name, sql, path, model))
    return tests


def topo_order(models: list[SqlModel]) -> list[SqlModel]:
    """Dependencies before dependants; ties by name so the order is deterministic.

    Deps that are not models (the raw tables) are external inputs and impose no order.
    """
    by_name = {m.name: m for m in models}
    pending = {m.name: set(m.deps) & by_name.keys() for m in models}
    ordered: list[SqlModel] = []
    while pending:
        ready = sorted(n for n, deps in pending.items() if not deps)
        if not ready:
            cycle = ", ".join(f"{by_name[n].path.name} -> {sorted(d)}" for n, d in sorted(pending.items()))
            raise SqlModelError(f"dependency cycle among SQL models: {cycle}")
        for n in ready:
            ordered.append(by_name[n])
            del pending[n]
        for deps in pending.values():
            deps.difference_update(ready)
    return ordered


def _quote_ident(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise SqlModelError(f"refusing to use {name!r} as a table name")
    return f'"{name}"'


def build_model(con: duckdb.DuckDBPyConnection, model: SqlModel) -> int:
    """(Re)create the model's table or view in one transaction; returns its row count."""
    ident = _quote_ident(model.name)
    kind = "VIEW" if model.materialized == "view" else "TABLE"
    body = model.sql.strip().rstrip(";")
    con.execute("BEGIN TRANSACTION")
    try:
        existing = con.execute(
            "SELECT table_type FROM information_schema.tables "
            "WHERE table_name = $n AND table_schema = current_schema()", {"n": model.name},
        ).fetchone()
        if existing and (existing[0] == "VIEW") != (kind == "VIEW"):  # no in-place replace across kinds
            con.execute(f"DROP {'VIEW' if existing[0] == 'VIEW' else 'TABLE'} {ident}")
        con.execute(f"CREATE OR REPLACE {kind} {ident} AS\n{body}")
        (count,) = con.execute(f"SELECT count(*) FROM {ident}").fetchone()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(count)


def build_all(con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> dict[str, int]:
    """Build every model in dependency order; returns row counts by model name."""
    return {m.name: build_model(con, m) for m in topo_order(load_models(sql_dir))}


def run_test(con: duckdb.DuckDBPyConnection, test: SqlTest, limit: int = 20) -> tuple[int, list[tuple[Any, ...]]]:
    """Run a singular test: (number of offending rows, up to ``limit`` of them)."""
    body = test.sql.strip().rstrip(";")
    (n,) = con.execute(f"SELECT count(*) FROM (\n{body}\n)").fetchone()
    sample = con.execute(f"SELECT * FROM (\n{body}\n) LIMIT {int(limit)}").fetchall() if n else []
    return int(n), sample
