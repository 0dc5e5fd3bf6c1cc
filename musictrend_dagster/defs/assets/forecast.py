"""Forecast group, one daily partition per vintage: the forecast vintage by the registered champion,
published as output/vintages/<vintage>/forecasts.csv and .parquet (every source) and as that folder's
competition submission file (the tianchi source); the newest vintage's files are also at output/."""

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import cast

import dagster as dg
import polars as pl
from pydantic import Field

from musictrend_dagster.core.service import plots
from musictrend_dagster.core.service.outputs import read_submission, write_forecasts, write_submission
from musictrend_dagster.core.service.serving import forecast_vintage
from musictrend_dagster.core.service.store import load_forecast, load_forecasts, load_history, save_forecast
from musictrend_dagster.core.settings import DEFAULT_HORIZON, HORIZON_VAR, MAX_HORIZON
from musictrend_dagster.defs.assets.models import inference_session
from musictrend_dagster.defs.checks import (
    FORECAST_CHECK,
    FORECAST_FILES_CHECK,
    SUBMISSION_CHECK,
    forecast_complete_and_valid,
    forecast_files_match,
    submission_complete,
)
from musictrend_dagster.defs.metadata import png, preview, score
from musictrend_dagster.defs.partitions import VINTAGES, vintage_of
from musictrend_dagster.defs.resources import (
    ForecastSettingsResource,
    MlflowResource,
    OutputResource,
    WarehouseResource,
)
from musictrend_dagster.defs.tags import REASON_TAG, TRIGGER_TAG
from musictrend_dagster.instance import DUCKDB_POOL

# A vintage a day is the service: a forecast older than a day warns, older than two days fails (evaluated by
# Dagster's freshness daemon, shown on the asset page; it replaces the hand-written freshness check).
FORECAST_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=2), warn_window=timedelta(hours=26))


class ForecastConfig(dg.Config):
    horizon: int = Field(
        default=0,
        ge=0,
        le=MAX_HORIZON,
        description=f"Days to forecast; 0 = the project's horizon ({HORIZON_VAR}, default {DEFAULT_HORIZON}), the "
        "one the champion was backtested and trained for.",
    )


@dg.asset(
    group_name="forecast",
    kinds={"mlflow", "duckdb", "polars"},
    deps=["model_features", "registered_champion"],
    pool=DUCKDB_POOL,
    check_specs=[FORECAST_CHECK],
    freshness_policy=FORECAST_FRESHNESS,
    partitions_def=VINTAGES,
    description=(
        "A forecast vintage, one daily partition per vintage day (the first forecast day): the registered champion "
        "(models:/musictrend-forecaster@champion, loaded with mlflow.pyfunc; the version and its facts from the "
        "registry) reads the days before it and forecasts `horizon` days, with an "
        "80% interval per artist and day; no backtest, no refit unless the model kind needs one to see new days "
        "(then the metadata says so). An earlier day reads only the days before it (a backfill never peeks; a "
        "hindcast is marked if the champion was trained on that day). Kept in `forecast_vintages`; materialising "
        "a partition replaces that vintage only; `forecast` is the newest."
    ),
)
def forecast(
    context: dg.AssetExecutionContext,
    config: ForecastConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    forecasting: ForecastSettingsResource,
) -> dg.MaterializeResult:
    from musictrend_dagster.core.service.tracking import NoChampion, load_champion  # MLflow: not at code-location load

    try:
        champion, served = load_champion(mlflow.tracking_uri)
    except NoChampion as exc:
        raise dg.Failure(str(exc)) from None
    version = champion.model_version
    with warehouse.connect() as con:
        history, songs = load_history(con)
        artists = [r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall()]
    horizon = config.horizon or forecasting.horizon
    try:
        made = forecast_vintage(
            served, history, songs, vintage_of(context), horizon=horizon, spark=inference_session(warehouse)
        )
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    with warehouse.connect() as con:
        save_forecast(con, made.frame.drop("vintage"), champion.model, version, made.data_through)
    refit = made.refit or (
        f"no: the weights of version {version} (trained through {champion.data_through}) "
        f"read the days through {made.data_through}"
    )
    context.log.info(
        f"vintage {made.vintage}: {champion.model} v{version}, {made.history_days} days of history; refit {refit}"
    )
    if made.in_sample:
        context.log.warning(
            f"vintage {made.vintage} is a hindcast: version {version} was trained on days through "
            f"{champion.data_through}; monitoring leaves it out of the live score"
        )
    with tempfile.TemporaryDirectory() as tmp:
        chart = plots.plot_forecast_vs_actual(
            history.filter(pl.col("ds") < made.vintage), made.frame, None, path=Path(tmp) / "forecast.png"
        )
        chart_md = png(chart, "forecast")
    tags = context.run.tags
    return dg.MaterializeResult(
        metadata={
            "vintage": str(made.vintage),
            "champion": champion.model,
            "model_version": version,
            "refit": refit,
            "trained_through": str(champion.data_through),
            "selected_on": f"{champion.history_days} days, backtest origins "
            f"{', '.join(o.isoformat() for o in champion.origins) or 'not recorded'}, {champion.horizon}-day horizon",
            "data_through": str(made.data_through),
            "history_days": made.history_days,
            "hindcast": made.in_sample,
            **({} if champion.backtest_f_norm is None else {"backtest_f_norm": score(champion.backtest_f_norm)}),
            "interval": "80%, calibrated on the champion's backtest errors by horizon day",
            "horizon": horizon,
            "trigger": tags.get(TRIGGER_TAG, "launched by hand"),
            "why": tags.get(REASON_TAG, ""),
            "dagster/row_count": made.frame.height,
            "plot": chart_md,
            "preview": preview(made.frame),
        },
        check_results=[forecast_complete_and_valid(made.frame, artists)],
    )


