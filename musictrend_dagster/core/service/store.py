"""Reads and writes of the warehouse tables the models use (DuckDB <-> polars via Arrow)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from datetime import date, timedelta
from typing import cast

import duckdb
import polars as pl

from musictrend_dagster.core.data.warehouse import VINTAGES_SQL
from musictrend_dagster.core.forecast.backtest import BacktestPlan, BacktestResult, Skipped
from musictrend_dagster.core.forecast.intervals import Coverage


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> pl.DataFrame:
    """A query's full result as a polars frame, through Arrow.

    `execute` (not `sql`) so it composes with earlier fetchone() calls on the connection;
    the extra Arrow copy DuckDB warns about is negligible at these table sizes.
    The warehouse runs with preserve_insertion_order = false (ingest memory), under which DuckDB 2.0
    hands an ORDER BY result to Arrow out of order; the setting is on for the query and then restored.
    """
    (preserve,) = cast(tuple, con.execute("SELECT current_setting('preserve_insertion_order')").fetchone())
    con.execute("SET preserve_insertion_order = true")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
            return cast(pl.DataFrame, pl.from_arrow(con.execute(sql, params).to_arrow_table()))
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if preserve else 'false'}")


def load_history(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The model input frame (dense, sorted) and the songs table."""
    history = query(con, "SELECT * FROM model_features ORDER BY artist_id, ds")
    songs = query(con, "SELECT * FROM stg_songs ORDER BY song_id")
    if history.is_empty():
        raise ValueError("model_features is empty: no actions were loaded")
    return history, songs


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All writes inside commit together or not at all (a killed run leaves the previous state)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _replace(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, where: str, params: list) -> None:
    """Replace the rows of `table` matching `where` by `frame` (inside the caller's transaction).

    A table left by an older version with other columns is recreated (its rows are derived:
    the run that writes it rewrites them all).
    """
    con.register("incoming_frame", frame.to_arrow())
    try:
        existing = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
        ]
        if existing and sorted(existing) != sorted(frame.columns):
            con.execute(f"DROP TABLE {table}")
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming_frame LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE {where}", params)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_frame")
    finally:
        con.unregister("incoming_frame")


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]
    )


def _save_run(
    con: duckdb.DuckDBPyConnection,
    model: str,
    plan: BacktestPlan,
    run_id: str,
    reason: str | None,
    coverage: Coverage | None,
) -> None:
    """The model's row in `backtest_runs`: ran or skipped (and why), on which plan, its interval coverage."""
    frame = pl.DataFrame(
        {
            "model": [model],
            "status": ["skipped" if reason else "ran"],
            "reason": [reason],
            "origins": [",".join(o.isoformat() for o in plan.origins)],
            "window": [plan.window],
            "train_days": [plan.train_days],
            "coverage": [coverage.overall if coverage else None],
            "coverage_method": [coverage.method if coverage else None],
            "mlflow_run_id": [run_id],
        },
        schema_overrides={"reason": pl.String, "coverage": pl.Float64, "coverage_method": pl.String},
    )
    _replace(con, "backtest_runs", frame, "model = ?", [model])


def save_backtest(
    con: duckdb.DuckDBPyConnection,
    result: BacktestResult,
    run_id: str,
    params: dict,
    plan: BacktestPlan,
    calibration: pl.DataFrame,
    coverage: Coverage,
    horizons: pl.DataFrame | None = None,
) -> None:
    """One row per model and origin in `backtest_scores` (with the full window's WAPE and MASE when
    `horizons` is given), per origin and window in `backtest_horizon_scores` (`horizons`: the rows of
    core.forecast.evaluation.horizon_scores), the interval calibration and the run row; the model's
    previous rows are replaced."""
    full = {}
    if horizons is not None:
        full = {
            r["origin"]: r for r in horizons.filter(pl.col("window") == pl.col("window").max()).iter_rows(named=True)
        }
    frame = pl.DataFrame(
        {
            "model": [result.model] * len(result.origins),
            "origin": [o.origin for o in result.origins],
            "f_norm": [o.f_norm for o in result.origins],
            "wape": [full[o.origin]["wape"] if full else None for o in result.origins],
            "mase": [full[o.origin]["mase"] if full else None for o in result.origins],
            "coverage": [coverage.per_origin[o.origin] for o in result.origins],
            "fit_seconds": [o.fit_seconds for o in result.origins],
            "predict_seconds": [o.predict_seconds for o in result.origins],
            "mlflow_run_id": [run_id] * len(result.origins),
            "params": [json.dumps(params, sort_keys=True, default=str)] * len(result.origins),
        },
        schema_overrides={"origin": pl.Date, "wape": pl.Float64, "mase": pl.Float64},
    )
    with _transaction(con):
        _replace(con, "backtest_scores", frame, "model = ?", [result.model])
        if horizons is not None:
            _replace(
                con,
                "backtest_horizon_scores",
                horizons.with_columns(model=pl.lit(result.model)).select("model", *horizons.columns),
                "model = ?",
                [result.model],
            )
        elif _table_exists(con, "backtest_horizon_scores"):
            con.execute("DELETE FROM backtest_horizon_scores WHERE model = ?", [result.model])
        _replace(
            con,
            "interval_calibration",
            calibration.with_columns(model=pl.lit(result.model)),
            "model = ?",
            [result.model],
        )
        _save_run(con, result.model, plan, run_id, None, coverage)


