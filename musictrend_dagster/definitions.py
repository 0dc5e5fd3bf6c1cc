"""The one Definitions object: assets by group (ingest, transform, features, models, forecast,
monitoring), their checks, resources, the two jobs (daily path, full path) and the automation that runs
the service (each asset's automation condition, evaluated by the `automation` sensor)."""

import dagster as dg

from musictrend_dagster.core.forecast.models.registry import candidates
from musictrend_dagster.core.settings import Paths, writes_submission
from musictrend_dagster.defs.assets.features import model_features
from musictrend_dagster.defs.assets.forecast import forecast, forecast_files, submission
from musictrend_dagster.defs.assets.ingest import raw_songs, raw_source_asset, raw_user_actions
from musictrend_dagster.defs.assets.models import model_assets
from musictrend_dagster.defs.assets.monitoring import forecast_monitoring
from musictrend_dagster.defs.assets.registry import registered_champion
from musictrend_dagster.defs.assets.transform import transform_assets
from musictrend_dagster.defs.automation import (
    RawSourceChanged,
    automation_sensor,
    daily_forecast,
    refresh_all,
    with_automation,
)
from musictrend_dagster.defs.checks import guard_checks
from musictrend_dagster.defs.resources import default_resources


def build_defs(paths: Paths) -> dg.Definitions:
    """Definitions whose resources point at `paths` (tests build their own on a temporary home); the
    competition submission is an asset only where the source is the competition's."""
    tianchi = writes_submission()
    resources = default_resources(paths)
    assets = with_automation(
        [
            raw_songs,
            raw_user_actions,
            *transform_assets,
            model_features,
            *model_assets(candidates()),
            registered_champion,
            forecast,
            forecast_files,
            *([submission] if tianchi else []),
            forecast_monitoring,
        ],
        resources["service"],
        resources["mlflow"],
    )
    return dg.Definitions(
        assets=[raw_source_asset(RawSourceChanged(str(paths.raw_dir))), *assets],
        asset_checks=guard_checks,
        jobs=[daily_forecast, refresh_all],
        sensors=[automation_sensor],
        resources=resources,
        # Steps are serialised by the duckdb/training pools anyway; one process per run saves a
        # Python + TensorFlow start-up per step on a 2-core machine.
        executor=dg.in_process_executor,
    )


defs = build_defs(Paths.from_env())
