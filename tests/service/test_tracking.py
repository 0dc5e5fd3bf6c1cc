"""MLflow runs, artifacts and the champion alias, on a throwaway SQLite store.

One store for the module: migrating a fresh SQLite store costs MLflow several seconds.
"""

import os
import socket
import subprocess
import sys
import time
from datetime import date, timedelta

import mlflow
import pandas as pd
import polars as pl
import pytest

from musictrend_dagster.core.forecast.backtest import backtest
from musictrend_dagster.core.forecast.models.baselines import BestConstantForecaster, MedianForecaster
from musictrend_dagster.core.service import tracking
from musictrend_dagster.core.service.owner import HOST_TAG, PID_TAG, owner_tags
from musictrend_dagster.core.service.tracking import CHAMPION_ALIAS, Tracker
from musictrend_dagster.core.settings import REGISTERED_MODEL

ORIGINS = [date(2015, 2, 1), date(2015, 2, 11)]


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    first = date(2015, 1, 1)
    rows = [
        (a, first + timedelta(days=k), 100 * (i + 1) + (k * 7) % 13) for i, a in enumerate("abc") for k in range(60)
    ]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    home = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")


def test_backtest_run_has_tags_params_metrics_artifacts(tracker, history, tmp_path):
    result = backtest(lambda: MedianForecaster(14), history, pl.DataFrame(), ORIGINS, horizon=10)
    result.origins[0].losses = [3.0, 2.0]
    result.origins[1].losses = [5.0, 4.0, 1.5]
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    run_id = tracker.log_backtest(
        result, {"dagster_run_id": "d-1"}, (date(2015, 1, 1), date(2015, 3, 1)), seed=7, plot_png=png
    )
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == tracker.experiment_id
    assert run.data.tags["model"] == "median14" and run.data.tags["dagster_run_id"] == "d-1"
    params = run.data.params
    assert params["window"] == "14" and params["seed"] == "7" and params["horizon"] == "10"
    assert (params["data_start"], params["data_end"]) == ("2015-01-01", "2015-03-01")
    assert params["train_end"] == "2015-02-10"  # the last origin's fit
    m = run.data.metrics
    assert m["f_norm"] == pytest.approx(result.mean_f_norm)
    assert m["f_norm_20150201"] == pytest.approx(result.origins[0].f_norm)
    assert {"fit_seconds", "predict_seconds", "fit_seconds_20150211", "loss", "loss_20150201"} <= set(m)
    loss = tracker.client.get_metric_history(run_id, "loss")
    assert [(x.step, x.value) for x in sorted(loss, key=lambda x: x.step)] == [(0, 5.0), (1, 4.0), (2, 1.5)]
    root = {a.path: a.is_dir for a in tracker.client.list_artifacts(run_id)}
    files = {a.path for a in tracker.client.list_artifacts(run_id, "backtest")}
    # the plot at the root under one name in every model's run, whatever the file was called: MLflow's
    # Compare shows the root files the runs have in common
    assert root == {"backtest": True, "forecast_vs_actual.png": False}
    assert files == {"backtest/artist_scores.csv", "backtest/forecasts.csv"}
    scores = pl.read_csv(tracker.client.download_artifacts(run_id, "backtest/artist_scores.csv", str(tmp_path)))
    assert scores.height == 3 * len(ORIGINS) and {"sigma", "phi", "origin"} <= set(scores.columns)
    assert tracker.artifact_dir.as_uri() in run.info.artifact_uri