@dg.asset(
    group_name="forecast",
    kinds={"csv", "parquet"},
    deps=[forecast],
    pool=DUCKDB_POOL,
    partitions_def=VINTAGES,
    check_specs=[FORECAST_FILES_CHECK],
    description="The forecasts of each vintage, `$MUSICTREND_HOME/output/vintages/<vintage>/forecasts.csv` and "
    "`forecasts.parquet`: one row per series and day with `unique_id, ds, forecast, lo80, hi80, model, "
    "model_version, data_through`; each replaced atomically. The newest vintage's are also "
    "`$MUSICTREND_HOME/output/forecasts.csv` and `.parquet` (the warehouse view `forecasts`).",
)
def forecast_files(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, output: OutputResource
) -> dg.MaterializeResult:
    vintage = vintage_of(context)
    with warehouse.connect() as con:
        published = load_forecasts(con, vintage)
        (newest,) = cast(tuple, con.execute("SELECT max(vintage) FROM forecast_vintages").fetchone())
    if published.is_empty():
        raise dg.Failure(f"no forecast vintage {vintage} in the warehouse: materialise forecast {vintage} first")
    paths: tuple[Path, ...] = output.forecasts_paths(vintage)
    rows = write_forecasts(published, *paths)
    if vintage == newest:
        write_forecasts(published, *output.forecasts_paths())
        paths += output.forecasts_paths()
    context.log.info(f"forecasts: {rows:,} rows of vintage {vintage} -> {', '.join(map(str, paths))}")
    return dg.MaterializeResult(
        metadata={
            "csv": dg.MetadataValue.path(str(paths[0])),
            "parquet": dg.MetadataValue.path(str(paths[1])),
            "newest": vintage == newest,
            "dagster/row_count": rows,
            "vintage": str(vintage),
            "series": published["unique_id"].n_unique(),
            "first_day": str(published["ds"].min()),
            "last_day": str(published["ds"].max()),
            "data_through": str(published["data_through"].max()),
            "model": published["model"][0],
            "model_version": published["model_version"][0],
            "preview": preview(published),
        },
        check_results=[forecast_files_match(published, paths)],
    )


@dg.asset(
    group_name="forecast",
    kinds={"csv"},
    deps=[forecast],
    pool=DUCKDB_POOL,
    partitions_def=VINTAGES,
    check_specs=[SUBMISSION_CHECK],
    description="The competition file of each vintage, `$MUSICTREND_HOME/output/vintages/<vintage>/"
    "mars_tianchi_artist_plays_predict.csv` (no header, artist_id,Plays,Ds; integer plays >= 0; replaced "
    "atomically); the newest vintage's is also `$MUSICTREND_HOME/output/mars_tianchi_artist_plays_predict.csv`.",
)
def submission(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, output: OutputResource
) -> dg.MaterializeResult:
    vintage = vintage_of(context)
    with warehouse.connect() as con:
        predicted = load_forecast(con, vintage)
        (newest,) = cast(tuple, con.execute("SELECT max(vintage) FROM forecast_vintages").fetchone())
        artists = [r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall()]
    if predicted.is_empty():
        raise dg.Failure(f"no forecast vintage {vintage} in the warehouse: materialise forecast {vintage} first")
    path = output.vintage_path(vintage)
    rows = write_submission(predicted, path)
    written = read_submission(path)  # the check and the preview see the file as written: artist_id, Plays, Ds
    if vintage == newest:
        write_submission(predicted, Path(output.submission_path))
    context.log.info(f"submission: {rows:,} rows of vintage {vintage} -> {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "newest": vintage == newest,
            "dagster/row_count": rows,
            "vintage": str(vintage),
            "champion": predicted["model"][0],
            "model_version": predicted["model_version"][0],
            "first_day": str(written["ds"].min()),
            "last_day": str(written["ds"].max()),
            "artists": written["artist_id"].n_unique(),
            "preview": preview(written.select("artist_id", Plays="plays", Ds=pl.col("ds").dt.strftime("%Y%m%d"))),
        },
        check_results=[submission_complete(written, artists)],
    )
