"""Reads and writes of the warehouse tables the models use (DuckDB <-> polars via Arrow)."""
from __future__ import annotations

import json
import warnings

import duckdb
import polars as pl

from musictrend_dagster.core.backtest import BacktestResult


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> pl.DataFrame:
    """A query's full result as a polars frame, through Arrow.

    `execute` (not `sql`) so it composes with earlier fetchone() calls on the connection;
    the extra Arrow copy DuckDB warns about is negligible at these table sizes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
        return pl.from_arrow(con.execute(sql, params).to_arrow_table())


def load_history(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The model input frame (dense, sorted) and the songs table."""
    history = query(con, "SELECT * FROM model_features ORDER BY artist_id, ds")
    songs = query(con, "SELECT * FROM stg_songs ORDER BY song_id")
    if history.is_empty():
        raise ValueError("model_features is empty: no actions were loaded")
    return history, songs


def _write(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, where: str, params: list) -> None:
    """Replace the rows of `table` matching `where` by `frame`, atomically."""
    con.register("incoming_frame", frame.to_arrow())
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming_frame LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE {where}", params)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_frame")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("incoming_frame")


def save_backtest(con: duckdb.DuckDBPyConnection, result: BacktestResult, run_id: str, params: dict) -> None:
    """One row per model and origin in `backtest_scores`; a model's previous rows are replaced."""
    frame = pl.DataFrame(
        {
            "model": [result.model] * len(result.origins),
            "origin": [o.origin for o in result.origins],
            "f_norm": [o.f_norm for o in result.origins],
            "fit_seconds": [o.fit_seconds for o in result.origins],
            "predict_seconds": [o.predict_seconds for o in result.origins],
            "mlflow_run_id": [run_id] * len(result.origins),
            "params": [json.dumps(params, sort_keys=True, default=str)] * len(result.origins),
        },
        schema_overrides={"origin": pl.Date},
    )
    _write(con, "backtest_scores", frame, "model = ?", [result.model])


def load_scores(con: duckdb.DuckDBPyConnection, models: list[str]) -> pl.DataFrame:
    """Per model and origin scores of the given models; every one of them must have been backtested."""
    scores = query(con, "SELECT * FROM backtest_scores WHERE list_contains(?, model) ORDER BY model, origin", [models])
    missing = sorted(set(models) - set(scores["model"].unique().to_list()))
    if missing:
        raise ValueError(f"no backtest results for {', '.join(missing)}: materialise their backtest assets first")
    return scores


def leaderboard(scores: pl.DataFrame) -> pl.DataFrame:
    """Mean f_norm over origins per model, best first (ties by name)."""
    return (
        scores.group_by("model")
        .agg(
            f_norm=pl.col("f_norm").mean(),
            origins=pl.len(),
            fit_seconds=pl.col("fit_seconds").sum(),
            predict_seconds=pl.col("predict_seconds").sum(),
            mlflow_run_id=pl.col("mlflow_run_id").first(),
            params=pl.col("params").first(),
        )
        .sort(["f_norm", "model"], descending=[True, False])
    )


def save_forecast(con: duckdb.DuckDBPyConnection, forecast: pl.DataFrame, model: str) -> None:
    """The forecast table holds one forecast: the latest, replaced atomically."""
    frame = forecast.select("artist_id", "ds", "plays").with_columns(model=pl.lit(model))
    _write(con, "forecast", frame, "TRUE", [])


def load_forecast(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return query(con, "SELECT artist_id, ds, plays, model FROM forecast ORDER BY artist_id, ds")
