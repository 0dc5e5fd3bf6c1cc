"""The service's automation: one daily run per new drop file, never twice; the full path when there is
no champion; the retrain sensor on its triggers; the schedule on the daily job; pools as docs/daily-service.md says."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from musictrend_dagster.core.service.serving import Selection
from musictrend_dagster.core.service.tracking import CHAMPION_ALIAS, Tracker, selection_tags
from musictrend_dagster.core.settings import REGISTERED_MODEL
from musictrend_dagster.defs.assets.monitoring import LIVE_CHECK
from musictrend_dagster.defs.automation import new_drop_file_sensor, retrain_sensor
from musictrend_dagster.defs.resources import MlflowResource, ServiceResource, WarehouseResource
from musictrend_dagster.defs.tags import DROP_FILE_TAG, PATH_TAG, REASON_TAG, TRIGGER_TAG
from musictrend_dagster.instance import DUCKDB_POOL, TRAINING_POOL, ensure_instance

DAILY_SERVICE = Path(__file__).resolve().parents[2] / "docs" / "daily-service.md"
DROP = "mars_tianchi_user_actions_{}.csv"


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture(scope="module")
def _store(tmp_path_factory) -> MlflowResource:
    home = tmp_path_factory.mktemp("mlflow")
    Tracker(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")  # migrated once: several seconds
    return MlflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_dir=str(home / "mlartifacts"))


@pytest.fixture
def registry(_store):
    """An MLflow registry with no champion yet (the store is the module's; each test starts it empty)."""
    yield _store
    client = MlflowClient(tracking_uri=_store.tracking_uri, registry_uri=_store.tracking_uri)
    if client.search_registered_models(f"name = '{REGISTERED_MODEL}'"):
        client.delete_registered_model(REGISTERED_MODEL)


def register(registry, version=1, through="2015-08-30", history_days=183):
    """What a retrain leaves in the MLflow registry, the one champion record: the version with its selection's
    tags (versions registered up to it first), and the champion alias on it."""
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    if not client.search_registered_models(f"name = '{REGISTERED_MODEL}'"):
        client.create_registered_model(REGISTERED_MODEL)
    while len(client.search_model_versions(f"name = '{REGISTERED_MODEL}'")) < version:
        client.create_model_version(REGISTERED_MODEL, source=registry.artifact_dir)
    tags = selection_tags(Selection(version, date.fromisoformat(through), history_days, model="global_ensemble"))
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, str(version), key, value)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, str(version))


