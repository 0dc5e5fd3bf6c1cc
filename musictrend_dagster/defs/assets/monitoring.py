"""Monitoring group: every forecast vintage scored against the days that have since happened, and the
champion's live score against its backtest (a WARN check that triggers retraining). Freshness is the
forecast asset's FreshnessPolicy."""

import tempfile
from datetime import date
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl

from musictrend_dagster.core.service import plots
from musictrend_dagster.core.service.monitoring import (
    TOLERANCE,
    LiveScore,
    live_score,
    score_vintages,
    selections_frame,
)
from musictrend_dagster.core.service.store import load_live_history, load_vintages, query, save_monitoring
from musictrend_dagster.defs.metadata import png, preview
from musictrend_dagster.defs.partitions import VINTAGES, vintage_of
from musictrend_dagster.defs.resources import MlflowResource, WarehouseResource
from musictrend_dagster.instance import DUCKDB_POOL

LIVE_CHECK = "live_score_vs_backtest"


def _champion_live(vintages: pl.DataFrame, actuals: pl.DataFrame, selections: pl.DataFrame) -> LiveScore | None:
    """The live score of the version that made the newest vintage (None if no registered version made it)."""
    newest = vintages.filter(pl.col("vintage") == pl.col("vintage").max())
    version = newest["model_version"][0] if newest.height else None
    selected = selections.filter(pl.col("model_version") == version)
    if selected.is_empty():
        return None
    row = selected.row(0, named=True)
    return live_score(
        vintages, actuals, row["model_version"], row["model"], row["backtest_f_norm"], row["data_through"]
    )


def _live_row(live: LiveScore) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "as_of": live.as_of,
                "model": live.model,
                "model_version": live.model_version,
                "f_norm": live.f_norm,
                "scored_days": live.scored_days,
                "first_day": live.first_day,
                "last_day": live.last_day,
                "forecasts": live.forecasts,
                "backtest_f_norm": live.backtest_f_norm,
                "judged": live.judged,
                "degraded": live.degraded,
            }
        ],
        schema_overrides={"f_norm": pl.Float64, "first_day": pl.Date, "last_day": pl.Date},
    )


def _log_to_mlflow(mlflow: MlflowResource, scores: pl.DataFrame, live: LiveScore, selections: pl.DataFrame) -> None:
    """Each registered version whose vintages gained a scored day, and the champion's live score."""
    from musictrend_dagster.core.service.tracking import log_live_scores  # MLflow: not at code-location load

    tracker = mlflow.tracker()
    trained = dict(zip(selections["model_version"].to_list(), selections["data_through"].to_list(), strict=False))
    models = dict(zip(selections["model_version"].to_list(), selections["model"].to_list(), strict=False))
    touched = set(scores.filter(pl.col("last_day") == live.as_of)["model_version"].drop_nulls().to_list())
    for version in sorted((touched | {live.model_version}) & set(models)):
        summary = None
        if version == live.model_version:
            summary = {
                "f_norm": live.f_norm,
                "scored_days": live.scored_days,
                "degraded": live.degraded,
                "as_of": live.as_of,
                "step": (live.as_of - trained[version]).days,
            }
        log_live_scores(tracker, version, models[version], scores.filter(pl.col("model_version") == version), summary)


@dg.asset(
    group_name="monitoring",
    kinds={"duckdb", "mlflow", "polars"},
    deps=["forecast"],
    pool=DUCKDB_POOL,
    partitions_def=VINTAGES,
    check_specs=[
        dg.AssetCheckSpec(
            LIVE_CHECK,
            asset="forecast_monitoring",
            description=f"WARN when the champion's live f_norm over its last 14 scored days is more than {TOLERANCE} "
            "below its backtest f_norm (judged from 7 scored days); the warning triggers retraining.",
        )
    ],
    description=(
        "Every forecast vintage scored with the official metric on the days that have since become actual: "
        "`forecast_monitoring` (vintage, model_version, days_scored, f_norm), `forecast_monitoring_artists` "
        "(per vintage and artist: sigma, phi, loss, bias) and `forecast_monitoring_live` (the champion's live "
        "score by day), each vintage judged against the registered version that made it (the MLflow registry's "
        "version tags: backtest score, trained through); logged to MLflow against that version. Partition = the "
        "vintage day: monitoring as that day's run saw it (vintages up to it, actuals before it), so a backfill "
        "scores as the daily runs did; an older partition rerun rewrites its own live row only."
    ),
)
def forecast_monitoring(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowResource):
    from musictrend_dagster.core.service.tracking import registered_versions  # MLflow: not at code-location load

    day = vintage_of(context)
    # the registry's versions are the champion selections; those trained before the day are the ones it saw
    selections = selections_frame(registered_versions(mlflow.tracking_uri)).filter(pl.col("data_through") < day)
    with warehouse.connect() as con:
        vintages = load_vintages(con).filter(pl.col("vintage") <= day)
        actuals = query(con, "SELECT artist_id, ds, plays FROM artist_daily WHERE ds < $d", {"d": day})
        newest_as_of = cast(date | None, load_live_history(con)["as_of"].max())
    scores, artists = score_vintages(vintages, actuals)
    scores = (
        scores.join(
            selections.select("model_version", "backtest_f_norm", trained_through="data_through"),
            on="model_version",
            how="left",
        )
        .with_columns(hindcast=pl.col("vintage") <= pl.col("trained_through"))
        .drop("trained_through")
    )
    live = _champion_live(vintages, actuals, selections)
    latest = bool(newest_as_of is None or newest_as_of < day)  # not an older partition rerun
    with warehouse.connect() as con:
        save_monitoring(con, scores, artists, _live_row(live) if live else None, whole=latest)
        history = load_live_history(con).filter(pl.col("as_of") < day)

    metadata: dict = {
        "vintages_scored": scores.height,
        "newest_actual_day": str(actuals["ds"].max()),
        "dagster/row_count": scores.height,
    }
    check = dg.AssetCheckResult(
        check_name=LIVE_CHECK,
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"verdict": "no registered champion version made the newest vintage"},
    )
    if live is not None:
        verdict = live.verdict()
        (context.log.warning if live.degraded else context.log.info)(f"live score: {verdict}")
        facts: dict[str, Any] = {
            "verdict": verdict,
            "model_version": live.model_version,
            "model": live.model,
            "backtest_f_norm": live.backtest_f_norm,
            "scored_days": live.scored_days,
            "judged": live.judged,
            "degraded": live.degraded,
            "as_of": str(live.as_of),
        }
        if live.f_norm is not None:
            facts["live_f_norm"] = live.f_norm
        check = dg.AssetCheckResult(
            check_name=LIVE_CHECK, passed=not live.degraded, severity=dg.AssetCheckSeverity.WARN, metadata=facts
        )
        metadata |= facts
        _log_to_mlflow(mlflow, scores, live, selections)
    with tempfile.TemporaryDirectory() as tmp:
        if scores.height or history.height:
            chart = plots.plot_monitoring(scores, history, selections, TOLERANCE, path=Path(tmp) / "monitoring.png")
            metadata["live_scores"] = png(chart, "live f_norm by vintage next to the backtest")
        if live is not None and live.artists.height:
            worst = plots.plot_worst_artists(live.artists, path=Path(tmp) / "worst.png")
            metadata["worst_artists"] = png(worst, "worst artists")
            metadata["worst_artists_table"] = preview(live.artists, rows=10)
    metadata["vintages"] = preview(scores.sort("vintage", descending=True), rows=15)
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
