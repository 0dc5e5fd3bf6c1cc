"""Features group: the model input frame in polars, read from DuckDB through Arrow."""

import dagster as dg

from musictrend_dagster.core.forecast.features import build_features
from musictrend_dagster.core.service.store import query
from musictrend_dagster.defs.metadata import preview
from musictrend_dagster.defs.resources import WarehouseResource
from musictrend_dagster.instance import DUCKDB_POOL


@dg.asset(
    group_name="features",
    kinds={"polars", "duckdb"},
    pool=DUCKDB_POOL,
    deps=["artist_daily", "stg_songs"],
    description=(
        "Per artist and day: plays, 3-day mean and variance (the original LSTM input), downloads and "
        "distinct listeners per play and their 7-vs-28-day trends, calendar and release features from the "
        "songs table. Every feature at day d uses days <= d only."
    ),
)
def model_features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        daily = query(con, "SELECT * FROM artist_daily ORDER BY artist_id, ds")
        songs = query(con, "SELECT * FROM stg_songs")
        features = build_features(daily, songs)
        con.register("features_frame", features.to_arrow())
        con.execute("CREATE OR REPLACE TABLE model_features AS SELECT * FROM features_frame")
        con.unregister("features_frame")
    context.log.info(f"model_features: {features.height:,} rows x {features.width} columns")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": features.height,
            # the newest day: the vintage it allows (automation's VintagePartition) is the day after it
            "data_through": str(features["ds"].max()) if features.height else "",
            "columns": dg.MetadataValue.json(features.columns),
            "preview": preview(features.sort("artist_id", "ds")),
        }
    )
