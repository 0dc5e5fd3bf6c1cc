"""MLflow runs, artifacts and the champion alias, on a throwaway SQLite store.

One store for the module: migrating a fresh SQLite store costs MLflow several seconds.
"""

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
from musictrend_dagster.core.forecast.intervals import with_interval
from musictrend_dagster.core.forecast.models.baselines import BestConstantForecaster, MedianForecaster
from musictrend_dagster.core.forecast.models.registry import make_model
from musictrend_dagster.core.service import tracking
from musictrend_dagster.core.service.owner import HOST_TAG, PID_TAG, owner_tags
from musictrend_dagster.core.service.serving import Selection, ServedModel
from musictrend_dagster.core.service.tracking import (
    CHAMPION_ALIAS,
    Tracker,
    current_champion,
    load_champion,
    registered_versions,
)
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


CALIBRATION = pl.DataFrame({"day": [0, 1], "lo": [-0.2, -0.3], "hi": [0.1, 0.25]})


def _served(model, history: pl.DataFrame, name: str | None = None, f_norm: float = 0.7) -> ServedModel:
    return ServedModel(
        model, name or model.name, model.params(), CALIBRATION, history["ds"].max(), history["ds"].n_unique(), f_norm
    )


def _register(tracker: Tracker, served: ServedModel, reason: str = "test") -> Selection:
    run_id = tracker.client.create_run(tracker.experiment_id, run_name=served.model).info.run_id
    return tracker.register_champion(
        run_id, served, horizon=60, origins=ORIGINS, backtest_coverage=0.8, reason=reason, tags={"dagster_run_id": "d"}
    )


def _pyfunc(tracker: Tracker, uri: str):
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracker.uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(before)


def _model_folders(tracker: Tracker) -> list:
    """Every MLflow model stored under the artifact folder (a folder holding an MLmodel file)."""
    return sorted(p.parent for p in tracker.artifact_dir.rglob("MLmodel"))


def test_the_registry_is_the_champion_record_and_serves_its_one_model(tmp_path, history):
    """Each retrain registers one version whose tags say what it is and whose one MLflow model is the whole
    served model: `models:/musictrend-forecaster@champion` loads through mlflow.pyfunc and forecasts, with
    the 80% interval, exactly what the fitted model forecasts; moving the alias moves every reader."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")
    assert current_champion(tracker.uri) is None and registered_versions(tracker.uri) == []
    with pytest.raises(tracking.NoChampion, match="no model version"):
        load_champion(tracker.uri)
    models = {}
    for make in (lambda: MedianForecaster(14), BestConstantForecaster):
        model = make()
        model.fit(history, pl.DataFrame())
        models[model.name] = model
        selection = _register(tracker, _served(model, history, f_norm=0.6 + len(models) / 10), reason=model.name)
    assert selection == Selection(
        model_version=2,
        data_through=date(2015, 3, 1),
        history_days=60,
        horizon=60,
        model="best_constant",
        origins=tuple(ORIGINS),
        backtest_f_norm=0.8,
        backtest_coverage=0.8,
        reason="best_constant",
    )
    assert current_champion(tracker.uri) == selection
    assert [s.model_version for s in registered_versions(tracker.uri)] == [1, 2]
    assert registered_versions(tracker.uri)[0].model == "median14"

    loaded = _pyfunc(tracker, f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}")
    out = loaded.predict(pd.DataFrame({"start": ["2015-03-02", "2015-04-01"], "horizon": [5, 2]}))
    model = models["best_constant"]
    expected = pl.concat(
        [
            with_interval(model.predict(date(2015, 3, 2), 5), CALIBRATION),
            with_interval(model.predict(date(2015, 4, 1), 2), CALIBRATION),
        ]
    )
    assert list(out.columns) == ["artist_id", "ds", "forecast", "lo80", "hi80"]
    assert out["artist_id"].tolist() == expected["artist_id"].to_list()
    assert pd.to_datetime(out["ds"]).dt.date.tolist() == expected["ds"].to_list()
    assert out["forecast"].tolist() == expected["plays"].to_list()
    assert (
        out["lo80"].tolist() == expected["plays_lo"].to_list()
        and out["hi80"].tolist() == expected["plays_hi"].to_list()
    )

    champion, served = load_champion(tracker.uri)
    assert champion == selection and served.model == "best_constant" and served.calibration.equals(CALIBRATION)
    assert served.forecaster.predict(date(2015, 3, 2), 5).equals(model.predict(date(2015, 3, 2), 5))

    # an operator rolls back in the MLflow UI: the alias is the record, so the readers follow it
    tracker.client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, "1")
    assert current_champion(tracker.uri).model == "median14"
    assert (
        load_champion(tracker.uri)[1]
        .forecaster.predict(date(2015, 3, 2), 5)
        .equals(models["median14"].predict(date(2015, 3, 2), 5))
    )

    # one serialised copy: exactly one MLflow model per registered version, no served_model.pkl beside it
    folders = _model_folders(tracker)
    assert len(folders) == 2
    assert not [p for p in tracker.artifact_dir.rglob("*") if p.name == "served_model.pkl"]
    versions = [tracker.client.get_model_version(REGISTERED_MODEL, str(v)) for v in (1, 2)]
    stored = sorted(
        tracker.client.get_logged_model(v.source.removeprefix("models:/")).artifact_location for v in versions
    )
    assert stored == sorted(f.as_uri() for f in folders)


def test_a_version_without_the_selection_tags_is_named(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")
    tracker.client.create_registered_model(REGISTERED_MODEL)
    mv = tracker.client.create_model_version(REGISTERED_MODEL, source=str(tmp_path), tags={"model": "x"})
    tracker.client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, mv.version)
    with pytest.raises(ValueError, match=r"version 1 lacks the tag\(s\) data_through, history_days"):
        current_champion(tracker.uri)


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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["global_direct", "seed_lstm"])
def test_a_keras_champion_is_one_pyfunc_model_with_its_networks_as_keras_files(tmp_path, five_artists, name):
    """A Keras-backed champion is the same one pyfunc model: its networks are `.keras` artifacts loaded in
    load_context (no TensorFlow object is pickled), and the loaded model forecasts exactly what the fitted one does."""
    history, songs = five_artists
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")
    model = make_model(name, horizon=60, epochs=1, members=1)
    model.fit(history, songs)
    _register(tracker, _served(model, history, name))
    _, served = load_champion(tracker.uri)
    start = history["ds"].max() + timedelta(days=1)
    assert served.forecaster.predict(start, 60).equals(model.predict(start, 60))
    (folder,) = _model_folders(tracker)
    stored = sorted(p.name for p in (folder / "artifacts").iterdir())
    assert stored == ["forecaster.pkl", "network_0.keras"]
    for pickled in (folder / "artifacts" / "forecaster.pkl", folder / "python_model.pkl"):
        assert b"keras.src" not in pickled.read_bytes() and b"tensorflow" not in pickled.read_bytes()
    out = _pyfunc(tracker, f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}").predict(
        pd.DataFrame({"start": [start.isoformat()], "horizon": [60]})
    )
    assert out["forecast"].tolist() == model.predict(start, 60)["plays"].to_list()


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
