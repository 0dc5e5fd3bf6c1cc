"""Models group: one backtest asset per forecaster (3 rolling origins, official score, an MLflow
run each) and the champion, picked by mean f_norm whatever kind of model wins."""

import tempfile
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import create_model

from musictrend_dagster.core import plots
from musictrend_dagster.core.backtest import OriginResult, backtest, rolling_origins
from musictrend_dagster.core.data import leaderboard, load_history, load_scores, save_backtest
from musictrend_dagster.core.models.base import Forecaster
from musictrend_dagster.core.models.registry import MODEL_NAMES, SPECS, ModelSpec, make_model
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


def _backtest_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    config_cls = _config_class(spec)

    @dg.asset(
        name=f"backtest_{spec.name}",
        group_name="models",
        kinds={"tensorflow", "mlflow"} if spec.uses_tensorflow else {"polars", "mlflow"},
        pool=TRAINING_POOL,
        deps=["model_features"],
        description=f"{spec.description}\n\nRefit on the days before each of 3 rolling origins, scored on the next 60 days with the official metric; one MLflow run tagged model={spec.name}.",
    )
    def _asset(
        context: dg.AssetExecutionContext, config: config_cls, warehouse: WarehouseResource, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        params = config.model_dump()
        with warehouse.connect() as con:
            history, songs = load_history(con)
        last_day = history["ds"].max()
        origins = rolling_origins(last_day)

        def on_origin(r: OriginResult) -> None:
            context.log.info(
                f"{spec.name} @ {r.origin}: f_norm {r.f_norm:.4f} (fit {r.fit_seconds:.1f}s, predict {r.predict_seconds:.1f}s)"
            )

        result = backtest(
            lambda: logged_model(context, spec.name, params, spec.name), history, songs, origins, on_origin=on_origin
        )
        with tempfile.TemporaryDirectory() as tmp:
            last = result.origins[-1]
            window = history.filter(pl.col("ds") >= last.origin)
            plot = plots.plot_forecast_vs_actual(history.filter(pl.col("ds") < last.origin), last.forecast, window, path=Path(tmp) / f"{spec.name}.png")
            tracker = mlflow.tracker()
            run_id = tracker.log_backtest(
                result,
                tags={"dagster_run_id": context.run_id},
                data_range=(history["ds"].min(), last_day),
                seed=int(params.get("seed", 0)),
                plot_png=plot,
            )
            plot_md = png(plot, f"{spec.name} forecast vs actual")
        with warehouse.connect() as con:
            save_backtest(con, result, run_id, params)
        per_origin = {f"f_norm_{o.origin:%Y%m%d}": o.f_norm for o in result.origins}
        return dg.MaterializeResult(
            metadata={
                "f_norm": result.mean_f_norm,
                **per_origin,
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
    description="The model with the best mean f_norm over the backtest origins. A baseline that wins is the champion.",
)
def champion(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        scores = load_scores(con, MODEL_NAMES)
    table = leaderboard(scores)
    best = table.row(0, named=True)
    context.log.info(f"champion: {best['model']} with mean f_norm {best['f_norm']:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        chart = plots.plot_backtest_table(scores, Path(tmp) / "backtests.png")
        chart_md = png(chart, "mean f_norm per model")
    return dg.MaterializeResult(
        metadata={
            "champion": best["model"],
            "f_norm": best["f_norm"],
            "mlflow_run_id": best["mlflow_run_id"],
            "leaderboard": preview(table.drop("params"), rows=len(table)),
            "scores": chart_md,
        }
    )
