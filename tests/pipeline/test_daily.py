"""The daily loop as a user runs it: `musictrend replay` over a tiny log (the service's automation on the
history, then on 3 held-back days fed one drop file at a time: observation, data, vintage), then
`musictrend run` on the same data and after `musictrend sample --next-day`. Everything is read back from
the home on disk."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest
from mlflow import MlflowClient
from test_pipeline import SERVICE_MODELS, table, tiny_training

from musictrend_dagster.core.forecast.models.registry import spec
from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.settings import MLFLOW_MONITORING_EXPERIMENT, REGISTERED_MODEL, Paths
from musictrend_dagster.defs.tags import PATH_TAG, TRIGGER_TAG

pytestmark = pytest.mark.slow  # whole runs of the graph

HELD_BACK = 3

# The real CLI, with the neural models cut to one epoch of the smallest networks (the launchpad options a
# user would set) in every run that trains them; argv[1] is that training config (JSON).
CLI = """
import json, sys
import dagster as dg
training = json.loads(sys.argv.pop(1))
_execute = dg.JobDefinition.execute_in_process
def execute_in_process(self, run_config=None, **kwargs):
    run_config = dict(run_config or {})
    ops = dict(run_config.get("ops", {}))
    selected = {k.to_python_identifier() for k in kwargs.get("asset_selection") or []}
    ops |= {op: c for op, c in training.items() if op in selected or (self.name == "refresh_all" and not selected)}
    return _execute(self, run_config={**run_config, "ops": ops}, **kwargs)
dg.JobDefinition.execute_in_process = execute_in_process
from musictrend_dagster.cli import main
sys.exit(main(sys.argv[1:]))
"""


def musictrend(*args: str, cwd) -> subprocess.CompletedProcess:
    training = json.dumps(tiny_training(epochs=1, models=SERVICE_MODELS)["ops"])
    done = subprocess.run(
        [sys.executable, "-c", CLI, training, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
        env={**_clean_env(), "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _clean_env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTREND_", "DAGSTER_", "MLFLOW_"))}
    return env | {"MUSICTREND_MODELS": SERVICE_MODELS}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A 4-artist, 60-day log replayed over its last 3 days."""
    root = tmp_path_factory.mktemp("daily")
    source = root / "source"
    generate_synthetic(source, artists=4, days=60, rows=12_000, seed=5, progress=False)
    home = root / "home"
    done = musictrend("replay", "--days", str(HELD_BACK), "--raw-dir", str(source), "--home", str(home), cwd=root)
    return Paths.from_env(home=home, raw_dir=home / "raw"), source, done.stdout


def test_replay_keeps_every_line_and_makes_one_vintage_a_day(replayed):
    paths, source, out = replayed
    original = sorted((source / "mars_tianchi_user_actions.csv").read_bytes().splitlines())
    replayed_lines = sorted(
        line for f in paths.raw_dir.glob("mars_tianchi_user_actions*.csv") for line in f.read_bytes().splitlines()
    )
    assert replayed_lines == original, "the held-back days plus the rest are the log, line for line"
    drops = sorted(p.name for p in paths.raw_dir.glob("mars_tianchi_user_actions_*.csv"))
    assert drops == [
        "mars_tianchi_user_actions_20150427.csv",
        "mars_tianchi_user_actions_20150428.csv",
        "mars_tianchi_user_actions_20150429.csv",
    ]
    vintages = table(
        paths,
        "SELECT vintage, count(*) AS n, count(DISTINCT artist_id) AS artists, min(ds) AS first, "
        "max(ds) AS last, any_value(model_version) AS v FROM forecast_vintages GROUP BY vintage "
        "ORDER BY vintage",
    )
    first = pl.Series([d for d in (vintages["vintage"][0] + timedelta(days=k) for k in range(4))])
    assert vintages["vintage"].to_list() == first.to_list(), "the full path's vintage, then one per replayed day"
    assert (vintages["first"] == vintages["vintage"]).all()
    assert (vintages["last"] == vintages["vintage"] + timedelta(days=59)).all()
    assert (vintages["n"] == 4 * 60).all() and (vintages["artists"] == 4).all()
    assert vintages["v"].to_list() == [1, 1, 1, 1], "no retrain was due: the same registered version served every day"
    assert (paths.output_dir / "monitoring.png").stat().st_size > 10_000
    assert "monitoring plot" in out


