"""The service's declarative automation, evaluated as Dagster's automation sensor evaluates it
(`dg.evaluate_automation_conditions` on the project's definitions): a changed raw source is observed
(a data version from the lake's content hashes), a new data version runs the data assets, the vintage
the data allows is forecast, and retraining is requested exactly when the champion is due. Runs are
stood in for by the events they leave (the observation itself runs for real); the jobs and pools as
docs/daily-service.md says."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from musictrend_dagster.core.service.serving import Selection
from musictrend_dagster.core.service.tracking import CHAMPION_ALIAS, Tracker, selection_tags
from musictrend_dagster.core.settings import REGISTERED_MODEL, Paths
from musictrend_dagster.defs.assets.monitoring import LIVE_CHECK
from musictrend_dagster.instance import DUCKDB_POOL, TRAINING_POOL, ensure_instance

DAILY_SERVICE = Path(__file__).resolve().parents[2] / "docs" / "daily-service.md"
DROP = "mars_tianchi_user_actions_{}.csv"
RAW = dg.AssetKey("raw_source")
DATA = {"raw_songs", "raw_user_actions", "model_features", "artist_daily"}  # some of the data layer
VINTAGE = {"forecast", "forecast_files", "submission", "forecast_monitoring"}


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A home and a competition raw folder (songs and bulk file); the definitions built on them."""
    monkeypatch.delenv("MUSICTREND_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./musictrend.toml: the built-in tianchi source
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "mars_tianchi_songs.csv").write_text("s1,a1,20150101,10,1,1\n")
    (raw / "mars_tianchi_user_actions.csv").write_text("u1,s1,1440892800,1,20150830\n")
    return _defs(tmp_path, raw), raw


def _defs(tmp_path: Path, raw: Path) -> dg.Definitions:
    from musictrend_dagster.definitions import build_defs

    return build_defs(Paths.from_env(home=tmp_path / "home", raw_dir=raw))


def register(registry, version: int, through: str, history_days: int) -> None:
    """What a retrain leaves in the MLflow registry, the one champion record: the version with its selection's
    tags (versions registered up to it first), and the champion alias on it."""
    from mlflow import MlflowClient

    Tracker(registry.tracking_uri, Path(registry.artifact_dir))  # the store, migrated once per home
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    if not client.search_registered_models(f"name = '{REGISTERED_MODEL}'"):
        client.create_registered_model(REGISTERED_MODEL)
    while len(client.search_model_versions(f"name = '{REGISTERED_MODEL}'")) < version:
        client.create_model_version(REGISTERED_MODEL, source=registry.artifact_dir)
    tags = selection_tags(Selection(version, date.fromisoformat(through), history_days, model="global_ensemble"))
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, str(version), key, value)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, str(version))


class Service:
    """Ticks of the automation sensor; the runs they request stood in for by the events a run leaves."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance, self.cursor = defs, instance, None
        self.graph = defs.resolve_asset_graph()

    def tick(self) -> dict[str, set]:
        """What one evaluation requests: asset -> partition keys (None: unpartitioned)."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {
            key.to_user_string(): set(result.get_requested_partitions(key))
            for key in self.graph.get_all_asset_keys()
            if result.get_num_requested(key)
        }

    def observe(self) -> dict:
        """Run the raw source's observation for real; its metadata and data version."""
        job = self.defs.get_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=self.instance, asset_selection=[RAW]).success
        (record,) = self.instance.fetch_observations(RAW, limit=1).records
        observation = record.asset_observation
        return {
            **{k: v.value for k, v in observation.metadata.items()},
            "version": observation.tags["dagster/data_version"],
        }

    def ran(self, requested: dict[str, set], through: str, history_days: int, version: int = 1) -> None:
        """The events the requested runs leave (metadata as the assets write it; a registration also the
        registry's record, which is what the automation reads)."""
        if "registered_champion" in requested:
            register((self.defs.resources or {})["mlflow"], version, through, history_days)
        for name, partitions in requested.items():
            metadata = {
                "model_features": {"data_through": through},
                "forecast": {"data_through": through, "history_days": history_days},
                "registered_champion": {
                    "model_version": version,
                    "data_through": through,
                    "history_days": history_days,
                },
            }.get(name, {})
            for partition in partitions:
                self.instance.report_runless_asset_event(
                    dg.AssetMaterialization(name, partition=partition, metadata=metadata)
                )

    def settle(self, through: str, history_days: int) -> None:
        """Tick, observe and 'run' until nothing more is requested (at most 8 ticks)."""
        for _ in range(8):
            requested = self.tick()
            if not requested:
                return
            if "raw_source" in requested:
                self.observe()
            self.ran({k: v for k, v in requested.items() if k != "raw_source"}, through, history_days)
        raise AssertionError(f"still requesting after 8 ticks: {requested}")


