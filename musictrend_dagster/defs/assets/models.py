"""Models group: one backtest asset per forecaster (rolling origins planned from the history,
official score, WAPE, MASE and 80% intervals, each also per window of the first 7/14/28/60 days,
an MLflow run each) and the champion, picked by mean f_norm (or WAPE: MUSICTREND_CHAMPION_METRIC)
among the models that ran, whatever kind of model wins: a network, a baseline or a statsforecast peer."""

import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl
from pydantic import Field, create_model

from musictrend_dagster.core.forecast.backtest import (
    OriginResult,
    Skipped,
    backtest,
)
from musictrend_dagster.core.forecast.evaluation import flat_metrics, horizon_scores, window_leaders
from musictrend_dagster.core.forecast.intervals import calibrate, coverage, log_errors, with_interval
from musictrend_dagster.core.forecast.models.base import Forecaster, InsufficientHistory
from musictrend_dagster.core.forecast.models.registry import ModelSpec, backtest_plan, make_model
from musictrend_dagster.core.forecast.models.registry import spec as model_spec
from musictrend_dagster.core.service import plots
from musictrend_dagster.core.service.store import (
    horizon_standings,
    leaderboard,
    load_history,
    save_backtest,
    save_skipped,
    standings,
)
from musictrend_dagster.core.settings import champion_metric
from musictrend_dagster.defs.metadata import png, preview, score, seconds
from musictrend_dagster.defs.resources import ForecastSettingsResource, MlflowResource, WarehouseResource
from musictrend_dagster.instance import TRAINING_POOL

# Backtest assets are keyed backtest/<model>: the graph shows the model's name, the key says what it is.
BACKTEST_PREFIX = "backtest"


def _epoch_logger(context: dg.AssetExecutionContext, label: str, epochs: int) -> Callable[[int, float], None]:
    """Every epoch's loss in the run log (debug), every tenth and the last also at info level."""

    def log(epoch: int, loss: float) -> None:
        message = f"{label}: epoch {epoch + 1}/{epochs} loss {loss:.5f}"
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            context.log.info(message)
        else:
            context.log.debug(message)

    return log


def logged_model(context: dg.AssetExecutionContext, name: str, params: dict, label: str, horizon: int) -> Forecaster:
    """A fresh model for `horizon` days from its hyperparameters; TensorFlow models report their epochs to
    the run log as `label`."""
    extra = (
        {"on_epoch": _epoch_logger(context, label, params.get("epochs", 0))} if model_spec(name).uses_tensorflow else {}
    )
    return make_model(name, horizon=horizon, **params, **extra)


# One line per hyperparameter, shown next to it in the launchpad.
HYPERPARAMETER_HELP = {
    "window": "Days before the origin the model reads: the median's or constant's window, the network's input length.",
    "window_short": "Input days of the short-window members.",
    "window_long": "Input days of the long-window members (the history the model needs is this + 14 days).",
    "seeds": "Members per input window (different seeds); all members' curves are averaged.",
    "members": "Networks with different seeds whose curves are averaged.",
    "units": "Hidden units of the network.",
    "units1": "Units of the first LSTM layer.",
    "units2": "Units of the second LSTM layer.",
    "epochs": "Passes over the training samples.",
    "train_series": "At most this many artists (a stratified sample by volume and volatility) train the network; "
    "every artist is forecast.",
    "batch_size": "Samples per gradient step.",
    "learning_rate": "Adam learning rate.",
    "l2": "L2 penalty on the weights.",
    "recency_days": "Age (days) over which a training origin's weight decays by e: recent origins count more.",
    "level_shrink": "Share of the way (in log, 0-1) the level moves from c*(last 7 days) toward c*(last 28).",
    "seed": "Random seed of weights and shuffling: same data and seed, same forecast.",
    "scaling": "'window': each input window on its own level; 'global': one standardisation of all (2016).",
    "feedback": "What the recursion feeds back: 'vector', the network's [plays, mean, variance] (2016); 'plays'.",
    "recursion": "'state': read the window once, then one LSTM step per day; 'window': re-read it daily (2016).",
    "rollout": "Days each training sample is unrolled with the network fed its own outputs (1 = next day only).",
    "shrink": "Scale the forecast to the metric-optimal constant of the last `window` days (c*/geometric mean).",
    "literal_2016": "Use the first implementation's choices (global scaling, window recursion, no shrink, 1 member).",
    "season_length": "Days in one season of the statistical model (7: the weekly cycle).",
    "guard_days": "Last days of history whose log1p range bounds a log forecast (guards against a diverging fit).",
    "n_jobs": "Processes StatsForecast fits the artists' series in (1: one core; -1: all cores).",
    "windows": "Past seasons averaged per weekday by the seasonal window average.",
}