def save_skipped(con: duckdb.DuckDBPyConnection, skipped: Skipped, run_id: str, plan: BacktestPlan) -> None:
    """A skipped model: its run row says why, and no stale score or calibration of an earlier run stays."""
    with _transaction(con):
        for table in ("backtest_scores", "backtest_horizon_scores", "interval_calibration"):
            if _table_exists(con, table):
                con.execute(f"DELETE FROM {table} WHERE model = ?", [skipped.model])
        _save_run(con, skipped.model, plan, run_id, skipped.reason, None)


def load_runs(con: duckdb.DuckDBPyConnection, models: list[str]) -> pl.DataFrame:
    """Every given model's backtest run row (ran or skipped); each must have been backtested."""
    runs = (
        query(con, "SELECT * FROM backtest_runs WHERE list_contains(?, model) ORDER BY model", [models])
        if _table_exists(con, "backtest_runs")
        else pl.DataFrame(schema={"model": pl.String})
    )
    missing = sorted(set(models) - set(runs["model"].to_list()))
    if missing:
        raise ValueError(f"no backtest results for {', '.join(missing)}: materialise their backtest assets first")
    return runs


RANKING = {"f_norm": True, "wape": False}  # champion metrics, and whether higher is better


def leaderboard(scores: pl.DataFrame, metric: str = "f_norm") -> pl.DataFrame:
    """Mean f_norm (WAPE and MASE where stored, interval coverage) over origins per model, best first by
    `metric` (f_norm: highest first; wape: lowest first; ties by name)."""
    if metric not in RANKING:
        raise ValueError(f"champion metric must be one of {', '.join(RANKING)}, got {metric!r}")
    if metric not in scores.columns or scores[metric].null_count():
        raise ValueError(f"no {metric} stored for every backtest: materialise the backtests again to rank by it")
    means = [pl.col(c).mean() for c in ("f_norm", "wape", "mase") if c in scores.columns]
    return (
        scores.group_by("model")
        .agg(
            *means,
            coverage=pl.col("coverage").mean(),
            origins=pl.len(),
            fit_seconds=pl.col("fit_seconds").sum(),
            predict_seconds=pl.col("predict_seconds").sum(),
            mlflow_run_id=pl.col("mlflow_run_id").first(),
            params=pl.col("params").first(),
        )
        .sort([metric, "model"], descending=[RANKING[metric], False])
    )


def horizon_standings(con: duckdb.DuckDBPyConnection, models: list[str]) -> pl.DataFrame:
    """Per-horizon backtest scores (model, origin, window, f_norm, wape, mase, coverage) of the given models."""
    if not _table_exists(con, "backtest_horizon_scores"):
        return pl.DataFrame(schema={"model": pl.String, "origin": pl.Date, "window": pl.Int32})
    return query(
        con,
        'SELECT * FROM backtest_horizon_scores WHERE list_contains(?, model) ORDER BY model, origin, "window"',
        [models],
    )


