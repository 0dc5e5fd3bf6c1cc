"""Vintages as daily partitions: a backfill of a range forecasts each day from the days before it, so it gives
exactly the vintages and monitoring scores of the daily runs that made them one day at a time; a failed day
shows failed in the partition status and the other days still forecast; one partition replaces one vintage."""

from __future__ import annotations

import shutil
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_pipeline import table, tiny_training

from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.service.replay import hold_back
from musictrend_dagster.core.settings import Paths
from musictrend_dagster.definitions import build_defs
from musictrend_dagster.defs.partitions import VINTAGES, vintage_key

pytestmark = pytest.mark.slow  # whole runs of the graph

DAYS = 10
VINTAGE_ASSETS = [dg.AssetKey("forecast"), dg.AssetKey("submission"), dg.AssetKey("forecast_monitoring")]
MONITORING = "SELECT vintage, model_version, days_scored, f_norm FROM forecast_monitoring ORDER BY vintage"
LIVE = "SELECT as_of, model_version, f_norm, scored_days FROM forecast_monitoring_live ORDER BY as_of"
VINTAGES_SQL = "SELECT * FROM forecast_vintages ORDER BY vintage, artist_id, ds"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The full path on a log without its last 10 days, then those days one drop file and one daily run at a
    time (the daily job for that day's vintage partition); then every vintage and monitoring row wiped and
    the 10 partitions backfilled from the complete data."""
    root = tmp_path_factory.mktemp("partitions")
    generate_synthetic(root / "source", artists=4, days=50, rows=10_000, seed=7, progress=False)
    paths = Paths.from_env(home=root / "home", raw_dir=root / "home" / "raw")
    drops = hold_back(root / "source", paths.raw_dir, root / "held_back", DAYS)
    days = [pl.Series([d.stem.rsplit("_", 1)[1]]).str.strptime(pl.Date, "%Y%m%d")[0] for d in drops]
    defs = build_defs(paths)
    with dg.DagsterInstance.ephemeral() as instance:

        def run(job: str, key: str, **kwargs) -> dg.ExecuteInProcessResult:
            return defs.resolve_job_def(job).execute_in_process(
                instance=instance, partition_key=key, raise_on_error=False, **kwargs
            )

        assert run("refresh_all", vintage_key(days[0] - timedelta(days=1)), run_config=tiny_training(1)).success
        for drop, day in zip(drops, days, strict=True):
            shutil.move(drop, paths.raw_dir / drop.name)
            assert run("daily_forecast", vintage_key(day)).success
        daily = {name: table(paths, sql) for name, sql in (("vintages", VINTAGES_SQL), ("monitoring", MONITORING))}
        daily["live"] = table(paths, LIVE)

        keys = [vintage_key(d) for d in days]
        con_tables = ("forecast_vintages", "forecast_monitoring", "forecast_monitoring_artists")
        import duckdb

        con = duckdb.connect(str(paths.warehouse))
        try:
            for name in con_tables:
                con.execute(f"DELETE FROM {name} WHERE vintage IN (SELECT unnest($k)::DATE)", {"k": keys})
            con.execute("DELETE FROM forecast_monitoring_live WHERE as_of >= $d", {"d": days[0]})
        finally:
            con.close()
        gap = vintage_key(days[-1] + timedelta(days=1))  # two days after the data: nothing to read the day before
        backfill = [run("daily_forecast", k, asset_selection=VINTAGE_ASSETS) for k in [gap, *keys]]
        status = instance.get_status_by_partition(dg.AssetKey("forecast"), [gap, *keys], VINTAGES)
        yield paths, keys, daily, backfill, status, run


def test_a_backfill_gives_exactly_the_vintages_and_scores_of_the_daily_runs(served):
    paths, keys, daily, backfill, _, _ = served
    assert all(r.success for r in backfill[1:])
    got = table(paths, VINTAGES_SQL)
    assert sorted({str(v) for v in got["vintage"]} & set(keys)) == keys
    assert got.equals(daily["vintages"]), "each backfilled vintage read only the days before it"
    # scores are sums over artists and days in polars' parallel group-bys: equal to the last bits only
    assert_frame_equal(table(paths, MONITORING), daily["monitoring"], check_exact=False, rel_tol=0, abs_tol=1e-12)
    assert_frame_equal(table(paths, LIVE), daily["live"], check_exact=False, rel_tol=0, abs_tol=1e-12)
    assert daily["monitoring"].height >= DAYS and daily["monitoring"]["days_scored"].max() >= DAYS - 1


def test_a_failed_day_shows_failed_and_the_other_days_still_forecast(served):
    _, keys, _, backfill, status, _ = served
    assert not backfill[0].success
    gap = next(iter(status.keys() - set(keys)))
    assert status[gap] == dg.AssetPartitionStatus.FAILED
    assert {status[k] for k in keys} == {dg.AssetPartitionStatus.MATERIALIZED}


def test_one_partition_replaces_its_vintage_only(served):
    paths, keys, _, _, _, run = served
    before = table(paths, VINTAGES_SQL)
    assert run(
        "daily_forecast",
        keys[3],
        asset_selection=VINTAGE_ASSETS[:1],
        run_config={"ops": {"forecast": {"config": {"horizon": 30}}}},
    ).success
    after = table(paths, VINTAGES_SQL)
    changed = after.filter(pl.col("vintage").cast(pl.String) == keys[3])
    assert changed.height == 4 * 30
    assert after.filter(pl.col("vintage").cast(pl.String) != keys[3]).equals(
        before.filter(pl.col("vintage").cast(pl.String) != keys[3])
    )
