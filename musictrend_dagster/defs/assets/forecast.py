"""Forecast group: the champion refit on all data before the start day, its forecast, and the
competition submission file."""

import json
import tempfile
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from musictrend_dagster.core import plots
from musictrend_dagster.core.data import (
    leaderboard,
    load_calibration,
    load_forecast,
    load_history,
    save_forecast,
    standings,
)
from musictrend_dagster.core.intervals import with_interval
from musictrend_dagster.core.models.registry import MODEL_NAMES
from musictrend_dagster.core.submission import read_submission, write_submission
from musictrend_dagster.defs.assets.models import backtest_plan, logged_model
from musictrend_dagster.defs.metadata import png, preview, score
from musictrend_dagster.defs.resources import MlflowResource, OutputResource, WarehouseResource
from musictrend_dagster.instance import TRAINING_POOL


class ForecastConfig(dg.Config):
    start: str = Field(default="", description="First forecast day, YYYY-MM-DD; empty = the day after the last observed day.")
    horizon: int = Field(default=60, ge=1, le=366, description="Number of days to forecast.")


@dg.asset(
    group_name="forecast",
    kinds={"tensorflow", "mlflow", "duckdb"},
    deps=["champion"],
    pool=TRAINING_POOL,
    description=(
        "The champion refit on every day before `start` with its backtested hyperparameters, "
        "registered in MLflow as musictrend-forecaster@champion, forecasting `horizon` days with an 80% interval "
        "per artist and day calibrated on its backtests (table `forecast`: plays, plays_lo, plays_hi)."
    ),
)
def forecast(
    context: dg.AssetExecutionContext, config: ForecastConfig, warehouse: WarehouseResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        history, songs = load_history(con)
        best = leaderboard(standings(con, MODEL_NAMES, backtest_plan(history))[0]).row(0, named=True)
        calibration = load_calibration(con, best["model"])
    last_day = history["ds"].max()
    start = date.fromisoformat(config.start) if config.start else last_day + timedelta(days=1)
    if start > last_day + timedelta(days=1):
        raise dg.Failure(f"forecast start {start} leaves a gap after the last observed day {last_day}")
    name, params = best["model"], json.loads(best["params"])
    model = logged_model(context, name, params, f"{name} refit")
    train = history.filter(pl.col("ds") < start)
    model.fit(train, songs)
    predicted = with_interval(model.predict(start, config.horizon), calibration)
    version = mlflow.tracker().register_champion(best["mlflow_run_id"], model, train, start, config.horizon)
    context.log.info(f"{name} registered as musictrend-forecaster version {version} (alias champion)")
    with warehouse.connect() as con:
        save_forecast(con, predicted, name)
    with tempfile.TemporaryDirectory() as tmp:
        chart = plots.plot_forecast_vs_actual(train, predicted, None, path=Path(tmp) / "forecast.png")
        chart_md = png(chart, "forecast")
    return dg.MaterializeResult(
        metadata={
            "champion": name,
            "backtest_f_norm": score(best["f_norm"]),
            "interval": "80%, calibrated on the champion's backtest errors by horizon day",
            "backtest_coverage_80": score(best["coverage"]),
            "model_version": str(version),
            "start": str(start),
            "horizon": config.horizon,
            "dagster/row_count": predicted.height,
            "plot": chart_md,
            "preview": preview(predicted),
        }
    )


@dg.asset(
    group_name="forecast",
    kinds={"csv"},
    deps=[forecast],
    description="`$MUSICTREND_HOME/output/mars_tianchi_artist_plays_predict.csv`: no header, artist_id,Plays,Ds; integer plays >= 0; replaced atomically.",
)
def submission(context: dg.AssetExecutionContext, warehouse: WarehouseResource, output: OutputResource) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        predicted = load_forecast(con)
    path = Path(output.submission_path)
    rows = write_submission(predicted, path)
    context.log.info(f"submission: {rows:,} rows -> {path}")
    written = read_submission(path)  # the preview shows the file as written: artist_id, Plays, Ds
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(path)), "dagster/row_count": rows, "champion": predicted["model"][0],
                  "first_day": str(written["ds"].min()), "last_day": str(written["ds"].max()),
                  "artists": written["artist_id"].n_unique(),
                  "preview": preview(written.select("artist_id", Plays="plays", Ds=pl.col("ds").dt.strftime("%Y%m%d")))}
    )