def test_run_spans_the_work_and_leads_with_f_norm_and_its_dagster_run(tracker, history):
    started = time.time()
    result = backtest(lambda: MedianForecaster(14), history, pl.DataFrame(), ORIGINS, horizon=10)
    result.origins[0].f_norm, result.origins[1].f_norm = 0.61234, -0.25
    result.origins[0].fit_seconds, result.origins[1].fit_seconds = 2.0, 3.5
    time.sleep(1.2)  # the "work": the run must span it, not open after it
    run = tracker.client.get_run(
        tracker.log_backtest(result, {"dagster_run_id": "d-42", "dagster_asset": "backtest/median14"}, started=started)
    )
    assert run.info.start_time == int(started * 1000)
    assert run.info.end_time - run.info.start_time >= 1200
    lines = run.data.tags["mlflow.note.content"].splitlines()
    assert lines[0].startswith("**f_norm 0.1812**")  # (0.61234 - 0.25) / 2, written first
    assert "| 2015-02-01 | 0.6123 | 2.0 |" in lines and "| 2015-02-11 | -0.2500 | 3.5 |" in lines
    assert lines[-1] == "Dagster run `d-42`, asset `backtest/median14`."
    assert run.data.tags["dagster_asset"] == "backtest/median14"


def test_experiment_opens_in_model_training_view(tracker, tmp_path):
    """MLflow 3 shows an experiment as GenAI or model training by its mlflow.experimentKind tag;
    an experiment created by an older musictrend (no tag) gets it when the next Tracker opens it."""
    assert (
        tracker.client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    )
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    old = client.create_experiment("musictrend", artifact_location=(tmp_path / "a").as_uri())
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert Tracker(uri, tmp_path / "a").experiment_id == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_champion_alias_and_pyfunc_round_trip(tracker, history):
    runs = {}
    for factory in (lambda: MedianForecaster(14), BestConstantForecaster):
        result = backtest(factory, history, pl.DataFrame(), ORIGINS, horizon=10)
        runs[result.model] = tracker.log_backtest(
            result, {}, (date(2015, 1, 1), date(2015, 3, 1)), seed=0, plot_png=None
        )
    assert tracker.champion_run_id() is None
    before = os.environ.get("MLFLOW_TRACKING_URI")
    for name, make in (("median14", lambda: MedianForecaster(14)), ("best_constant", BestConstantForecaster)):
        model = make()
        model.fit(history, pl.DataFrame())
        version = tracker.register_champion(runs[name], model, history, date(2015, 3, 2), 60)
    assert version == 2
    assert os.environ.get("MLFLOW_TRACKING_URI") == before  # the global URI is restored
    mv = tracker.client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
    assert (mv.run_id, mv.tags["model"]) == (runs["best_constant"], "best_constant")
    assert tracker.champion_run_id() == runs["best_constant"]

    mlflow.set_tracking_uri(tracker.uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}")
        out = loaded.predict(pd.DataFrame({"start": ["2015-03-02", "2015-04-01"], "horizon": [5, 2]}))
    finally:
        mlflow.set_tracking_uri(before)
    expected = pl.concat([model.predict(date(2015, 3, 2), 5), model.predict(date(2015, 4, 1), 2)])
    assert len(out) == 3 * 7
    assert out["artist_id"].tolist() == expected["artist_id"].to_list()
    assert out["plays"].tolist() == pytest.approx(expected["plays"].to_list())
    assert pd.to_datetime(out["ds"]).dt.date.tolist() == expected["ds"].to_list()


def test_locked_database_is_retried_with_backoff(monkeypatch):
    sleeps, calls = [], []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking._retry(flaky) == "ok"
    assert sleeps == [0.25, 0.5]

    def always_locked():
        raise mlflow.exceptions.MlflowException("database is locked")

    with pytest.raises(mlflow.exceptions.MlflowException):
        tracking._retry(always_locked)
    assert sleeps[2:] == [0.25, 0.5, 1.0, 2.0, 4.0]

    def other():
        raise mlflow.exceptions.MlflowException("no such table")

    with pytest.raises(mlflow.exceptions.MlflowException, match="no such table"):
        tracking._retry(other)
    assert len(sleeps) == 7  # other errors are not retried


