"""The whole graph in-process on a small synthetic log: what a user gets from "Materialize all"."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import dagster as dg
import duckdb
import mlflow
import polars as pl
import pytest
from mlflow import MlflowClient

from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, SPECS
from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.service.outputs import read_submission
from musictrend_dagster.core.service.store import query
from musictrend_dagster.core.settings import MLFLOW_EXPERIMENT, REGISTERED_MODEL, Paths
from musictrend_dagster.definitions import build_defs

pytestmark = pytest.mark.slow  # whole runs of the graph

ARTISTS, DAYS = 5, 150


# The smallest network sizes a user can configure: one member, one seed per input window.
TINY_SIZES = {"members": 1, "seeds": 1}
# The candidates (MUSICTREND_MODELS) of whole runs whose subject is the service (kills, overlapping runs, the
# daily replay), not the models: each kind of model (baselines, a network, statsforecast peers) without the two
# slowest networks, whose whole runs this file and tests/forecast cover.
SERVICE_MODELS = "median14,best_constant,global_direct,auto_ets_raw,swa_log1p"


def tiny_training(epochs: int = 2, models: str | None = None) -> dict:
    """Launchpad config a user would type to make the neural models quick: one or two epochs, the smallest sizes;
    for the networks among `models` (comma-separated) when given, else every network."""
    ops = {}
    for spec in SPECS:
        if spec.uses_tensorflow and (models is None or spec.name in models.split(",")):
            sizes = {k: v for k, v in TINY_SIZES.items() if k in spec.defaults}
            ops[f"backtest__{spec.name}"] = {"config": {**spec.defaults, **sizes, "epochs": epochs}}
    return {"ops": ops}


def newest_vintage(raw_dir) -> str:
    """The vintage partition after the newest day of the raw actions files (their last column, yyyymmdd)."""
    files = [str(f) for f in sorted(raw_dir.glob("mars_tianchi_user_actions*.csv"))]
    con = duckdb.connect()
    try:
        (newest,) = con.execute(
            "SELECT max(try_strptime(column4, '%Y%m%d'))::DATE FROM read_csv($f, header=false, all_varchar=true)",
            {"f": files},
        ).fetchone()
    finally:
        con.close()
    return (newest + timedelta(days=1)).isoformat()


def run_all(paths: Paths) -> dg.ExecuteInProcessResult:
    """Materialize all, for the vintage of the newest day (what the UI's launch dialog asks for)."""
    defs = build_defs(paths)
    with dg.DagsterInstance.ephemeral() as instance:
        return defs.resolve_job_def("refresh_all").execute_in_process(
            run_config=tiny_training(), instance=instance, partition_key=newest_vintage(paths.raw_dir)
        )


def table(paths: Paths, sql: str) -> pl.DataFrame:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return query(con, sql)
    finally:
        con.close()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    paths = Paths.from_env(home=home, raw_dir=home / "raw")
    summary = generate_synthetic(paths.raw_dir, artists=ARTISTS, days=DAYS, rows=40_000, seed=3, progress=False)
    result = run_all(paths)
    return paths, summary, result


def test_every_asset_and_check_succeeds(first_run):
    _, _, result = first_run
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"raw_user_actions", "artist_daily", "model_features", "champion", "forecast", "submission"} <= materialized
    assert {f"backtest/{m}" for m in MODEL_NAMES} <= materialized
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluations and all(ev.passed for ev in evaluations)


def test_nothing_lost_between_raw_file_and_artist_daily(first_run):
    paths, summary, _ = first_run
    loaded = table(paths, "SELECT count(*) AS n FROM raw_user_actions")["n"][0]
    quarantined = table(paths, "SELECT count(*) AS n FROM quarantine_user_actions")["n"][0]
    assert loaded + quarantined == summary.rows
    totals = table(paths, "SELECT sum(plays + downloads + collects) AS n FROM artist_daily")["n"][0]
    assert totals == loaded


def test_submission_has_every_artist_every_day(first_run):
    paths, _, _ = first_run
    frame = read_submission(paths.submission)
    artists = table(paths, "SELECT DISTINCT artist_id FROM artist_daily")["artist_id"].to_list()
    last = table(paths, "SELECT max(ds) AS d FROM artist_daily")["d"][0]
    assert sorted(frame["artist_id"].unique().to_list()) == sorted(artists)
    assert frame.height == len(artists) * 60
    assert frame["ds"].min() == last + timedelta(days=1)
    assert frame["ds"].n_unique() == 60
    assert (frame["plays"] >= 0).all()
    raw = paths.submission.read_text().splitlines()
    assert raw[0].count(",") == 2 and not raw[0].startswith("artist_id")


def test_mlflow_has_one_run_per_model_and_a_champion(first_run):
    paths, _, _ = first_run
    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(MODEL_NAMES)
    for run in runs:
        assert "f_norm" in run.data.metrics
        assert any(k.startswith("f_norm_") for k in run.data.metrics)
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    best = max(runs, key=lambda r: r.data.metrics["f_norm"])
    assert champion.run_id == best.info.run_id
    mlflow.set_tracking_uri(None)


def test_rerun_on_unchanged_input_is_identical(first_run):
    paths, _, _ = first_run
    before = {
        "raw": table(paths, "SELECT count(*) AS n FROM raw_user_actions")["n"][0],
        "daily": table(paths, "SELECT * FROM artist_daily ORDER BY artist_id, ds"),
        "forecast": table(paths, "SELECT * EXCLUDE (model_version) FROM forecast ORDER BY artist_id, ds"),
        "submission": hashlib.sha256(paths.submission.read_bytes()).hexdigest(),
    }
    assert run_all(paths).success
    assert table(paths, "SELECT count(*) AS n FROM raw_user_actions")["n"][0] == before["raw"]
    assert table(paths, "SELECT * FROM artist_daily ORDER BY artist_id, ds").equals(before["daily"])
    assert table(paths, "SELECT * EXCLUDE (model_version) FROM forecast ORDER BY artist_id, ds").equals(
        before["forecast"]
    )
    assert hashlib.sha256(paths.submission.read_bytes()).hexdigest() == before["submission"]
