"""The last step of retraining: the champion refit on every day and registered as
`musictrend-forecaster@champion`, with what the daily path serves from it."""

import json
from datetime import date, timedelta
from typing import cast

import dagster as dg
from pydantic import Field

from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, backtest_plan
from musictrend_dagster.core.service.serving import ServedModel
from musictrend_dagster.core.service.store import (
    leaderboard,
    load_calibration,
    load_history,
    load_selections,
    save_selection,
    standings,
)
from musictrend_dagster.core.settings import champion_metric
from musictrend_dagster.defs.assets.models import logged_model
from musictrend_dagster.defs.resources import ForecastSettingsResource, MlflowResource, WarehouseResource
from musictrend_dagster.defs.tags import REASON_TAG
from musictrend_dagster.instance import TRAINING_POOL


class RegisteredChampionConfig(dg.Config):
    reason: str = Field(
        default="",
        description="Why this retrain (recorded with the registered version); "
        "empty: the run's musictrend/reason tag, else 'launched by hand'.",
    )


@dg.asset(
    group_name="models",
    kinds={"tensorflow", "mlflow"},
    deps=["champion"],
    pool=TRAINING_POOL,
    description=(
        "The champion refit on every day of the history with its backtested hyperparameters, registered in MLflow "
        "as musictrend-forecaster@champion together with what the daily path serves (the fitted model and its "
        "interval calibration); one row per registered version in `champion_selections` (why, on which data)."
    ),
)
def registered_champion(
    context: dg.AssetExecutionContext,
    config: RegisteredChampionConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    forecasting: ForecastSettingsResource,
) -> dg.MaterializeResult:
    from musictrend_dagster.core.service.tracking import (
        log_served_model,
        tag_model_version,
    )  # MLflow: not at code-location load

    horizon = forecasting.horizon
    with warehouse.connect() as con:
        history, songs = load_history(con)
        board = leaderboard(standings(con, MODEL_NAMES, backtest_plan(history, horizon))[0], champion_metric())
        best = board.row(0, named=True)
        calibration = load_calibration(con, best["model"])
        previous = load_selections(con).tail(1)
    reason = config.reason or context.run.tags.get(REASON_TAG) or "launched by hand (Dagster UI or job)"
    name, params = best["model"], json.loads(best["params"])
    model = logged_model(context, name, params, f"{name} refit", horizon)
    model.fit(history, songs)
    last_day = cast(date, history["ds"].max())
    served = ServedModel(
        model,
        name,
        params,
        calibration,
        trained_through=last_day,
        history_days=history["ds"].n_unique(),
        backtest_f_norm=best["f_norm"],
    )
    tracker = mlflow.tracker()
    log_served_model(tracker, best["mlflow_run_id"], served)
    version = tracker.register_champion(best["mlflow_run_id"], model, history, last_day + timedelta(days=1), horizon)
    row = {
        "model_version": version,
        "model": name,
        "data_through": last_day,
        "history_days": served.history_days,
        "backtest_f_norm": best["f_norm"],
        "backtest_coverage": best["coverage"],
        "reason": reason,
        "mlflow_run_id": best["mlflow_run_id"],
        "dagster_run_id": context.run_id,
    }
    tag_model_version(
        tracker, version, {k: row[k] for k in ("data_through", "history_days", "backtest_f_norm", "reason")}
    )
    with warehouse.connect() as con:
        save_selection(con, row)
    before = f"{previous['model'][0]} v{previous['model_version'][0]}" if previous.height else "none"
    context.log.info(
        f"{name} registered as musictrend-forecaster version {version} (alias champion); "
        f"previous champion: {before}; why: {reason}"
    )
    return dg.MaterializeResult(
        metadata={
            "champion": name,
            "model_version": version,
            "previous_champion": before,
            "reason": reason,
            "data_through": str(last_day),
            "history_days": served.history_days,
            "horizon": horizon,
            "backtest_f_norm": best["f_norm"],
            "backtest_coverage_80": best["coverage"],
            "champion_metric": champion_metric(),
            **{f"backtest_{m}": best[m] for m in ("wape", "mase") if best.get(m) is not None},
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(tracker.experiment_id, best["mlflow_run_id"])),
        }
    )