class _TinyKeras:
    """Stands in for a Keras-backed forecaster: a `keras_model` plus `model_input(history)`."""

    name = "tiny_keras"

    def __init__(self) -> None:
        import keras

        keras.utils.set_random_seed(0)
        self.keras_model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)])

    def params(self) -> dict:
        return {}

    def model_input(self, history: pl.DataFrame):
        wide = history.sort("ds").group_by("artist_id", maintain_order=True).agg(pl.col("plays").tail(7))
        return wide["plays"].list.to_array(7).to_numpy().astype("float32")


@pytest.mark.slow
def test_keras_champion_is_logged_with_the_keras_flavour(tracker, history):
    result = backtest(lambda: MedianForecaster(14), history, pl.DataFrame(), ORIGINS[:1], horizon=10)
    run_id = tracker.log_backtest(result, {}, (date(2015, 1, 1), date(2015, 3, 1)), seed=0, plot_png=None)
    model = _TinyKeras()
    version = tracker.register_champion(run_id, model, history, date(2015, 3, 2), 60)
    mv = tracker.client.get_model_version(REGISTERED_MODEL, str(version))
    assert mv.tags["model"] == "tiny_keras" and tracker.champion_run_id() == run_id
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracker.uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}")
    finally:
        mlflow.set_tracking_uri(before)
    assert loaded.metadata.flavors.keys() >= {"keras", "python_function"}
    x = model.model_input(history)
    assert loaded.predict(x) == pytest.approx(model.keras_model.predict(x, verbose=0))


def test_runs_left_running_by_a_dead_process_are_marked_killed(tracker):
    """A SIGKILLed writer leaves its run RUNNING; the next Tracker on this host closes it, and only it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    tags = {
        "orphan": {PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()},
        "live": owner_tags(),
        "other host": {PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname() + "-elsewhere"},
        "untagged": {},
    }
    runs = {name: tracker.client.create_run(tracker.experiment_id, tags=t).info.run_id for name, t in tags.items()}
    Tracker(tracker.uri, tracker.artifact_dir)
    status = {name: tracker.client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"orphan": "KILLED", "live": "RUNNING", "other host": "RUNNING", "untagged": "RUNNING"}
    for run_id in runs.values():
        tracker.client.set_terminated(run_id, "FINISHED")  # leave the module's store tidy


def test_coverage_metrics_and_skipped_runs(tracker, history):
    from musictrend_dagster.core.forecast.backtest import Skipped, plan_backtest
    from musictrend_dagster.core.forecast.intervals import calibrate, coverage, log_errors, with_interval

    result = backtest(lambda: MedianForecaster(14), history, pl.DataFrame(), ORIGINS, horizon=10)
    cover = coverage(result, 10)
    plan = plan_backtest(date(2015, 1, 1), date(2015, 3, 1), 14, horizon=60, step=10)
    for o in result.origins:
        o.forecast = with_interval(o.forecast, calibrate(log_errors(result), 10))
    run = tracker.client.get_run(tracker.log_backtest(result, coverage=cover, plan=plan))
    assert run.data.metrics["coverage_80"] == pytest.approx(cover.overall)
    assert run.data.metrics["coverage_80_20150211"] == pytest.approx(cover.per_origin[date(2015, 2, 11)])
    assert run.data.tags["coverage_method"] == "leave-one-origin-out"
    assert run.data.params["train_days"] == str(plan.train_days)
    path = tracker.client.download_artifacts(
        run.info.run_id, "backtest/forecasts.csv", str(tracker.artifact_dir.parent)
    )
    assert {"plays_lo", "plays_hi", "origin"} <= set(pl.read_csv(path).columns)

    skipped = Skipped(
        "global_ensemble", {"window_long": 28}, "needs 42 days of history before an origin; the plan leaves 28"
    )
    run = tracker.client.get_run(tracker.log_skipped(skipped, plan, {"dagster_run_id": "d-2"}))
    assert run.info.status == "FINISHED"
    assert (run.data.tags["status"], run.data.tags["skip_reason"]) == ("skipped", skipped.reason)
    assert run.data.params["skip_reason"] == skipped.reason and run.data.params["window_long"] == "28"
    assert not run.data.metrics
