"""The daily refresh: a 03:00 schedule over the whole graph and a sensor for new drop files."""

import json
import re
from pathlib import Path

import dagster as dg

from musictrend_dagster.defs.resources import WarehouseResource
from musictrend_dagster.settings import ACTIONS_PREFIX

DROP_FILE = re.compile(rf"^{ACTIONS_PREFIX}_(\d{{8}})\.csv(\.gz)?$")

refresh_all = dg.define_asset_job(
    "refresh_all",
    selection=dg.AssetSelection.all(),
    description="Ingest new raw files, rebuild SQL models and features, backtest every model, rewrite the submission.",
)

daily_refresh = dg.ScheduleDefinition(
    name="daily_refresh",
    job=refresh_all,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 03:00 (the code location's time zone): the whole graph.",
)


def new_drop_files(raw_dir: Path, seen: set[str]) -> list[str]:
    """Drop files in raw_dir not seen before, oldest day first."""
    if not raw_dir.is_dir():
        return []
    return sorted((p.name for p in raw_dir.iterdir() if DROP_FILE.match(p.name) and p.name not in seen),
                  key=lambda n: DROP_FILE.match(n).group(1))


@dg.sensor(
    job=refresh_all,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Starts a refresh when a new {ACTIONS_PREFIX}_YYYYMMDD.csv lands in MUSICTREND_RAW_DIR; each file triggers once.",
)
def new_drop_file_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    new = new_drop_files(Path(warehouse.raw_dir), seen)
    if not new:
        return dg.SkipReason("no new drop files")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=",".join(new), tags={"musictrend/drop_files": ",".join(new)})],
        cursor=json.dumps(sorted(seen | set(new))),
    )
