"""The code location as a user meets it in the UI: groups, descriptions, kinds, checks, automation."""

from __future__ import annotations

import subprocess
import sys

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

    assert parents("artist_day_actions") == {"stg_user_actions", "stg_songs"}
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
    assert {"start", "horizon"} <= set(forecast_config)


def test_checks_guard_the_graph():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("raw_user_actions", "quarantine_share") in checks
    assert ("artist_daily", "no_outage_day") in checks
    assert ("forecast", "forecast_complete_and_valid") in checks
    assert ("submission", "submission_complete") in checks
    assert any(asset == "artist_daily" and name != "no_outage_day" for asset, name in checks), (
        "SQL singular tests become checks"
    )


def test_daily_schedule_and_sensor_are_on():
    schedule = defs.resolve_schedule_def("daily_refresh")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = defs.resolve_sensor_def("new_drop_file_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_loading_the_code_location_imports_neither_tensorflow_nor_mlflow():
    """`musictrend ingest` and every Dagster process that loads the code location start without the two
    slowest imports; the steps that train or track import them."""
    code = "import sys, musictrend_dagster.definitions; print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False False"