def vintage(instance, data_through, history_days):
    """What a daily run leaves: the forecast materialization's metadata."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization("forecast", metadata={"data_through": data_through, "history_days": history_days})
    )


def _evaluate(instance, registry, raw_dir, cursor=None):
    warehouse = WarehouseResource(database=str(raw_dir.parent / "w.duckdb"), raw_dir=str(raw_dir))
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse": warehouse, "service": ServiceResource(), "mlflow": registry},
    )
    return new_drop_file_sensor(context)


def _start(request: dg.RunRequest) -> str:
    """The vintage a request forecasts: its partition key."""
    return request.partition_key


def test_sensor_starts_one_daily_run_per_drop_file_never_twice(tmp_path, instance, registry):
    register(registry)
    vintage(instance, "2015-08-30", 183)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "mars_tianchi_user_actions.csv").write_text("")  # the bulk file is not a drop file
    assert isinstance(_evaluate(instance, registry, raw), dg.SkipReason)

    (raw / DROP.format("20150831")).write_text("u,s,1441036800,1,20150831\n")
    result = _evaluate(instance, registry, raw)
    assert [(r.run_key, r.job_name, _start(r)) for r in result.run_requests] == [
        (DROP.format("20150831"), "daily_forecast", "2015-09-01")
    ]
    tags = result.run_requests[0].tags
    assert (tags[PATH_TAG], tags[TRIGGER_TAG], tags[DROP_FILE_TAG]) == ("daily", "drop_file", DROP.format("20150831"))
    assert isinstance(_evaluate(instance, registry, raw, cursor=result.cursor), dg.SkipReason), (
        "the same file must not trigger twice"
    )

    (raw / "mars_tianchi_user_actions_20150901.csv.gz").write_bytes(b"")
    (raw / "mars_tianchi_user_actions_notadate.csv").write_text("")
    (raw / "mars_tianchi_user_actions_20150231.csv").write_text("")  # no such day: ingest names it, no run here
    third = _evaluate(instance, registry, raw, cursor=result.cursor)
    assert [r.run_key for r in third.run_requests] == ["mars_tianchi_user_actions_20150901.csv.gz"]


def test_two_files_landing_together_start_two_runs_two_vintages(tmp_path, instance, registry):
    """docs/daily-service.md: the sensor starts one run per new file (issue 15, point 5: it used to start one run
    naming both)."""
    register(registry)
    vintage(instance, "2015-08-30", 183)
    raw = tmp_path / "raw"
    raw.mkdir()
    for day in ("20150901", "20150831"):
        (raw / DROP.format(day)).write_text("")
    result = _evaluate(instance, registry, raw)
    assert [(r.run_key, _start(r)) for r in result.run_requests] == [
        (DROP.format("20150831"), "2015-09-01"),
        (DROP.format("20150901"), "2015-09-02"),
    ]
    assert "one run per new file" in DAILY_SERVICE.read_text()


def test_without_a_champion_a_drop_file_starts_the_full_path(tmp_path, instance, registry):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / DROP.format("20150831")).write_text("")
    (request,) = _evaluate(instance, registry, raw).run_requests
    assert request.job_name == "refresh_all" and request.tags[PATH_TAG] == "retrain"
    assert request.tags[REASON_TAG] == "first run: no champion registered yet"


def test_retrain_sensor_fires_on_cadence_growth_or_a_degraded_champion_only(instance, registry, monkeypatch):
    """The cadence is the service resource's field, filled by dg.EnvVar: changing the variable changes
    what the same sensor definition decides, with no code change and no new resource object."""
    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "7")
    service = ServiceResource(retrain_every_days=dg.EnvVar("MUSICTREND_RETRAIN_EVERY_DAYS"))
    resources = {"service": service, "mlflow": registry}
    context = lambda: dg.build_sensor_context(instance=instance, resources=resources)  # noqa: E731
    assert "no champion" in retrain_sensor(context()).skip_message
    register(registry, version=4, through="2015-08-30", history_days=100)
    vintage(instance, "2015-09-05", 106)  # 6 days on, +6%: not due
    assert retrain_sensor(context()).skip_message.startswith("not due: champion v4")

    # monitoring warns on the current champion: retrain, and the run says why
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("forecast_monitoring"),
            check_name=LIVE_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"model_version": 4, "verdict": "global_ensemble v4: live f_norm 0.61 vs backtest 0.75"},
        )
    )
    request = retrain_sensor(context())
    assert request.job_name in (None, "refresh_all") and request.tags[PATH_TAG] == "retrain"
    assert request.tags[REASON_TAG] == "degraded: global_ensemble v4: live f_norm 0.61 vs backtest 0.75"
    assert request.partition_key == "2015-09-06", "the retrain re-makes the newest vintage with the new champion"
    assert request.tags[TRIGGER_TAG] == "retrain_sensor"

    # a warning about an older version is no reason to retrain the current one
    register(registry, version=5, through="2015-09-05", history_days=106)
    assert isinstance(retrain_sensor(context()), dg.SkipReason)
    vintage(instance, "2015-09-12", 113)  # 7 days of new data: the weekly cadence
    assert retrain_sensor(context()).tags[REASON_TAG].startswith("cadence: 7 new days of data")
    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "0")  # cadence off; growth still counts
    assert isinstance(retrain_sensor(context()), dg.SkipReason)
    vintage(instance, "2015-10-08", 138)
    assert retrain_sensor(context()).tags[REASON_TAG].startswith("growth: the history grew from 106 to 138 days")


def test_the_daily_job_has_no_backtest():
    """daily_forecast is every asset but the models group (no backtest, no selection), with the monitoring;
    refresh_all (retraining) is the whole graph."""
    from musictrend_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    everything = graph.get_all_asset_keys()
    daily = defs.resolve_job_def("daily_forecast").asset_layer.selected_asset_keys
    models = {k for k in everything if graph.get(k).group_name == "models"}
    assert {k.to_user_string() for k in models} >= {"champion", "registered_champion", "backtest/global_ensemble"}
    assert daily == everything - models
    assert defs.resolve_job_def("refresh_all").asset_layer.selected_asset_keys == everything


def _steps(job_name: str) -> dict[str, tuple[str | None, set[str]]]:
    """Every step of the job's graph (asset ops and check ops): (pool, resources it requires)."""
    from musictrend_dagster.definitions import defs

    job = defs.resolve_job_def(job_name)
    return {node.name: (node.definition.pool, set(node.definition.required_resource_keys)) for node in job.graph.nodes}