def test_a_new_drop_file_is_observed_ingested_then_forecast_and_an_unchanged_folder_requests_nothing(project, instance):
    defs, raw = project
    service = Service(defs, instance)
    first = service.tick()
    assert first == {"raw_source": {None}}, "the first evaluation observes the source, and only that"
    seen = service.observe()
    assert set(seen["stamps"]) == {"mars_tianchi_songs.csv", "mars_tianchi_user_actions.csv"}
    assert sorted(seen["hashed_this_time"]) == sorted(seen["stamps"]), "a first observation reads every file"
    service.settle(through="2015-08-30", history_days=100)  # the first data run, the champion, its vintage
    assert service.tick() == {}, "an unchanged folder: nothing, not even an observation"

    (raw / DROP.format("20150831")).write_text("u1,s1,1440979200,1,20150831\n")
    assert service.tick() == {"raw_source": {None}}
    seen = service.observe()
    assert seen["hashed_this_time"] == [DROP.format("20150831")], "unchanged files keep their hash, unread"
    assert seen["newest_drop_day"] == "2015-08-31"
    data = service.tick()
    assert set(data) >= DATA and not set(data) & VINTAGE, "the data layer runs on the new data version, in one tick"
    assert all(partitions == {None} for partitions in data.values())
    service.ran(data, through="2015-08-31", history_days=101)
    vintage = service.tick()
    assert vintage == {key: {"2015-09-01"} for key in VINTAGE}, "the vintage of the day after the new data"
    service.ran(vintage, through="2015-08-31", history_days=101)
    assert service.tick() == {}


def test_a_touched_file_is_observed_but_its_content_hash_runs_nothing(project, instance):
    defs, raw = project
    service = Service(defs, instance)
    service.settle(through="2015-08-30", history_days=100)
    before = service.observe()["version"]
    bulk = raw / "mars_tianchi_user_actions.csv"
    os.utime(bulk, ns=(bulk.stat().st_atime_ns, bulk.stat().st_mtime_ns + 10**9))
    assert service.tick() == {"raw_source": {None}}
    seen = service.observe()
    assert seen["hashed_this_time"] == ["mars_tianchi_user_actions.csv"] and seen["version"] == before
    assert service.tick() == {}, "the same data version: no ingest, no vintage"


def test_a_described_source_is_observed_too(tmp_path, monkeypatch, instance):
    """A `unique_id,ds,y` CSV described in musictrend.toml: the file at [source] path is what is observed."""
    data = tmp_path / "project"
    data.mkdir()
    plays = data / "plays.csv"
    plays.write_text("unique_id,ds,y\na1,2015-03-01,3\na2,2015-03-01,1\n")
    (data / "musictrend.toml").write_text('[source]\nkind = "daily"\npath = "plays.csv"\n')
    monkeypatch.setenv("MUSICTREND_CONFIG", str(data / "musictrend.toml"))
    service = Service(_defs(tmp_path, tmp_path / "no-raw-folder"), instance)
    assert service.tick() == {"raw_source": {None}}
    first = service.observe()
    assert list(first["stamps"]) == ["plays.csv"]
    service.settle(through="2015-03-01", history_days=1)
    assert service.tick() == {}

    with plays.open("a") as f:
        f.write("a1,2015-03-02,4\n")
    assert service.tick() == {"raw_source": {None}}
    assert service.observe()["version"] != first["version"]
    assert "raw_songs" in service.tick(), "the new data version runs the ingest"


def _retrain(instance, monkeypatch, tmp_path, raw) -> Service:
    """A home whose champion v4 was selected on 100 days through 2015-08-30, with data (features) in place."""
    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "7")
    service = Service(_defs(tmp_path, raw), instance)
    service.settle(through="2015-08-30", history_days=100)
    service.ran({"registered_champion": {None}}, through="2015-08-30", history_days=100, version=4)
    return service


def _models(requested: dict[str, set]) -> set[str]:
    return {name for name in requested if name.startswith("backtest/") or "champion" in name}


def _vintage(service: Service, through: str, history_days: int) -> None:
    """A daily run's vintage: data through `through` (its partition is the day after)."""

    from musictrend_dagster.defs.partitions import vintage_key

    service.ran({"forecast": {vintage_key(date.fromisoformat(through))}}, through, history_days)


def test_retraining_is_requested_exactly_when_the_cadence_growth_or_warning_says_so(
    project, instance, monkeypatch, tmp_path
):
    """One case per rule and a not-due case; the cadence is the service resource's dg.EnvVar, read on every
    evaluation (changing the variable changes the decision, no code change, no reload)."""
    _, raw = project
    service = _retrain(instance, monkeypatch, tmp_path, raw)
    graph = service.graph
    every_model = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "models"}

    _vintage(service, "2015-09-05", 106)  # 6 days on, +6%: not due
    assert _models(service.tick()) == set()

    _vintage(service, "2015-09-06", 107)  # 7 days of new data: the weekly cadence
    assert _models(service.tick()) == every_model, "backtests, selection and registration in one tick"
    assert _models(service.tick()) == set(), "requested once for the same data and champion"

    monkeypatch.setenv("MUSICTREND_RETRAIN_EVERY_DAYS", "0")  # cadence off; the other rules still count
    service.ran({"registered_champion": {None}}, through="2015-09-06", history_days=107, version=5)
    _vintage(service, "2015-09-20", 121)
    assert _models(service.tick()) == set(), "+13% and no cadence: not due"
    _vintage(service, "2015-10-08", 140)  # +31%
    assert _models(service.tick()) == every_model

    service.ran({"registered_champion": {None}}, through="2015-10-08", history_days=140, version=6)
    _vintage(service, "2015-10-09", 141)
    assert _models(service.tick()) == set()
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("forecast_monitoring"),
            check_name=LIVE_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"model_version": 6, "verdict": "global_ensemble v6: live f_norm 0.61 vs backtest 0.75"},
        )
    )
    assert _models(service.tick()) == every_model, "monitoring's warning on the current champion"


