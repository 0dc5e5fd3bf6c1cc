"""Models group: one backtest asset per forecaster (rolling origins planned from the history,
official score, 80% intervals, an MLflow run each) and the champion, picked by mean f_norm
among the models that ran, whatever kind of model wins."""

import tempfile
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import create_model

from musictrend_dagster.core import plots
from musictrend_dagster.core.backtest import HORIZON, BacktestPlan, OriginResult, Skipped, backtest, plan_backtest
from musictrend_dagster.core.data import leaderboard, load_history, save_backtest, save_skipped, standings
from musictrend_dagster.core.intervals import calibrate, coverage, log_errors, with_interval
from musictrend_dagster.core.models.base import Forecaster, InsufficientHistory
from musictrend_dagster.core.models.registry import MODEL_NAMES, SPECS, ModelSpec, make_model, required_history
from musictrend_dagster.core.models.registry import spec as model_spec
from musictrend_dagster.defs.metadata import png, preview
from musictrend_dagster.defs.resources import MlflowResource, WarehouseResource
from musictrend_dagster.instance import TRAINING_POOL


def _epoch_logger(context: dg.AssetExecutionContext, label: str, epochs: int) -> Callable[[int, float], None]:
    """Every epoch's loss in the run log (debug), every tenth and the last also at info level."""

    def log(epoch: int, loss: float) -> None:
        message = f"{label}: epoch {epoch + 1}/{epochs} loss {loss:.5f}"
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            context.log.info(message)
        else:
            context.log.debug(message)

    return log


def logged_model(context: dg.AssetExecutionContext, name: str, params: dict, label: str) -> Forecaster:
    """A fresh model from its hyperparameters; TensorFlow models report their epochs to the run log as `label`."""
    extra = {"on_epoch": _epoch_logger(context, label, params.get("epochs", 0))} if model_spec(name).uses_tensorflow else {}
    return make_model(name, **params, **extra)


def _config_class(spec: ModelSpec) -> type[dg.Config]:
    """Launchpad-editable hyperparameters, with the model's own defaults."""
    camel = "".join(part.title() for part in spec.name.split("_"))
    fields = {name: (type(value), value) for name, value in spec.defaults.items()}
    return create_model(f"{camel}Config", __base__=dg.Config, **fields)


def backtest_plan(history: pl.DataFrame) -> BacktestPlan:
    """The plan every backtest and the champion share: from the history's span and the models' needs."""
    return plan_backtest(history["ds"].min(), history["ds"].max(), required_history())


