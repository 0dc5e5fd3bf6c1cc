"""Backtest cost: origins in parallel processes give the serial results bit for bit; the plan's origins are capped."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest

from musictrend_dagster.core import settings
from musictrend_dagster.core.forecast.backtest import backtest
from musictrend_dagster.core.forecast.distributed import same_forecast
from musictrend_dagster.core.forecast.models.registry import backtest_plan, make_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_scale import synthetic_daily


@pytest.mark.slow
def test_origins_in_two_processes_give_the_serial_backtest_bit_for_bit():
    """A network (seeded fits) and a baseline, 3 origins: serial in this process, then 2 spawned processes."""
    history, songs = synthetic_daily(30, 150, seed=5)
    plan = backtest_plan(history, 30)
    assert len(plan.origins) == 3
    for factory in (partial(make_model, "global_direct", horizon=30, epochs=2), partial(make_model, "median14")):
        serial = backtest(factory, history, songs, plan.origins, horizon=plan.window)
        heard = []
        parallel = backtest(
            factory, history, songs, plan.origins, horizon=plan.window, workers=2, on_origin=heard.append
        )
        assert [r.origin for r in heard] == list(plan.origins)  # told in order, oldest first
        assert (parallel.model, parallel.params) == (serial.model, serial.params)
        for a, b in zip(serial.origins, parallel.origins, strict=True):
            assert a.origin == b.origin and a.f_norm == b.f_norm and a.losses == b.losses
            assert same_forecast(a.forecast, b.forecast), (serial.model, a.origin)


def test_the_plan_keeps_the_newest_origins_up_to_the_cap(monkeypatch):
    history, _ = synthetic_daily(5, 183, seed=1)
    full = backtest_plan(history, 60)
    assert len(full.origins) == 3  # the default cap (MUSICTREND_BACKTEST_MAX_ORIGINS=3)
    one = backtest_plan(history, 60, max_origins=1)
    assert one.origins == full.origins[-1:] and one.window == full.window
    assert one.train_days == (full.origins[-1] - full.first_day).days  # the one origin trains on all before it
    monkeypatch.setenv(settings.BACKTEST_MAX_ORIGINS_VAR, "2")
    assert backtest_plan(history, 60).origins == full.origins[-2:]  # every caller plans alike from the setting
    longer, _ = synthetic_daily(5, 365, seed=1)
    assert len(backtest_plan(longer, 60, max_origins=12).origins) == 9  # as many as the history allows, below the cap


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        (settings.BACKTEST_WORKERS_VAR, "0", "MUSICTREND_BACKTEST_WORKERS must be a whole number of processes"),
        (settings.BACKTEST_WORKERS_VAR, "many", "MUSICTREND_BACKTEST_WORKERS must be a whole number of processes"),
        (settings.BACKTEST_MAX_ORIGINS_VAR, "0", "MUSICTREND_BACKTEST_MAX_ORIGINS must be a whole number of origins"),
        (settings.BACKTEST_MAX_ORIGINS_VAR, "13", "MUSICTREND_BACKTEST_MAX_ORIGINS must be a whole number of origins"),
    ],
)
def test_a_wrong_backtest_setting_names_its_variable(monkeypatch, var, raw, message):
    monkeypatch.setenv(var, raw)
    with pytest.raises(settings.ConfigError, match=message):
        settings.check_environment()


def test_the_dagster_resource_refuses_a_wrong_value_at_start_naming_the_variable(tmp_path, monkeypatch):
    import dagster as dg

    from musictrend_dagster.defs.resources import ForecastSettingsResource, default_resources

    monkeypatch.setenv(settings.BACKTEST_MAX_ORIGINS_VAR, "all")
    with pytest.raises(settings.ConfigError, match="MUSICTREND_BACKTEST_MAX_ORIGINS"):
        default_resources(settings.Paths.from_env(home=tmp_path))
    resource = ForecastSettingsResource(
        backtest_workers=dg.EnvVar(settings.BACKTEST_WORKERS_VAR),
        backtest_max_origins=dg.EnvVar(settings.BACKTEST_MAX_ORIGINS_VAR),
    )
    monkeypatch.setenv(settings.BACKTEST_WORKERS_VAR, "-2")
    with pytest.raises(settings.ConfigError, match="MUSICTREND_BACKTEST_WORKERS"):
        resource.setup_for_execution(dg.build_init_resource_context())
    monkeypatch.setenv(settings.BACKTEST_WORKERS_VAR, "3")
    monkeypatch.setenv(settings.BACKTEST_MAX_ORIGINS_VAR, "2")
    assert (resource.workers, resource.max_origins) == (3, 2)


def test_backtest_settings_defaults(monkeypatch):
    import os

    for var in (settings.BACKTEST_WORKERS_VAR, settings.BACKTEST_MAX_ORIGINS_VAR):
        monkeypatch.delenv(var, raising=False)
    assert settings.backtest_workers() == len(os.sched_getaffinity(0))  # auto: the cores this process may use
    assert settings.backtest_max_origins() == 3
    monkeypatch.setenv(settings.BACKTEST_WORKERS_VAR, "1")
    assert settings.backtest_workers() == 1
