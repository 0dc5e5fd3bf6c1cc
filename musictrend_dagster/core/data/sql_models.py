"""A small dbt-like layer: one SELECT per ``dbt_like_sql/<name>.sql``, built in dependency order.

Dependencies come from parsing each file with sqlglot (table references minus CTE names
and table functions), so adding a model never means editing a Python list. Tests are
dbt "singular" tests in ``dbt_like_sql/tests/<model>__<what>.sql``: a query returning the
offending rows; zero rows means pass. The model a test checks is the part of its file name
before ``__``, and it must be one of the tables the test reads (checked on load).

A model's configuration is a block of ``-- key: value`` comment lines at the top of its file
(dbt's ``config()``, in comments so the file stays plain SQL):

- ``materialized: table`` (the default) is rebuilt in full; ``view`` is a view (the staging
  models over the lake, which would otherwise copy the whole action log once more);
- ``materialized: incremental`` with ``partition_by: <column>`` (and a ``unique_key``, checked
  on every build) is dbt's insert_overwrite strategy: the SELECT says where the increment is
  cut with ``WHERE incremental_filter(<source column>)``. A full build replaces it with TRUE;
  an incremental build with ``<column> IN (<days the lake changed since the last build>)``
  and replaces exactly those partitions of the table, in one transaction. The days come
  from the lake's change log (``lake_changes``) since the watermark the model stored in
  ``model_state``. A full build happens on the first build, on ``full_refresh``, when the
  SQL of the model or of any model upstream of it changed, and when an unpartitioned source
  (the songs) changed. One SQL file serves both modes; a test holds them equal.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, cast

import duckdb
import sqlglot
from sqlglot import exp

from musictrend_dagster.core.data import lake
from musictrend_dagster.core.data.engines import Engine, duckdb_engine

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_MATERIALIZATIONS = ("table", "view", "incremental")
_CONFIG_KEYS = ("materialized", "partition_by", "unique_key")
_FILTER_RE = re.compile(r"\bincremental_filter\s*\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\)", re.IGNORECASE)
# The lake datasets behind the raw views the models read.
_SOURCES = {d.view: d.name for d in lake.DATASETS.values()}


def _default_sql_dir() -> Path:
    env = os.environ.get("MUSICTREND_SQL_DIR")
    return Path(env).expanduser().resolve() if env else Path(__file__).resolve().parents[3] / "dbt_like_sql"


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
    partition_by: str | None = None
    unique_key: tuple[str, ...] = ()
    sources: frozenset[str] = frozenset()  # lake datasets it reads, directly or through other models
    definition: str = ""  # hash of its SQL and of every model upstream of it


@dataclass(frozen=True)
class BuildResult:
    rows: int
    mode: str  # "view" | "full" | "incremental" | "unchanged"
    days: tuple[date, ...] = ()  # the partitions an incremental build replaced


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


def _table_refs(tree: exp.Query) -> frozenset[str]:
    """Names of the tables a query reads: table references that are neither CTEs nor functions."""
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return frozenset(
        t.name for t in tree.find_all(exp.Table) if isinstance(t.this, exp.Identifier) and t.name and t.name not in ctes
    )


def _checked_name(path: Path, name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise SqlModelError(f"{path}: name {name!r} is not a valid model name (^[a-z_][a-z0-9_]*$)")
    return name


def _config(path: Path, sql: str) -> dict[str, str]:
    """The ``-- key: value`` lines of the leading comment block (dbt's config, in comments)."""
    config: dict[str, str] = {}
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        key, sep, value = stripped[2:].partition(":")
        if sep and key.strip() in _CONFIG_KEYS:
            config[key.strip()] = value.strip()
    materialized = config.setdefault("materialized", "table")
    if materialized not in _MATERIALIZATIONS:
        raise SqlModelError(f"{path}: materialized must be one of {_MATERIALIZATIONS}, got {materialized!r}")
    filters = _FILTER_RE.findall(sql)
    if materialized == "incremental":
        if not config.get("partition_by") or not _NAME_RE.fullmatch(config["partition_by"]):
            raise SqlModelError(f"{path}: an incremental model needs '-- partition_by: <column>'")
        if not filters:
            raise SqlModelError(
                f"{path}: an incremental model must say where to cut the increment: "
                "WHERE incremental_filter(<source day column>)"
            )
    elif filters:
        raise SqlModelError(f"{path}: incremental_filter() is only for '-- materialized: incremental' models")
    return config


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
        config = _config(path, sql)
        unique_key = tuple(k.strip() for k in config.get("unique_key", "").split(",") if k.strip())
        for key in unique_key:
            _checked_name(path, key)
        models.append(SqlModel(name, sql, path, deps, config["materialized"], config.get("partition_by"), unique_key))
    return _with_lineage(models)


def _with_lineage(models: list[SqlModel]) -> list[SqlModel]:
    """Each model's lake sources and definition hash, through every model upstream of it."""
    by_name = {m.name: m for m in models}
    done: dict[str, SqlModel] = {}
    for m in topo_order(models):
        ups = [done[d] for d in sorted(m.deps) if d in done]
        sources = frozenset({_SOURCES[d] for d in m.deps if d in _SOURCES}).union(*(u.sources for u in ups))
        definition = hashlib.sha256("\n".join([m.sql, *(u.definition for u in ups)]).encode()).hexdigest()[:16]
        done[m.name] = replace(m, sources=sources, definition=definition)
    return [done[m.name] for m in models if m.name in by_name]


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
            raise SqlModelError(
                f"{path}: test is named after model {model!r} but does not read it (it reads {sorted(refs)})"
            )
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


def build_model(
    con: duckdb.DuckDBPyConnection, model: SqlModel, full_refresh: bool = False, engine: Engine | None = None
) -> BuildResult:
    """(Re)build the model: a view in the warehouse, or its table in the lake (every day, or the changed days).

    The engine (DuckDB when None) runs the SELECT and writes the Parquet files aside; then one
    warehouse transaction publishes them (manifest, catalogue, view) with the model's state, so
    a reader sees the old table or the new one. Only ``con.execute`` is used on the warehouse.
    """
    ident = _quote_ident(model.name)
    engine = engine or duckdb_engine()
    the_lake = lake.Lake.recorded(con)
    watermark = cast(tuple, con.execute("SELECT coalesce(max(seq), 0) FROM lake_changes").fetchone())[0]
    if model.materialized == "view":
        return _build_view(con, the_lake, model, ident, watermark)
    days = _days_to_rebuild(con, the_lake, model, full_refresh) if model.materialized == "incremental" else None
    partition_by = model.partition_by if model.materialized == "incremental" else None
    load_id = lake.new_load_id()
    staging = the_lake.staging_dir(load_id)
    try:
        output = engine.write_model(con, _body(model, days), partition_by, staging) if days != [] else None
        placed = the_lake.place(_dataset(model, output.columns), model.name, load_id, output.files) if output else []
        con.execute("BEGIN TRANSACTION")
        try:
            _drop_other_kind(con, ident, "VIEW")
            superseded = []
            if output is not None:
                superseded = the_lake.publish_model(con, _dataset(model, output.columns), load_id, placed, days)
            if model.unique_key:
                _check_unique_key(con, model, ident)
            _save_state(con, model, watermark)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            the_lake.delete([p for p, _, _ in placed])
            raise
    finally:
        the_lake.discard(load_id)
    the_lake.delete(superseded)
    (rows,) = cast(
        tuple,
        con.execute(
            "SELECT coalesce(sum(rows), 0) FROM lake_files WHERE dataset = $d", {"d": _dataset(model, ()).name}
        ).fetchone(),
    )
    if days is None:
        return BuildResult(int(rows), "full")
    return BuildResult(int(rows), "incremental" if days else "unchanged", tuple(days))


def full_select(model: SqlModel) -> str:
    """The model's SELECT over everything: what a full build stores (tests rebuild with it)."""
    return _body(model, None)


def _body(model: SqlModel, days: list[date] | None) -> str:
    """The SELECT with its increment cut: every row (days None) or only these days' rows."""
    if days is None:
        cut = "TRUE"
    else:
        cut = r"\1 IN (" + ", ".join(f"DATE '{d.isoformat()}'" for d in days) + ")" if days else "FALSE"
    return _FILTER_RE.sub(cut, model.sql.strip().rstrip(";"))


def _dataset(model: SqlModel, columns: tuple[tuple[str, str], ...]) -> lake.Dataset:
    return lake.model_dataset(model.name, columns, model.partition_by if model.materialized == "incremental" else None)


def _drop_other_kind(con: duckdb.DuckDBPyConnection, ident: str, keep: str) -> None:
    """No in-place replace across kinds: drop a table where a view goes (a warehouse from before the lake)."""
    existing = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = $n AND table_schema = current_schema()",
        {"n": ident.strip('"')},
    ).fetchone()
    if existing and existing[0] != keep:
        con.execute(f"DROP {'VIEW' if existing[0] == 'VIEW' else 'TABLE'} {ident}")