def standings(
    con: duckdb.DuckDBPyConnection, models: list[str], plan: BacktestPlan
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per model and origin scores of the models that ran on `plan`'s origins, every model's run row).

    A model whose stored backtest was made on other origins (an earlier, shorter log) is left
    out of the leaderboard: scores on different windows do not compare.
    """
    runs = load_runs(con, models).with_columns(
        current=pl.col("origins") == ",".join(o.isoformat() for o in plan.origins)
    )
    ran = runs.filter((pl.col("status") == "ran") & pl.col("current"))["model"].to_list()
    if not ran:
        raise ValueError(f"no model has a backtest on the current plan ({plan.describe()}): materialise the backtests")
    scores = query(con, "SELECT * FROM backtest_scores WHERE list_contains(?, model) ORDER BY model, origin", [ran])
    return scores, runs


def load_calibration(con: duckdb.DuckDBPyConnection, model: str) -> pl.DataFrame:
    calibration = query(con, "SELECT day, lo, hi FROM interval_calibration WHERE model = ? ORDER BY day", [model])
    if calibration.is_empty():
        raise ValueError(f"no interval calibration for {model}: materialise backtest/{model} first")
    return calibration


FORECAST_COLUMNS = ["artist_id", "ds", "plays", "plays_lo", "plays_hi"]


def save_forecast(
    con: duckdb.DuckDBPyConnection,
    forecast: pl.DataFrame,
    model: str,
    model_version: int | None = None,
    data_through: date | None = None,
) -> None:
    """One vintage into `forecast_vintages` (vintage = the forecast's first day), replacing that vintage's
    rows atomically: a rerun on the same data replaces its vintage, never duplicates it. plays_lo and
    plays_hi are the 80% interval (null only for a forecast written without one); data_through is the
    last day of data the vintage read (default: the day before it, what the service reads)."""
    frame = forecast.with_columns(
        pl.lit(None, pl.Float64).alias(c) for c in ("plays_lo", "plays_hi") if c not in forecast.columns
    ).select(
        pl.col("ds").min().alias("vintage"),
        *FORECAST_COLUMNS,
        model=pl.lit(model),
        model_version=pl.lit(model_version, pl.Int32),
        data_through=pl.lit(data_through, pl.Date) if data_through else pl.col("ds").min() - timedelta(days=1),
    )
    with _transaction(con):
        if cast(
            tuple,
            con.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'forecast' AND table_type = 'BASE TABLE'"
            ).fetchone(),
        )[0]:
            con.execute("DROP TABLE forecast")  # the one-forecast table of earlier releases
        con.execute(VINTAGES_SQL)
        con.register("incoming_frame", frame.to_arrow())
        try:
            con.execute("DELETE FROM forecast_vintages WHERE vintage = (SELECT min(vintage) FROM incoming_frame)")
            con.execute("INSERT INTO forecast_vintages BY NAME SELECT * FROM incoming_frame")
        finally:
            con.unregister("incoming_frame")


def load_forecast(con: duckdb.DuckDBPyConnection, vintage: date | None = None) -> pl.DataFrame:
    """One vintage's rows (default: the newest vintage)."""
    columns = f"{', '.join(FORECAST_COLUMNS)}, model, model_version, vintage"
    if vintage is None:
        return query(con, f"SELECT {columns} FROM forecast ORDER BY artist_id, ds")
    return query(
        con, f"SELECT {columns} FROM forecast_vintages WHERE vintage = $v ORDER BY artist_id, ds", {"v": vintage}
    )


def load_vintages(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every vintage's rows (empty before the first forecast)."""
    if not _table_exists(con, "forecast_vintages"):
        return pl.DataFrame(
            schema={
                "vintage": pl.Date,
                "artist_id": pl.String,
                "ds": pl.Date,
                "plays": pl.Float64,
                "plays_lo": pl.Float64,
                "plays_hi": pl.Float64,
                "model": pl.String,
                "model_version": pl.Int32,
                "data_through": pl.Date,
            }
        )
    return query(con, "SELECT * FROM forecast_vintages ORDER BY vintage, artist_id, ds")


def load_forecasts(con: duckdb.DuckDBPyConnection, vintage: date | None = None) -> pl.DataFrame:
    """One vintage (default: the newest, the `forecasts` view) in the long format of output/forecasts.csv."""
    if not _table_exists(con, "forecast_vintages"):
        raise ValueError("no forecast yet: make one with `musictrend run`")
    con.execute(VINTAGES_SQL)  # a warehouse of an earlier release gains data_through and the view
    if vintage is None:
        return query(con, "SELECT * FROM forecasts ORDER BY unique_id, ds")
    return query(
        con,
        "SELECT artist_id AS unique_id, ds, plays AS forecast, plays_lo AS lo80, plays_hi AS hi80, model, "
        "model_version, data_through FROM forecast_vintages WHERE vintage = $v ORDER BY unique_id, ds",
        {"v": vintage},
    )


def save_monitoring(
    con: duckdb.DuckDBPyConnection,
    vintages: pl.DataFrame,
    artists: pl.DataFrame,
    live: pl.DataFrame | None,
    whole: bool = True,
) -> None:
    """Monitoring's tables, in one transaction: `forecast_monitoring` (one row per scored vintage) and
    `forecast_monitoring_artists` (per vintage and artist) replaced whole unless `whole` is false (a rerun
    as of an older day must not replace the newer scores); `forecast_monitoring_live` (the champion's live
    score, one row per newest actual day) replaces its day's row."""
    with _transaction(con):
        if whole:
            _replace(con, "forecast_monitoring", vintages, "TRUE", [])
            _replace(con, "forecast_monitoring_artists", artists, "TRUE", [])
        if live is not None:
            _replace(con, "forecast_monitoring_live", live, "as_of = ?", [live["as_of"][0]])


def load_live_history(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The champion's live score by newest actual day (empty before monitoring ran)."""
    if not _table_exists(con, "forecast_monitoring_live"):
        return pl.DataFrame(schema={"as_of": pl.Date, "f_norm": pl.Float64})
    return query(con, "SELECT * FROM forecast_monitoring_live ORDER BY as_of")
