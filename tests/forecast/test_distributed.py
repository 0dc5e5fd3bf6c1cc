"""Forecasts of every series on the standalone Spark cluster equal the single-machine ones, bit for bit.

The Spark side runs in a driver process of its own (this file run as a script), as a Dagster step's
process would be: a SparkContext is one per process, and other test files keep a local[2] session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_scale import synthetic_daily

from musictrend_dagster.core.forecast import distributed, sampling
from musictrend_dagster.core.forecast.models.registry import make_model

TINY = {"global_direct": {"epochs": 2}, "global_ensemble": {"epochs": 2}, "seed_lstm": {"epochs": 1}}
BATCH = 10  # 40 series: 4 batches, 4 tasks
MODELS = ["median14", "best_constant", "swa_log1p", "auto_ets_raw", "global_direct", "global_ensemble", "seed_lstm"]


def dense_synthetic(artists: int = 40, days: int = 120) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The synthetic artist-daily frame on a dense calendar (every artist every day), as artist_daily is."""
    frame, songs = synthetic_daily(artists, days, seed=3)
    calendar = pl.DataFrame({"ds": pl.date_range(frame["ds"].min(), frame["ds"].max(), eager=True)})
    dense = frame.select("artist_id").unique().join(calendar, how="cross")
    dense = dense.join(frame, on=["artist_id", "ds"], how="left").fill_null(0).sort("artist_id", "ds")
    return dense, songs


def test_a_batch_without_the_whole_calendar_is_refused():
    history, _ = dense_synthetic(12, 40)
    late = sorted(history["artist_id"].unique())[4:8]  # batch 1 of 4 per batch starts a week late
    sparse = history.filter(~pl.col("artist_id").is_in(late) | (pl.col("ds") >= history["ds"].min() + timedelta(7)))
    batches = distributed.series_batches(sparse, 4)
    assert batches["_batch"].to_list() == [0] * 4 + [1] * 4 + [2] * 4
    distributed.check_calendar(history, distributed.series_batches(history, 4))
    with pytest.raises(ValueError, match=f"batch 1 \\(from artist {late[0]}\\) spans .* dense calendar"):
        distributed.check_calendar(sparse, batches)


def test_each_batch_forecast_on_its_own_equals_the_whole_forecast(monkeypatch):
    """What every executor does (a copy of the fitted model observes its batch), here in one process:
    the same bits as fit + predict over every series, for a per-series model and a network."""
    monkeypatch.setattr(sampling, "BATCH_SERIES", BATCH)
    history, songs = dense_synthetic(30, 90)
    start = history["ds"].max() + timedelta(days=1)
    for name in ("best_constant", "seed_lstm"):
        model = make_model(name, **TINY.get(name, {}))
        _, whole, _ = distributed.fit_forecast(model, history, songs, start, 60)
        parts = [
            distributed.forecast_batch(
                make_model(name, **TINY.get(name, {})) if name == "best_constant" else model,
                history.join(ids, on="artist_id"),
                songs.join(ids, on="artist_id"),
                start,
                60,
            )
            for _, ids in distributed.series_batches(history).group_by("_batch", maintain_order=True)
        ]
        assert distributed.same_forecast(whole, pl.concat(parts)), name


@pytest.mark.spark
def test_forecasts_on_the_standalone_cluster_equal_the_single_machine_ones(spark_cluster, tmp_path):
    """Every kind of model (medians, the metric's constant, two statsforecast peers, the three networks)
    forecasts 40 series x 120 days in 4 batches (pandas UDFs) on master + 2 workers: the same bits as on one
    machine; and a fitted network reading one day more (the daily path) forecasts the same there as here."""
    env = {
        **spark_cluster.env(),
        "PYSPARK_PYTHON": sys.executable,  # executors run this interpreter (its packages)
        "PYTHONPATH": os.pathsep.join([str(Path(distributed.__file__).parents[3]), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, __file__, spark_cluster.master_url, str(tmp_path), *MODELS],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["master"] == spark_cluster.master_url
    apps = spark_cluster.state()
    ours = [a for a in apps["completedapps"] + apps["activeapps"] if a["name"] == "musictrend"]
    assert ours and ours[-1]["cores"] == 2  # both one-core workers ran the batches' tasks
    for name in MODELS:
        local = pl.read_parquet(tmp_path / f"{name}-local.parquet")
        spark = pl.read_parquet(tmp_path / f"{name}-spark.parquet")
        assert local.height == 40 * 60 and local["plays"].is_finite().all(), name
        assert distributed.same_forecast(local, spark), name
    daily = [pl.read_parquet(tmp_path / f"observe-{where}.parquet") for where in ("local", "spark")]
    assert daily[0]["ds"].min() == pl.read_parquet(tmp_path / "seed_lstm-local.parquet")["ds"].min() + timedelta(1)
    assert distributed.same_forecast(*daily)


def _driver(master: str, out: Path, models: list[str]) -> None:
    """The Spark side: fit each model on the driver (per-series ones: on every executor) and forecast
    every series on `master`, and the same model on one machine; both forecasts to `out`."""
    from pyspark.sql import SparkSession

    from musictrend_dagster.core.data.engines.spark import spark_config

    sampling.BATCH_SERIES = BATCH
    conf = {
        **spark_config(master),
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.executor.memory": "900m",
        "spark.executorEnv.PYTHONPATH": os.environ["PYTHONPATH"],
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    history, songs = dense_synthetic()
    start = history["ds"].max() + timedelta(days=1)
    try:
        for name in models:
            _, local, _ = distributed.fit_forecast(make_model(name, **TINY.get(name, {})), history, songs, start, 60)
            _, on_spark, _ = distributed.fit_forecast(
                make_model(name, **TINY.get(name, {})), history, songs, start, 60, spark=spark
            )
            local.write_parquet(out / f"{name}-local.parquet")
            on_spark.write_parquet(out / f"{name}-spark.parquet")
        # the daily path: the fitted network reads a day more (the served vintage's inference, observe_forecast)
        newer, _ = dense_synthetic(days=121)
        model = make_model("seed_lstm", **TINY["seed_lstm"])
        model.fit(history, songs)
        for where, session in (("local", None), ("spark", spark)):
            distributed.observe_forecast(
                model, newer, songs, start + timedelta(days=1), 60, spark=session
            ).write_parquet(out / f"observe-{where}.parquet")
        print(json.dumps({"master": spark.sparkContext.master}))
    finally:
        spark.stop()


if __name__ == "__main__":
    _driver(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
