"""The code location as a user meets it in the UI: groups, descriptions, kinds, checks, automation."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC

import dagster as dg

from musictrend_dagster.definitions import defs

GROUPS = {"ingest", "transform", "features", "models", "forecast", "monitoring"}


def _assets():
    graph = defs.resolve_asset_graph()
    return {key: graph.get(key) for key in graph.get_all_asset_keys()}


def test_every_asset_has_group_description_and_kind():
    assets = _assets()
    assert {
        "raw_user_actions",
        "raw_songs",
        "artist_daily",
        "model_features",
        "champion",
        "forecast",
        "submission",
    } <= {k.to_user_string() for k in assets}
    for key, node in assets.items():
        assert node.group_name in GROUPS, key
        assert node.description and len(node.description) > 20, key
        assert node.kinds, key
    assert {node.group_name for node in assets.values()} == GROUPS


def test_sql_models_depend_on_what_their_sql_reads():
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("artist_day_actions") == {"stg_user_actions", "stg_songs", "stg_daily_plays"}  # any source
    assert parents("artist_daily") == {"artist_day_actions"}
    description = graph.get(dg.AssetKey("artist_daily")).description
    assert "```sql" in description and "select" in description.lower()


def test_tensorflow_models_are_tagged_and_configurable():
    graph = defs.resolve_asset_graph()
    lstm = graph.get(dg.AssetKey(["backtest", "seed_lstm"]))
    assert "tensorflow" in lstm.kinds and "mlflow" in lstm.kinds
    job = defs.resolve_job_def("refresh_all")
    fields = job.run_config_schema.config_type.fields["ops"].config_type.fields
    lstm_config = fields["backtest__seed_lstm"].config_type.fields["config"].config_type.fields
    assert {"epochs", "seed"} <= set(lstm_config)
    forecast_config = fields["forecast"].config_type.fields["config"].config_type.fields
    assert set(forecast_config) == {"horizon"}, "the vintage is the partition key, not config"


def test_checks_guard_the_graph():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("raw_user_actions", "quarantine_share") in checks
    assert ("artist_daily", "no_outage_day") in checks
    assert ("forecast", "forecast_complete_and_valid") in checks
    assert ("submission", "submission_complete") in checks
    assert ("forecast_files", "forecast_files_match") in checks
    assert any(asset == "artist_daily" and name != "no_outage_day" for asset, name in checks), (
        "SQL singular tests become checks"
    )


def test_vintages_are_daily_partitions_and_the_automation_sensor_is_on():
    graph = defs.resolve_asset_graph()
    partitioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_partitioned}
    assert partitioned == {"forecast", "forecast_files", "submission", "forecast_monitoring"}
    vintages = graph.get(dg.AssetKey("forecast")).partitions_def
    assert isinstance(vintages, dg.DailyPartitionsDefinition)
    assert {graph.get(dg.AssetKey(k)).partitions_def for k in partitioned} == {vintages}
    sensor = defs.resolve_sensor_def("automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_loading_the_code_location_imports_neither_tensorflow_nor_mlflow():
    """`musictrend ingest` and every Dagster process that loads the code location start without the two
    slowest imports; the steps that train or track import them."""
    code = "import sys, musictrend_dagster.definitions; print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False False"


def test_the_freshness_policy_reports_a_forecast_older_than_two_days():
    """Dagster's own freshness evaluation (what its daemon runs) on the forecast asset's policy: fresh the day
    a vintage is made, a warning after 26 hours without a new one, a failure after two days."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timedelta

    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.test_utils import BasicLoadingContext, freeze_time
    from dagster._daemon.freshness import FreshnessDaemon

    node = defs.resolve_asset_graph().get(dg.AssetKey("forecast"))
    made = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
    with dg.DagsterInstance.ephemeral() as instance:

        def state(hours_later: float) -> FreshnessState:
            with freeze_time(made + timedelta(hours=hours_later)):
                evaluation = FreshnessDaemon()._compute_asset_freshness_state(BasicLoadingContext(instance), node)
                # a thread of its own: an in-process Dagster run earlier in this worker may leave a loop running
                with ThreadPoolExecutor(1) as pool:
                    return pool.submit(asyncio.run, evaluation).result()

        assert state(0) == FreshnessState.UNKNOWN  # no vintage yet
        with freeze_time(made):
            instance.report_runless_asset_event(dg.AssetMaterialization("forecast"))
        assert [state(h) for h in (1, 25, 27, 47, 49)] == [
            FreshnessState.PASS,
            FreshnessState.PASS,
            FreshnessState.WARN,
            FreshnessState.WARN,
            FreshnessState.FAIL,
        ]
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert "new_day_freshness" not in checks, "the policy replaces the hand-written check"


def test_dg_check_and_list_defs_work_on_the_project(tmp_path):
    """`dg check defs` and `dg list defs` (dagster-dg-cli matching the installed dagster) load the project's
    Definitions as pyproject's [tool.dg] says; the listing shows the graph, the resources and the automation."""
    import json
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    dg_cli = Path(sys.executable).with_name("dg")
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
        "MUSICTREND_HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    checked = subprocess.run(
        [str(dg_cli), "check", "defs"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = subprocess.run(
        [str(dg_cli), "list", "defs", "--json"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    found = json.loads(listed.stdout)
    assert {a["asset_key"] for a in found["assets"]} == {
        k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
    }
    assert {r["name"] for r in found["resources"]} >= {"warehouse", "mlflow", "output", "service"}
    assert {j["name"] for j in found["jobs"]} >= {"daily_forecast", "refresh_all"}


def test_the_models_group_is_the_candidates(tmp_path, monkeypatch):
    """MUSICTREND_MODELS (or [forecast] models) decides which backtests the code location defines, and the
    champion reads exactly those."""
    from musictrend_dagster.core.settings import MODELS_VAR, Paths
    from musictrend_dagster.definitions import build_defs

    monkeypatch.setenv(MODELS_VAR, "global_direct,median14,best_constant")
    graph = build_defs(Paths.from_env(home=tmp_path / "home", raw_dir=tmp_path / "raw")).resolve_asset_graph()
    models = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "models"}
    backtests = {"backtest/median14", "backtest/best_constant", "backtest/global_direct"}
    assert models == backtests | {"champion", "registered_champion"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("champion")).parent_keys} == backtests