def test_pools_are_as_the_docs_say():
    """Issue 15, point 6: the README claimed every warehouse step runs in `duckdb`; training steps read
    the warehouse too, under `training`. Every step that opens the warehouse has one of the two pools,
    `training` exactly for the models group, and docs/daily-service.md lists the training steps by name."""
    from musictrend_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    models = [k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "models"]
    training = {k.to_user_string() for k in models}
    training_steps = {k.to_python_identifier() for k in models}  # backtest/median14 -> step backtest__median14
    steps = _steps("refresh_all")
    for name, (pool, resources) in steps.items():
        if "warehouse" in resources:
            want = TRAINING_POOL if name in training_steps else DUCKDB_POOL
            assert pool == want, f"{name} opens the warehouse in pool {pool!r}, not {want!r}"
    assert {n for n, (pool, _) in steps.items() if pool == TRAINING_POOL} == training_steps
    text = DAILY_SERVICE.read_text()
    listed = re.search(r"pool `training` \(([^)]*)\)", text)
    assert listed, "the Concurrency section of docs/daily-service.md lists the training steps"
    names = set(re.findall(r"`([a-z_0-9*/]+)`", listed.group(1)))
    assert {n if not n.startswith("backtest/") else "backtest/*" for n in training} == names


def test_instance_yaml_is_written_once_with_pools_and_no_telemetry(tmp_path):
    path = ensure_instance(tmp_path / "dagster")
    text = path.read_text()
    assert "telemetry:\n  enabled: false" in text and "default_limit: 1" in text
    path.write_text(text + "\n# user edit\n")
    ensure_instance(tmp_path / "dagster")
    assert path.read_text().endswith("# user edit\n"), "a user's dagster.yaml is never overwritten"
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_retrain_every_days_must_be_a_whole_number(monkeypatch, tmp_path):
    """A wrong value fails at start, naming the variable: in the CLI's check, when the definitions load,
    and in a resource whose variable was changed after they loaded."""
    from musictrend_dagster.core.settings import ConfigError, Paths, check_environment
    from musictrend_dagster.defs.resources import default_resources

    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "weekly")
    with pytest.raises(ConfigError, match="MUSICTREND_RETRAIN_EVERY_DAYS must be a whole number"):
        check_environment()
    with pytest.raises(ConfigError, match="MUSICTREND_RETRAIN_EVERY_DAYS must be a whole number"):
        default_resources(Paths.from_env(home=tmp_path))
    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "14")
    check_environment()
    service = default_resources(Paths.from_env(home=tmp_path))["service"]
    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "fortnightly")
    with pytest.raises(dg.DagsterResourceFunctionError) as failed, dg.build_resources({"service": service}):
        pass
    assert isinstance(failed.value.__cause__, ConfigError)
    assert "MUSICTREND_RETRAIN_EVERY_DAYS must be a whole number" in str(failed.value.__cause__)
