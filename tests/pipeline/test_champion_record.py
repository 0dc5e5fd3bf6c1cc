"""One champion record and one served artifact: after a retrain the forecast asset, the automation and the CLI
summary report the version the MLflow registry's `champion` alias points at, and follow it when an operator
moves it; the served object is that version's one MLflow model; no second serialised copy exists."""

from __future__ import annotations

import contextlib
import io
import re

import dagster as dg
import mlflow
import polars as pl
import pytest
from mlflow import MlflowClient
from test_pipeline import newest_vintage, table, tiny_training

from musictrend_dagster import cli
from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.service.tracking import CHAMPION_ALIAS, current_champion
from musictrend_dagster.core.settings import REGISTERED_MODEL, Paths
from musictrend_dagster.definitions import build_defs
from musictrend_dagster.defs.automation import service_state
from musictrend_dagster.defs.resources import default_resources

pytestmark = pytest.mark.slow  # whole runs of the graph

RETRAIN = [dg.AssetKey("registered_champion"), dg.AssetKey("forecast")]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The full path on a small log (version 1), then a retrain: the champion registered again and the
    vintage forecast by it (version 2). Yields (paths, instance, run, the retrain's result)."""
    root = tmp_path_factory.mktemp("champion")
    paths = Paths.from_env(home=root / "home", raw_dir=root / "home" / "raw")
    generate_synthetic(paths.raw_dir, artists=4, days=50, rows=10_000, seed=7, progress=False)
    defs = build_defs(paths)
    key = newest_vintage(paths.raw_dir)  # the day after the log's last day
    with dg.DagsterInstance.ephemeral() as instance:

        def run(job: str, **kwargs) -> dg.ExecuteInProcessResult:
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, partition_key=key, raise_on_error=False, **kwargs
            )
            assert result.success
            return result

        run("refresh_all", run_config=tiny_training(1))
        retrain = run("refresh_all", run_config=tiny_training(1), asset_selection=RETRAIN)
        yield paths, instance, run, retrain


def _readers(paths: Paths, instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> dict[str, int]:
    """The champion version each reader reports: the newest forecast's metadata, the automation's state and
    the CLI's summary of the run."""
    forecast = instance.get_latest_materialization_event(dg.AssetKey("forecast")).asset_materialization.metadata
    state = service_state(instance, default_resources(paths)["mlflow"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli._print_summary(paths, [("run", [result], 1.0)], ["test"], None)
    (summary,) = re.findall(rf"{REGISTERED_MODEL}@champion = v(\d+)", out.getvalue())
    return {
        "forecast": forecast["model_version"].value,
        "automation": state.selection.model_version,
        "cli": int(summary),
    }


def test_after_a_retrain_every_reader_reports_the_registry_champion(service):
    paths, instance, _, retrain = service
    assert current_champion(paths.mlflow_uri).model_version == 2
    assert _readers(paths, instance, retrain) == {"forecast": 2, "automation": 2, "cli": 2}


def test_moving_the_alias_moves_every_reader(service):
    """An operator rolls the champion back to version 1 in the MLflow UI: no other record has to be edited."""
    paths, instance, run, _ = service
    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, "1")
    try:
        forecast = run("daily_forecast", asset_selection=[dg.AssetKey("forecast")])
        assert _readers(paths, instance, forecast) == {"forecast": 1, "automation": 1, "cli": 1}
        assert table(paths, "SELECT DISTINCT model_version FROM forecast")["model_version"].to_list() == [1]
    finally:
        client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, "2")
        run("daily_forecast", asset_selection=[dg.AssetKey("forecast")])


def test_the_served_forecast_is_the_registered_model(service):
    """The vintage in the warehouse is what `models:/musictrend-forecaster@champion`, loaded with mlflow.pyfunc,
    forecasts from the days it was trained on (the vintage reads exactly those days): forecast and interval."""
    paths, _, _, _ = service
    vintage = table(
        paths, "SELECT artist_id, ds, plays, plays_lo, plays_hi, vintage FROM forecast ORDER BY artist_id, ds"
    )
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(paths.mlflow_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@{CHAMPION_ALIAS}")
    finally:
        mlflow.set_tracking_uri(before)
    request = pl.DataFrame({"start": [str(vintage["vintage"][0])], "horizon": [vintage["ds"].n_unique()]})
    served = pl.from_pandas(model.predict(request.to_pandas())).sort("artist_id", "ds")
    assert served["artist_id"].to_list() == vintage["artist_id"].to_list()
    assert served["ds"].dt.date().to_list() == vintage["ds"].to_list()
    for mine, theirs in (("forecast", "plays"), ("lo80", "plays_lo"), ("hi80", "plays_hi")):
        assert served[mine].to_list() == pytest.approx(vintage[theirs].to_list(), rel=1e-9)


def test_one_serialised_copy_per_registered_version(service):
    """Walking the MLflow artifact folder: no served_model.pkl, one MLflow model per registered version, and
    every pickle inside one of those models."""
    paths, _, _, _ = service
    files = [p for p in paths.mlflow_artifacts.rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.name == "served_model.pkl"]
    models = {p.parent for p in files if p.name == "MLmodel"}
    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert len(models) == len(versions) == 2
    assert not {p for p in files if p.suffix == ".pkl" and not any(m in p.parents for m in models)}
