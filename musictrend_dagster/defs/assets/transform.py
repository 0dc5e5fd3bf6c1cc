"""Transform group: one asset per `dbt_like_sql/*.sql` model; its singular tests are blocking checks that run
in its step, on the table it just built (`check_specs`: no step, no second connection of their own).

Dependencies come from parsing each SELECT with sqlglot (core.data.sql_models); a table that is
no model is an upstream asset of the same name (the ingest tables).
"""

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from musictrend_dagster.core.data import sql_models
from musictrend_dagster.core.service import plots
from musictrend_dagster.core.service.store import query
from musictrend_dagster.defs.assets.ingest import KINDS, RefreshConfig
from musictrend_dagster.defs.metadata import png, preview
from musictrend_dagster.defs.resources import WarehouseResource
from musictrend_dagster.instance import DUCKDB_POOL

# The lake views a described source fills are written by the raw_user_actions asset (the play data's ingest).
INGESTED_BY = {"raw_events": "raw_user_actions", "raw_daily_plays": "raw_user_actions"}
# Tables people would rather look at than read: a plot next to the preview.
PLOTS = {"artist_daily": plots.plot_artist_daily}


def _model_asset(model: sql_models.SqlModel, tests: list[sql_models.SqlTest]) -> dg.AssetsDefinition:
    @dg.asset(
        name=model.name,
        group_name="transform",
        kinds=KINDS | {"sql"},
        pool=DUCKDB_POOL,
        deps=sorted({INGESTED_BY.get(d, d) for d in model.deps}),
        description=(
            f"{_what(model)} the SELECT in `dbt_like_sql/{model.path.name}`:\n\n```sql\n{model.sql.strip()}\n```"
        ),
        code_version=hashlib.sha256(model.sql.encode()).hexdigest()[:12],
        check_specs=[_check_spec(t) for t in tests],
    )
    def _build(
        context: dg.AssetExecutionContext, config: RefreshConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            built = sql_models.build_model(con, model, full_refresh=config.full_refresh, engine=warehouse.data_engine())
            head = query(con, f'SELECT * FROM "{model.name}" LIMIT 10')
            full = query(con, f'SELECT * FROM "{model.name}"') if model.name in PLOTS else None
            checks = [_test_result(con, t, warehouse) for t in tests]
        days = (
            f" ({len(built.days)} days: {', '.join(map(str, built.days[:5]))}{' ...' if len(built.days) > 5 else ''})"
            if built.days
            else ""
        )
        context.log.info(f"{model.name}: {built.rows:,} rows, {built.mode} build{days}")
        metadata: dict[str, Any] = {
            **warehouse.engine_metadata,
            "dagster/row_count": built.rows,
            "build": built.mode,
            "preview": preview(head),
        }
        if model.materialized == "incremental":
            metadata["days_rebuilt"] = dg.MetadataValue.json([str(d) for d in built.days])
        if full is not None:
            with tempfile.TemporaryDirectory() as tmp:
                metadata["plot"] = png(PLOTS[model.name](full, path=Path(tmp) / "plot.png"), model.name)
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return _build


def _what(model: sql_models.SqlModel) -> str:
    if model.materialized == "incremental":
        return (
            f"Incremental (partitions by `{model.partition_by}`): only the days the lake changed on are "
            "re-derived (`full_refresh` in the launchpad rebuilds it all) from"
        )
    return f"`CREATE OR REPLACE {model.materialized.upper()} {model.name} AS`"


def _check_spec(test: sql_models.SqlTest) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        test.name,
        asset=test.model,
        blocking=True,
        description=(
            f"Singular test `dbt_like_sql/tests/{test.path.name}`: passes when the query returns no rows.\n\n"
            f"```sql\n{test.sql.strip()}\n```"
        ),
    )


def _test_result(con: Any, test: sql_models.SqlTest, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    failing, sample = sql_models.run_test(con, test, engine=warehouse.data_engine())
    metadata: dict[str, Any] = {**warehouse.engine_metadata, "failing_rows": failing}
    if failing:
        metadata["sample"] = dg.MetadataValue.json([[str(v) for v in row] for row in sample])
    return dg.AssetCheckResult(check_name=test.name, passed=failing == 0, metadata=metadata)


MODELS = sql_models.load_models(sql_models.SQL_DIR)
TESTS = sql_models.load_tests(sql_models.SQL_DIR / "tests")
for _test in TESTS:
    if _test.model not in {m.name for m in MODELS}:
        raise sql_models.SqlModelError(f"{_test.path}: no model {_test.model!r} in {sql_models.SQL_DIR}")
transform_assets = [_model_asset(m, [t for t in TESTS if t.model == m.name]) for m in MODELS]