def _backtest_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    config_cls = _config_class(spec)

    @dg.asset(
        name=f"backtest_{spec.name}",
        group_name="models",
        kinds={"tensorflow", "mlflow"} if spec.uses_tensorflow else {"polars", "mlflow"},
        pool=TRAINING_POOL,
        deps=["model_features"],
        description=(
            f"{spec.description}\n\nRefit on the days before each rolling origin (up to 3, as many as the history "
            "allows), scored with the official metric on up to 60 days; 80% intervals calibrated on the errors; "
            f"one MLflow run tagged model={spec.name}. Skipped (with the reason) when the history is too short for it."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, config: config_cls, warehouse: WarehouseResource, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        params = config.model_dump()
        with warehouse.connect() as con:
            history, songs = load_history(con)
        plan = backtest_plan(history)
        context.log.info(f"{spec.name}: backtest plan: {plan.describe()}")
        plan_md = {"plan": plan.describe(), "origins": dg.MetadataValue.json([o.isoformat() for o in plan.origins]), "window_days": plan.window,
                   "train_days": plan.train_days, "history_days": plan.history_days}
        tracker = mlflow.tracker()
        tags = {"dagster_run_id": context.run_id}

        def on_origin(r: OriginResult) -> None:
            context.log.info(
                f"{spec.name} @ {r.origin}: f_norm {r.f_norm:.4f} (fit {r.fit_seconds:.1f}s, predict {r.predict_seconds:.1f}s)"
            )

        reason = spec.skip_reason(params, plan.train_days)
        result = None
        if reason is None:
            try:
                result = backtest(lambda: logged_model(context, spec.name, params, spec.name), history, songs,
                                  plan.origins, horizon=plan.window, on_origin=on_origin)
            except InsufficientHistory as exc:
                reason = str(exc)
        if result is None:
            skipped = Skipped(spec.name, params, reason)
            context.log.warning(f"{spec.name} skipped: {reason}")
            run_id = tracker.log_skipped(skipped, plan, tags)
            with warehouse.connect() as con:
                save_skipped(con, skipped, run_id, plan)
            return dg.MaterializeResult(metadata={
                "status": "skipped", "skip_reason": reason, **plan_md, "mlflow_run_id": run_id,
                "mlflow_run": dg.MetadataValue.url(mlflow.run_url(tracker.experiment_id, run_id)),
            })

        calibration = calibrate(log_errors(result), HORIZON)
        cover = coverage(result, HORIZON)
        for o in result.origins:  # every backtest forecast carries its interval too (MLflow CSV, plot)
            o.forecast = with_interval(o.forecast, calibration)
        with tempfile.TemporaryDirectory() as tmp:
            last = result.origins[-1]
            plot = plots.plot_forecast_vs_actual(
                history.filter(pl.col("ds") < last.origin), last.forecast, last.actual, path=Path(tmp) / f"{spec.name}.png"
            )
            run_id = tracker.log_backtest(
                result,
                tags=tags,
                data_range=(history["ds"].min(), plan.last_day),
                seed=int(params.get("seed", 0)),
                plot_png=plot,
                coverage=cover,
                plan=plan,
            )
            plot_md = png(plot, f"{spec.name} forecast vs actual")
        with warehouse.connect() as con:
            save_backtest(con, result, run_id, params, plan, calibration, cover)
        per_origin = {f"f_norm_{o.origin:%Y%m%d}": o.f_norm for o in result.origins}
        return dg.MaterializeResult(
            metadata={
                "status": "ran",
                "f_norm": result.mean_f_norm,
                **per_origin,
                "coverage_80": cover.overall,
                "coverage_method": cover.method,
                **plan_md,
                "fit_seconds": sum(o.fit_seconds for o in result.origins),
                "mlflow_run_id": run_id,
                "mlflow_run": dg.MetadataValue.url(mlflow.run_url(tracker.experiment_id, run_id)),
                "forecast_vs_actual": plot_md,
            }
        )

    return _asset


backtest_assets = [_backtest_asset(s) for s in SPECS]


@dg.asset(
    group_name="models",
    kinds={"duckdb", "mlflow"},
    deps=[a.key for a in backtest_assets],
    pool=TRAINING_POOL,
    description=(
        "The model with the best mean f_norm over the backtest origins, among the models that ran (skipped ones are "
        "listed with their reason). A baseline that wins is the champion."
    ),
)
def champion(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        plan = backtest_plan(load_history(con)[0])
        scores, runs = standings(con, MODEL_NAMES, plan)
    table = leaderboard(scores)
    best = table.row(0, named=True)
    context.log.info(f"champion: {best['model']} with mean f_norm {best['f_norm']:.4f} ({plan.describe()})")
    not_ranked = runs.filter((pl.col("status") != "ran") | ~pl.col("current"))
    for row in not_ranked.iter_rows(named=True):
        context.log.warning(f"{row['model']} not ranked: {row['reason'] or 'backtested on other origins (stale)'}")
    with tempfile.TemporaryDirectory() as tmp:
        chart = plots.plot_backtest_table(scores, Path(tmp) / "backtests.png")
        chart_md = png(chart, "mean f_norm per model")
    return dg.MaterializeResult(
        metadata={
            "champion": best["model"],
            "f_norm": best["f_norm"],
            "coverage_80": best["coverage"],
            "mlflow_run_id": best["mlflow_run_id"],
            "plan": plan.describe(),
            "leaderboard": preview(table.drop("params"), rows=len(table)),
            "skipped": preview(not_ranked.select("model", "status", "reason"), rows=len(not_ranked)),
            "scores": chart_md,
        }
    )
