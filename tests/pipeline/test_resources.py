"""Settings are resource fields filled by dg.EnvVar: the Resources page names every variable, a run reads
the variable when it starts (changing it changes what the same definitions do), a wrong value names it."""

from __future__ import annotations

import dagster as dg
import pytest

from musictrend_dagster.core import settings
from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.settings import ACTIONS_PREFIX, Paths
from musictrend_dagster.defs.assets.ingest import raw_songs, raw_user_actions
from musictrend_dagster.defs.checks import quarantine_share
from musictrend_dagster.defs.resources import default_resources


def test_every_setting_is_an_env_var_of_a_resource(tmp_path):
    """What the UI's Resources page shows: each setting's variable, on the resource that uses it."""
    from musictrend_dagster.definitions import build_defs

    resources = build_defs(Paths.from_env(home=tmp_path, raw_dir=tmp_path / "raw")).resources
    found = {
        value.env_var_name: (key, field)
        for key, resource in resources.items()
        for field, value in vars(resource).items()
        if isinstance(value, dg.EnvVar)
    }
    assert found == {
        settings.MAX_QUARANTINE_SHARE_VAR: ("service", "max_quarantine_share"),
        settings.RETRAIN_EVERY_DAYS_VAR: ("service", "retrain_every_days"),
        settings.ENGINE_VAR: ("warehouse", "engine"),
        settings.SPARK_MASTER_VAR: ("warehouse", "spark_master"),
        settings.MLFLOW_UI_URL_VAR: ("mlflow", "ui_url"),
        settings.BACKTEST_WORKERS_VAR: ("forecasting", "backtest_workers"),
        settings.BACKTEST_MAX_ORIGINS_VAR: ("forecasting", "backtest_max_origins"),
    }
    assert {resources["warehouse"].database, resources["warehouse"].raw_dir} == {
        str(tmp_path.resolve() / "warehouse.duckdb"),
        str(tmp_path.resolve() / "raw"),
    }


def test_changing_the_variable_changes_the_check_without_new_definitions(tmp_path, monkeypatch):
    """One resources object, two runs: the quarantine limit follows MUSICTREND_MAX_QUARANTINE_SHARE."""
    monkeypatch.setenv(settings.MAX_QUARANTINE_SHARE_VAR, "0.03")
    paths = Paths.from_env(home=tmp_path, raw_dir=tmp_path / "raw")
    generate_synthetic(paths.raw_dir, artists=3, days=20, rows=2_000, seed=1, progress=False)
    with open(paths.raw_dir / f"{ACTIONS_PREFIX}.csv", "a") as f:  # 2% bad lines
        f.writelines(f"u{i},not-a-song,x,9,2015\n" for i in range(41))
    resources = default_resources(paths)

    def check_passed() -> bool:
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(
                [raw_songs, raw_user_actions, quarantine_share],
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation.passed

    assert check_passed()
    monkeypatch.setenv(settings.MAX_QUARANTINE_SHARE_VAR, "0.015")
    assert not check_passed()


def test_a_wrong_value_fails_the_run_at_its_start_naming_the_variable(tmp_path, monkeypatch):
    paths = Paths.from_env(home=tmp_path, raw_dir=tmp_path / "raw")
    resources = default_resources(paths)
    monkeypatch.setenv(settings.ENGINE_VAR, "postgres")
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([raw_songs], resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_failure]
    assert "MUSICTREND_ENGINE must be one of duckdb, spark, got 'postgres'" in str(failure.event_specific_data)
    with pytest.raises(settings.ConfigError, match="MUSICTREND_ENGINE"):
        default_resources(paths)