def _build_view(
    con: duckdb.DuckDBPyConnection, the_lake: lake.Lake, model: SqlModel, ident: str, watermark: int
) -> BuildResult:
    sql = full_select(model)
    con.execute("BEGIN TRANSACTION")
    try:
        _drop_other_kind(con, ident, "VIEW")
        superseded = the_lake.unregister(con, model.name)  # it may have been a table in the lake before
        con.execute(f"CREATE OR REPLACE VIEW {ident} AS\n{sql}")
        the_lake.register(con, lake.Relation(model.name, sql=sql))
        _save_state(con, model, watermark)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    the_lake.delete(superseded)
    (rows,) = cast(tuple, con.execute(f"SELECT count(*) FROM {ident}").fetchone())
    return BuildResult(int(rows), "view")


def _save_state(con: duckdb.DuckDBPyConnection, model: SqlModel, watermark: int) -> None:
    con.execute("DELETE FROM model_state WHERE model = $m", {"m": model.name})
    con.execute(
        "INSERT INTO model_state VALUES ($m, $h, $w, now()::TIMESTAMP)",
        {"m": model.name, "h": model.definition, "w": watermark},
    )


def _days_to_rebuild(
    con: duckdb.DuckDBPyConnection, the_lake: lake.Lake, model: SqlModel, full_refresh: bool
) -> list[date] | None:
    """The days an incremental build replaces: the lake's changes since its watermark (None: rebuild it all).

    Everything is rebuilt on ``full_refresh``, on the first build, when the SQL of the model or
    of a model upstream changed, and when an unpartitioned source (the songs) changed.
    """
    built = cast(
        tuple,
        con.execute(
            "SELECT count(*) FROM lake_relations WHERE name = $n AND dataset = $d",
            {"n": model.name, "d": _dataset(model, ()).name},
        ).fetchone(),
    )[0]
    state = con.execute("SELECT sql_hash, last_change FROM model_state WHERE model = $m", {"m": model.name}).fetchone()
    if full_refresh or not built or state is None or state[0] != model.definition:
        return None
    changed = [
        d
        for (d,) in con.execute(
            "SELECT DISTINCT ds FROM lake_changes WHERE seq > $s AND list_contains($src, dataset)",
            {"s": state[1], "src": sorted(model.sources)},
        ).fetchall()
    ]
    return None if None in changed else sorted(changed)


def _check_unique_key(con: duckdb.DuckDBPyConnection, model: SqlModel, ident: str) -> None:
    keys = ", ".join(_quote_ident(k) for k in model.unique_key)
    dupes = con.execute(f"SELECT {keys}, count(*) FROM {ident} GROUP BY ALL HAVING count(*) > 1 LIMIT 3").fetchall()
    if dupes:
        raise SqlModelError(f"{model.path}: unique_key ({', '.join(model.unique_key)}) repeats: {dupes}")


def build_all(
    con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR, full_refresh: bool = False, engine: Engine | None = None
) -> dict[str, BuildResult]:
    """Build every model in dependency order."""
    return {m.name: build_model(con, m, full_refresh, engine) for m in topo_order(load_models(sql_dir))}


def run_test(
    con: duckdb.DuckDBPyConnection, test: SqlTest, limit: int = 20, engine: Engine | None = None
) -> tuple[int, list[tuple[Any, ...]]]:
    """Run a singular test on the engine (DuckDB when None): (number of offending rows, up to ``limit`` of them)."""
    return (engine or duckdb_engine()).run_test(con, test.sql.strip().rstrip(";"), limit)
