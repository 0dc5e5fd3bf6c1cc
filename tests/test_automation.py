"""The daily flow: a drop file lands, the sensor starts one run for it, never twice."""
from __future__ import annotations

import dagster as dg

from musictrend_dagster.defs.automation import daily_refresh, new_drop_file_sensor
from musictrend_dagster.defs.resources import WarehouseResource
from musictrend_dagster.instance import ensure_instance


def _evaluate(raw_dir, cursor=None):
    warehouse = WarehouseResource(database=str(raw_dir.parent / "w.duckdb"), raw_dir=str(raw_dir))
    context = dg.build_sensor_context(cursor=cursor, resources={"warehouse": warehouse})
    return new_drop_file_sensor(context), context


def test_sensor_triggers_once_per_drop_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "mars_tianchi_user_actions.csv").write_text("")  # the bulk file is not a drop file
    result, _ = _evaluate(raw)
    assert isinstance(result, dg.SkipReason)

    (raw / "mars_tianchi_user_actions_20150831.csv").write_text("u,s,1441036800,1,20150831\n")
    result, _ = _evaluate(raw)
    assert [r.run_key for r in result.run_requests] == ["mars_tianchi_user_actions_20150831.csv"]

    again, _ = _evaluate(raw, cursor=result.cursor)
    assert isinstance(again, dg.SkipReason), "the same file must not trigger twice"

    (raw / "mars_tianchi_user_actions_20150901.csv.gz").write_bytes(b"")
    (raw / "mars_tianchi_user_actions_notadate.csv").write_text("")
    third, _ = _evaluate(raw, cursor=result.cursor)
    assert [r.run_key for r in third.run_requests] == ["mars_tianchi_user_actions_20150901.csv.gz"]


def test_daily_schedule_targets_the_whole_graph():
    """The schedule's job selects every asset and every check of the definitions, not just a job name."""
    from musictrend_dagster.definitions import defs

    assert daily_refresh.cron_schedule == "0 3 * * *"
    assert daily_refresh.job_name == "refresh_all"
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(daily_refresh.job_name)
    assert job.asset_layer.selected_asset_keys == graph.get_all_asset_keys()
    assert job.asset_layer.asset_graph.asset_check_keys == graph.asset_check_keys


def test_instance_yaml_is_written_once_with_pools_and_no_telemetry(tmp_path):
    path = ensure_instance(tmp_path / "dagster")
    text = path.read_text()
    assert "telemetry:\n  enabled: false" in text and "default_limit: 1" in text
    path.write_text(text + "\n# user edit\n")
    ensure_instance(tmp_path / "dagster")
    assert path.read_text().endswith("# user edit\n"), "a user's dagster.yaml is never overwritten"
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