def _hand_scores(paths: Paths) -> dict:
    """Each vintage scored by hand from the raw tables: the official metric over its days with actuals."""
    forecasts = table(paths, "SELECT vintage, artist_id, ds, plays FROM forecast_vintages").rows()
    actual = {(a, d): t for a, d, t in table(paths, "SELECT artist_id, ds, plays FROM artist_daily").rows()}
    per = defaultdict(lambda: defaultdict(list))
    for vintage, artist, day, s in forecasts:
        if (artist, day) in actual:
            per[vintage][artist].append((s, actual[(artist, day)], day))
    scores = {}
    for vintage, artists in per.items():
        num = den = 0.0
        days = set()
        for pairs in artists.values():
            errors = [((s - t) / t) ** 2 for s, t, _ in pairs if t > 0]
            sigma = math.sqrt(sum(errors) / len(errors)) if errors else 0.0
            phi = math.sqrt(sum(t for _, t, _ in pairs))
            num, den = num + (1 - sigma) * phi, den + phi
            days |= {d for _, _, d in pairs}
        scores[vintage] = (num / den, len(days))
    return scores


def test_monitoring_scores_every_vintage_as_a_hand_computation(replayed):
    paths, _, _ = replayed
    want = _hand_scores(paths)
    got = table(paths, "SELECT vintage, f_norm, days_scored, model_version FROM forecast_monitoring ORDER BY vintage")
    assert sorted(want) == got["vintage"].to_list()
    assert got["days_scored"].to_list() == [3, 2, 1], "the full path's vintage has 3 actual days, the next 2, then 1"
    for vintage, f_norm, days, _ in got.rows():
        assert f_norm == pytest.approx(want[vintage][0], abs=1e-9) and days == want[vintage][1]
    artists = table(
        paths, "SELECT vintage, sum(loss) AS lost FROM forecast_monitoring_artists GROUP BY vintage ORDER BY vintage"
    )
    assert [1 - x for x in artists["lost"].to_list()] == pytest.approx(got["f_norm"].to_list())

    # and the same figures in MLflow, against the registered version that made them
    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    experiment = client.get_experiment_by_name(MLFLOW_MONITORING_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.model_version = '1'")
    for vintage, f_norm, days, _ in got.rows():
        (logged,) = [
            m for m in client.get_metric_history(run.info.run_id, f"f_norm_{vintage:%Y%m%d}") if m.step == days
        ]
        assert logged.value == pytest.approx(f_norm)
    version = client.get_model_version(REGISTERED_MODEL, "1")
    assert run.data.tags["source_run_id"] == version.run_id


def test_the_replay_runs_what_the_automation_requests_and_daily_runs_have_no_backtest(replayed):
    """Each day: one observation of raw_source, one data run, one run of the vintage partition (with its files,
    submission and monitoring); the backtests ran only in the first data run, the full path on the history."""
    paths, _, _ = replayed
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        runs = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), ascending=True)
        assert {r.dagster_run.tags[TRIGGER_TAG] for r in runs} == {"replay"}
        selections = [{k.to_user_string() for k in r.dagster_run.asset_selection or []} for r in runs]
        observations = [s for s in selections if s == {"raw_source"}]
        assert len(runs) == 3 * (1 + HELD_BACK) and len(observations) == 1 + HELD_BACK
        partitioned = [
            r.dagster_run.tags.get("dagster/partition") for r in runs if r.dagster_run.tags.get("dagster/partition")
        ]
        assert partitioned == sorted(
            str(v) for v in table(paths, "SELECT DISTINCT vintage FROM forecast_vintages")["vintage"]
        )
        assert [r.dagster_run.tags[PATH_TAG] for r in runs].count("retrain") == 1
        daily = {r.dagster_run.run_id for r in runs if r.dagster_run.tags[PATH_TAG] == "daily"}
        backtests = instance.fetch_materializations(dg.AssetKey(["backtest", "median14"]), limit=100).records
        assert len(backtests) == 1 and not {m.run_id for m in backtests} & daily
        forecast = instance.get_latest_materialization_event(dg.AssetKey("forecast")).asset_materialization.metadata
    champion = forecast["champion"].value
    refit = forecast["refit"].value
    assert refit.startswith("no: the weights of version 1") if spec(champion).observes else "refit on" in refit


def test_a_rerun_replaces_its_vintage_and_the_next_day_adds_one(replayed):
    paths, _, _ = replayed
    before = table(paths, "SELECT * FROM forecast_vintages ORDER BY vintage, artist_id, ds")
    musictrend("run", "--home", str(paths.home), cwd=paths.home)
    assert table(paths, "SELECT * FROM forecast_vintages ORDER BY vintage, artist_id, ds").equals(before)

    musictrend("sample", "--next-day", "--out", str(paths.raw_dir), cwd=paths.home)
    done = musictrend("run", "--home", str(paths.home), cwd=paths.home)
    after = table(paths, "SELECT vintage, count(*) AS n FROM forecast_vintages GROUP BY vintage ORDER BY vintage")
    newest = before["vintage"].max()
    assert after["vintage"].to_list()[-2:] == [newest, newest + timedelta(days=1)] and after.height == 5
    assert "daily path" in done.stdout and "full path" not in done.stdout
    assert "retraining        not due" in done.stdout
    assert table(paths, "SELECT max(vintage) AS v FROM forecast")["v"][0] == newest + timedelta(days=1)