def _config_class(spec: ModelSpec) -> type[dg.Config]:
    """Launchpad-editable hyperparameters (only those: paths and stores are the resources'), with the
    model's own defaults and a one-line description each."""
    camel = "".join(part.title() for part in spec.name.split("_"))
    fields: dict[str, Any] = {  # Any: mypy would match a narrower value type against the named keywords too
        name: (type(value), Field(default=value, description=HYPERPARAMETER_HELP[name]))
        for name, value in spec.defaults.items()
    }
    return create_model(
        f"{camel}Hyperparameters", __base__=dg.Config, __doc__=f"Hyperparameters of {spec.name}.", **fields
    )


def _backtest_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    config_cls = _config_class(spec)

    @dg.asset(
        name=spec.name,
        key_prefix=BACKTEST_PREFIX,
        group_name="models",
        kinds={"tensorflow", "mlflow"} if spec.uses_tensorflow else {"polars", "mlflow"},
        pool=TRAINING_POOL,
        deps=["model_features"],
        description=(
            f"{spec.description}\n\nRefit on the days before each rolling origin (up to 3, as many as the history "
            "allows), scored with the official metric on up to the horizon's days; 80% intervals calibrated on the "
            "errors by day ahead; "
            f"one MLflow run tagged model={spec.name}. Skipped (with the reason) when the history is too short for it."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: config_cls,  # type: ignore[valid-type]  # a class built at run time: Dagster reads it from here
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
        forecasting: ForecastSettingsResource,
    ) -> dg.MaterializeResult:
        params = cast(dg.Config, config).model_dump()
        started = time.time()
        horizon = forecasting.horizon
        with warehouse.connect() as con:
            history, songs = load_history(con)
        plan = backtest_plan(history, horizon, forecasting.max_origins)
        context.log.info(f"{spec.name}: backtest plan: {plan.describe()}")
        spark = inference_session(warehouse)
        # A network's origins in processes of their own (a baseline's cost less than a process start; a
        # statsforecast peer has its own n_jobs); on Spark the cluster does the forecasting instead.
        workers = min(forecasting.workers, len(plan.origins)) if spec.uses_tensorflow and spark is None else 1
        plan_md: dict[str, Any] = {
            "plan": plan.describe(),
            "origins": dg.MetadataValue.json([o.isoformat() for o in plan.origins]),
            "window_days": plan.window,
            "train_days": plan.train_days,
            "history_days": plan.history_days,
            "horizon": horizon,
            "origin_processes": workers,
            "forecast_on": "spark" if spark is not None else "this process",
        }
        tracker = mlflow.tracker()
        tags = {"dagster_run_id": context.run_id, "dagster_asset": context.asset_key.to_user_string()}

        def on_origin(r: OriginResult) -> None:
            context.log.info(
                f"{spec.name} @ {r.origin}: f_norm {r.f_norm:.4f} "
                f"(fit {r.fit_seconds:.1f}s, predict {r.predict_seconds:.1f}s)"
            )

        reason = spec.skip_reason(params, plan.train_days)
        result = None
        if reason is None:
            origins = iter(plan.origins)  # backtest makes one model per origin, oldest first: name it in the log
            factory: Callable[[], Forecaster] = (
                partial(make_model, spec.name, horizon=horizon, **params)  # pickles; epoch losses go to MLflow
                if workers > 1
                else lambda: logged_model(context, spec.name, params, f"{spec.name} @ {next(origins)}", horizon)
            )
            if workers > 1:
                context.log.info(f"{spec.name}: {len(plan.origins)} origins in {workers} processes")
            try:
                result = backtest(
                    factory,
                    history,
                    songs,
                    plan.origins,
                    horizon=plan.window,
                    on_origin=on_origin,
                    workers=workers,
                    spark=spark,
                )
            except InsufficientHistory as exc:
                reason = str(exc)
        if result is None:
            skipped = Skipped(spec.name, params, cast(str, reason))  # no result: skipped, with a reason
            context.log.warning(f"{spec.name} skipped: {reason}")
            run_id = tracker.log_skipped(skipped, plan, tags, started=started)
            with warehouse.connect() as con:
                save_skipped(con, skipped, run_id, plan)
            return dg.MaterializeResult(
                metadata={
                    "status": "skipped",
                    "skip_reason": reason,
                    **plan_md,
                    "mlflow_run_id": run_id,
                    "mlflow_run": dg.MetadataValue.url(mlflow.run_url(tracker.experiment_id, run_id)),
                }
            )

        calibration = calibrate(log_errors(result), horizon)
        cover = coverage(result, horizon)
        horizons = horizon_scores(result, history)  # before the forecasts gain interval columns
        for o in result.origins:  # every backtest forecast carries its interval too (MLflow CSV, plot)
            o.forecast = with_interval(o.forecast, calibration)
        with tempfile.TemporaryDirectory() as tmp:
            last = result.origins[-1]
            plot = plots.plot_forecast_vs_actual(
                history.filter(pl.col("ds") < last.origin),
                last.forecast,
                last.actual,
                path=Path(tmp) / "forecast_vs_actual.png",
            )
            run_id = tracker.log_backtest(
                result,
                tags=tags,
                data_range=(history["ds"].min(), plan.last_day),
                seed=int(params.get("seed", 0)),
                plot_png=plot,
                coverage=cover,
                plan=plan,
                started=started,
                horizons=horizons,
            )
            plot_md = png(plot, f"{spec.name} forecast vs actual")
        with warehouse.connect() as con:
            save_backtest(con, result, run_id, params, plan, calibration, cover, horizons)
        per_origin = {f"f_norm_{o.origin:%Y%m%d}": score(o.f_norm) for o in result.origins}
        full = horizons.filter(pl.col("window") == pl.col("window").max())
        return dg.MaterializeResult(
            metadata={
                "status": "ran",
                "f_norm": score(result.mean_f_norm),
                "wape": score(cast(float, full["wape"].mean())),
                "mase": score(cast(float, full["mase"].mean())),
                **per_origin,
                "coverage_80": score(cover.overall),
                **{k: score(v) for k, v in flat_metrics(horizons).items()},
                "horizons": preview(horizons, rows=horizons.height),
                "coverage_method": cover.method,
                **plan_md,
                "fit_seconds": seconds(sum(o.fit_seconds for o in result.origins)),
                "mlflow_run_id": run_id,
                "mlflow_run": dg.MetadataValue.url(mlflow.run_url(tracker.experiment_id, run_id)),
                "forecast_vs_actual": plot_md,
            }
        )

    return _asset


def inference_session(warehouse: WarehouseResource) -> Any:
    """The warehouse's Spark session when its engine is spark (every series is then forecast on the
    cluster: core/forecast/distributed.py), else None (this process forecasts)."""
    if warehouse.engine_name != "spark":
        return None
    return cast(Any, warehouse.data_engine()).spark


def leaderboard_table(
    scores: pl.DataFrame, horizons: pl.DataFrame | None = None, metric: str = "f_norm"
) -> pl.DataFrame:
    """The champion page's leaderboard, best first by `metric`: mean f_norm, the lead over the model ranked next
    on that metric (the champion's is its margin over the runner-up), each origin's f_norm, fit seconds per
    origin, coverage; then mean WAPE and MASE where stored, and with `horizons` (per origin and window) each
    metric's mean per window (f_norm_h7, wape_h7, ..., coverage_h60). The columns a person compares come
    first: the asset page shows about six before it scrolls."""
    board = leaderboard(scores, metric)
    per_origin = scores.with_columns(pl.col("origin").cast(pl.String)).pivot(
        "origin", index="model", values="f_norm", sort_columns=True
    )
    lead = pl.col(metric) - pl.col(metric).shift(-1)
    # the ranking metric right after the model; WAPE and MASE (where stored) after the f_norm columns
    first = [metric] if metric == "f_norm" else [metric, "f_norm"]
    extra = [c for c in ("wape", "mase") if c in board.columns and c not in first]
    table = (
        board.join(per_origin, on="model", how="left", maintain_order="left")
        .with_columns(
            ahead_of_next=lead if metric == "f_norm" else -lead,
            fit_s_per_origin=(pl.col("fit_seconds") / pl.col("origins")).round(2),
        )
        .select("model", *first, "ahead_of_next", *per_origin.columns[1:], "fit_s_per_origin", "coverage", *extra)
        .rename({"coverage": "coverage_80"})
    )
    if horizons is None or horizons.is_empty():
        return table
    wide = pl.DataFrame([{"model": model, **flat_metrics(rows)} for (model,), rows in horizons.group_by("model")])
    return table.join(wide, on="model", how="left", maintain_order="left")


def model_assets(specs: list[ModelSpec]) -> list[dg.AssetsDefinition]:
    """The models group for these candidates (registry.candidates): a backtest asset each, and the champion
    chosen among them."""
    backtests = [_backtest_asset(s) for s in specs]
    names = [s.name for s in specs]

    @dg.asset(
        group_name="models",
        kinds={"duckdb", "mlflow"},
        deps=[a.key for a in backtests],
        pool=TRAINING_POOL,
        description=(
            "The model with the best mean score over the backtest origins among the candidates that ran (skipped "
            "ones are listed with their reason): f_norm, or WAPE with MUSICTREND_CHAMPION_METRIC=wape. A baseline "
            "or a statsforecast peer that wins is the champion. Every model's f_norm, WAPE, MASE and coverage per "
            "window (first 7, 14, 28, 60 days) are in the leaderboard."
        ),
    )
    def champion(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
        forecasting: ForecastSettingsResource,
    ) -> dg.MaterializeResult:
        return _choose(context, names, warehouse, mlflow, forecasting)

    return [*backtests, champion]


def _choose(
    context: dg.AssetExecutionContext,
    names: list[str],
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
    forecasting: ForecastSettingsResource,
) -> dg.MaterializeResult:
    """The champion among the models `names`: the leaderboard, the margin, who is not ranked and why."""
    metric = champion_metric()
    with warehouse.connect() as con:
        plan = backtest_plan(load_history(con)[0], forecasting.horizon, forecasting.max_origins)
        scores, runs = standings(con, names, plan)
        horizons = horizon_standings(con, scores["model"].unique().to_list())
    table = leaderboard(scores, metric)
    best = table.row(0, named=True)
    runner_up = table.row(1, named=True) if table.height > 1 else None
    margin = abs(best[metric] - runner_up[metric]) if runner_up else 0.0
    context.log.info(
        f"champion by {metric}: {best['model']} with mean {metric} {best[metric]:.4f}"
        + (f", {margin:.4f} ahead of {runner_up['model']}" if runner_up else "")
        + f" ({plan.describe()})"
    )
    not_ranked = runs.filter((pl.col("status") != "ran") | ~pl.col("current"))
    for row in not_ranked.iter_rows(named=True):
        context.log.warning(f"{row['model']} not ranked: {row['reason'] or 'backtested on other origins (stale)'}")
    with tempfile.TemporaryDirectory() as tmp:
        chart = plots.plot_backtest_table(scores, Path(tmp) / "backtests.png")
        chart_md = png(chart, "mean f_norm per model")
    experiment_id = mlflow.tracker().experiment_id
    ahead = {"runner_up": runner_up["model"], "margin_over_runner_up": score(margin)} if runner_up else {}
    own = horizons.filter(pl.col("model") == best["model"])
    per_window = {k: score(v) for k, v in flat_metrics(own).items()} if own.height else {}
    leaders = window_leaders(horizons, best["model"], metric) if own.height else None
    if leaders is not None:
        for row in leaders.filter(pl.col("champion_lead") < 0).iter_rows(named=True):
            context.log.warning(
                f"over the first {row['window']} days {row['best']} beats the champion on {metric} "
                f"({row['best_score']:.4f} vs {row['champion']:.4f})"
            )
    return dg.MaterializeResult(
        metadata={
            "champion": best["model"],
            "champion_metric": metric,
            "f_norm": score(best["f_norm"]),
            **({m: score(best[m]) for m in ("wape", "mase") if best.get(m) is not None}),
            **ahead,
            "coverage_80": score(best["coverage"]),
            **per_window,
            **({"best_per_window": preview(leaders, rows=leaders.height)} if leaders is not None else {}),
            "mlflow_run_id": best["mlflow_run_id"],
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(experiment_id, best["mlflow_run_id"])),
            "mlflow_runs": dg.MetadataValue.url(mlflow.runs_url(experiment_id)),
            "plan": plan.describe(),
            "leaderboard": preview(leaderboard_table(scores, horizons, metric), rows=len(table)),
            "scores": chart_md,
            **(
                {"skipped": preview(not_ranked.select("model", "status", "reason"), rows=len(not_ranked))}
                if not_ranked.height
                else {}
            ),
        }
    )
