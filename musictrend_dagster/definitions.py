"""The one Definitions object: assets by group (ingest, transform, features, models, forecast,
monitoring), their checks, resources, the two jobs (daily path, full path) and what starts them."""

import dagster as dg

from musictrend_dagster.core.settings import Paths, writes_submission
from musictrend_dagster.defs.assets.features import model_features
from musictrend_dagster.defs.assets.forecast import forecast, forecast_files, submission
from musictrend_dagster.defs.assets.ingest import raw_songs, raw_user_actions
from musictrend_dagster.defs.assets.models import backtest_assets, champion
from musictrend_dagster.defs.assets.monitoring import forecast_monitoring
from musictrend_dagster.defs.assets.registry import registered_champion
from musictrend_dagster.defs.assets.transform import transform_assets, transform_checks
from musictrend_dagster.defs.automation import (
    daily_forecast,
    new_drop_file_sensor,
    refresh_all,
    retrain_sensor,
)
from musictrend_dagster.defs.checks import guard_checks
from musictrend_dagster.defs.resources import default_resources


def build_defs(paths: Paths) -> dg.Definitions:
    """Definitions whose resources point at `paths` (tests build their own on a temporary home); the
    competition submission is an asset only where the source is the competition's."""
    tianchi = writes_submission()
    return dg.Definitions(
        assets=[
            raw_songs,
            raw_user_actions,
            *transform_assets,
            model_features,
            *backtest_assets,
            champion,
            registered_champion,
            forecast,
            forecast_files,
            *([submission] if tianchi else []),
            forecast_monitoring,
        ],
        asset_checks=[*transform_checks, *guard_checks],
        jobs=[daily_forecast, refresh_all],
        sensors=[new_drop_file_sensor, retrain_sensor],
        resources=default_resources(paths),
        # Steps are serialised by the duckdb/training pools anyway; one process per run saves a
        # Python + TensorFlow start-up per step on a 2-core machine.
        executor=dg.in_process_executor,
    )


defs = build_defs(Paths.from_env())