def test_a_warning_about_an_older_champion_retrains_nothing(project, instance, monkeypatch, tmp_path):
    _, raw = project
    service = _retrain(instance, monkeypatch, tmp_path, raw)
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("forecast_monitoring"),
            check_name=LIVE_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"model_version": 3, "verdict": "v3 degraded"},
        )
    )
    _vintage(service, "2015-08-31", 101)
    assert _models(service.tick()) == set()


def _made_by(instance, run, key: dg.AssetKey) -> None:
    """A materialisation of `key` by the step of `run` that makes it (what a run's step leaves)."""
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData

    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=run.job_name,
        event_specific_data=StepMaterializationData(dg.AssetMaterialization(key)),
    )
    instance.report_dagster_event(event, run_id=run.run_id)


def test_a_retrain_already_running_is_not_requested_again_between_its_backtests(
    project, instance, monkeypatch, tmp_path
):
    """A retrain in progress ("Materialize all" in the UI, or one the automation launched): a backtest it has
    made is no longer in progress for Dagster, yet the retrain is. A tick then must not start a second one
    (the UI's run and a duplicate backtest both logged to MLflow); once the run registers, nothing is due."""
    _, raw = project
    service = _retrain(instance, monkeypatch, tmp_path, raw)
    _vintage(service, "2015-09-06", 107)  # 7 days of new data: due
    graph = service.graph
    models = sorted(k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "models")
    job = service.defs.resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(job, asset_selection=frozenset(models))  # plans every model asset
    assert _models(service.tick()) == set(), "every model asset is in progress"

    first = next(k for k in models if k.to_user_string().startswith("backtest/"))
    _made_by(instance, run, first)
    assert _models(service.tick()) == set(), f"{first.to_user_string()} made, its retrain still running"

    for key in models[1:]:
        _made_by(instance, run, key)
    register((service.defs.resources or {})["mlflow"], 5, "2015-09-06", 107)
    assert _models(service.tick()) == set(), "the run registered v5 on this data: not due"


def test_the_automation_sensor_runs_by_default_and_the_hand_built_sensors_are_gone():
    from musictrend_dagster.definitions import defs

    sensors = list(defs.sensors or [])
    assert [s.name for s in sensors] == ["automation"]
    (sensor,) = sensors
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert RAW in sensor.asset_selection.resolve(graph)
    assert graph.get(RAW).is_observable
    assert graph.get(dg.AssetKey("raw_songs")).parent_keys == {RAW}


def test_the_sensor_itself_requests_the_observation_and_records_every_evaluation(project, instance):
    """The code path the daemon calls in the code server: one run request (the observation, tagged), an
    evaluation recorded for every asset (what the Automation tab lists), nothing on the next tick."""
    defs, _ = project
    sensor = defs.resolve_sensor_def("automation")
    repository = defs.get_repository_def()
    first = sensor(dg.build_sensor_context(instance=instance, repository_def=repository))
    assert [request.asset_selection for request in first.run_requests] == [[RAW]]
    assert first.run_requests[0].tags["musictrend/trigger"] == "automation"
    assert {e.key for e in first.automation_condition_evaluations} == defs.resolve_asset_graph().get_all_asset_keys()
    again = sensor(dg.build_sensor_context(instance=instance, repository_def=repository, cursor=first.cursor))
    assert again.run_requests == []


def test_the_daily_job_has_no_backtest():
    """daily_forecast is every asset but the models group (no backtest, no selection), with the monitoring;
    refresh_all (retraining) is the whole graph; neither observes the raw source (automation does)."""
    from musictrend_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    everything = graph.get_all_asset_keys() - {RAW}
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
    from musictrend_dagster.core.settings import ConfigError, check_environment
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


def test_stamps_are_json_the_observation_can_read_back(project, instance):
    """The per-file stamps the next observation reuses are plain JSON in the observation's metadata."""
    defs, _ = project
    service = Service(defs, instance)
    stamps = service.observe()["stamps"]
    assert json.loads(json.dumps(stamps)) == stamps
    assert all(len(v) == 3 and len(v[2]) == 32 for v in stamps.values())  # size, mtime_ns, XXH3-128 hex
