"""The last step of retraining: the champion refit on every day and registered as
`musictrend-forecaster@champion`: the one champion record (version tags) and the one served model."""

import json
from datetime import date
from typing import cast

import dagster as dg
from pydantic import Field

from musictrend_dagster.core.forecast.models.registry import backtest_plan, candidate_names
from musictrend_dagster.core.service.serving import ServedModel
from musictrend_dagster.core.service.store import leaderboard, load_calibration, load_history, standings
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
        "as musictrend-forecaster@champion: the version's one model is what the daily path serves (the fitted "
        "model and its interval calibration), its tags are the one record of the selection (trained through, "
        "history days, backtest origins, horizon, score, why) that the forecast, the automation, the CLI and "
        "monitoring read."
    ),
)
def registered_champion(
    context: dg.AssetExecutionContext,
    config: RegisteredChampionConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    forecasting: ForecastSettingsResource,
) -> dg.MaterializeResult:
    from musictrend_dagster.core.service.tracking import current_champion  # MLflow: not at code-location load

    horizon = forecasting.horizon
    with warehouse.connect() as con:
        history, songs = load_history(con)
        plan = backtest_plan(history, horizon)
        board = leaderboard(standings(con, candidate_names(), plan)[0], champion_metric())
        best = board.row(0, named=True)
        calibration = load_calibration(con, best["model"])
    previous = current_champion(mlflow.tracking_uri)
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
    selection = tracker.register_champion(
        best["mlflow_run_id"],
        served,
        horizon=horizon,
        origins=plan.origins,
        backtest_coverage=best["coverage"],
        reason=reason,
        tags={"dagster_run_id": context.run_id},
    )
    version = selection.model_version
    before = f"{previous.model} v{previous.model_version}" if previous else "none"
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
            "backtest_origins": ", ".join(o.isoformat() for o in plan.origins),
            "backtest_f_norm": best["f_norm"],
            "backtest_coverage_80": best["coverage"],
            "champion_metric": champion_metric(),
            **{f"backtest_{m}": best[m] for m in ("wape", "mase") if best.get(m) is not None},
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(tracker.experiment_id, best["mlflow_run_id"])),
        }
    )
