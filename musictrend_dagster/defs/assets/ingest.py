"""Ingest group: the raw CSVs validated into the Parquet lake (Hive-partitioned by day); bad lines to quarantine."""

from pathlib import Path
from typing import cast

import dagster as dg
import polars as pl

from musictrend_dagster.core.data import fingerprint, ingest, source
from musictrend_dagster.core.service.store import query
from musictrend_dagster.core.settings import engine
from musictrend_dagster.defs.metadata import preview
from musictrend_dagster.defs.resources import WarehouseResource
from musictrend_dagster.instance import DUCKDB_POOL

# The engine that runs the data layer, in the UI as a kind (the warehouse is DuckDB whatever runs).
KINDS = {engine(), "duckdb", "parquet"}


# The play data's rows in the lake, whatever the source: the competition's log, an event log, daily counts.
_PLAY_ROWS = (
    "(SELECT 1 FROM raw_user_actions UNION ALL SELECT 1 FROM raw_events UNION ALL SELECT 1 FROM raw_daily_plays)"
)


class RefreshConfig(dg.Config):
    """Launchpad option shared by the ingest and SQL model assets."""

    full_refresh: bool = False  # re-validate every raw file / rebuild every model from scratch


def _report_metadata(result: ingest.IngestResult, kind: str, warehouse: WarehouseResource) -> dict:
    """The asset's own files (songs, or the play data: actions, events or daily counts): per file and in total."""
    kinds = ("actions", "events", "daily") if kind == "actions" else (kind,)  # play data, whatever the source
    files = [r for r in result.files if r.kind in kinds]
    reasons: dict[str, int] = {}
    for r in files:
        for reason, n in r.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    table = pl.DataFrame(
        [(r.file, _status(r), r.lines_read, r.loaded, r.quarantined, r.removed) for r in files],
        schema={
            "file": pl.String,
            "status": pl.String,
            "lines": pl.Int64,
            "rows_in_lake": pl.Int64,
            "quarantined": pl.Int64,
            "rows_removed": pl.Int64,
        },
        orient="row",
    )
    worked = [r for r in files if r.status in ("loaded", "replaced")]
    metadata = {
        "summary": _summary(files),
        "loaded_this_run": sum(r.loaded for r in worked),
        **warehouse.engine_metadata,
        "lines_read": sum(r.lines_read for r in files if r.status != "removed"),
        "loaded": sum(r.loaded for r in files),
        "quarantined": sum(r.quarantined for r in files),
        "rows_removed": sum(r.removed for r in files),
        "removed_files": dg.MetadataValue.json([r.file for r in files if r.status == "removed"]),
        "quarantine_reasons": dg.MetadataValue.json(reasons),
        "files": preview(table, rows=table.height),
        "file_reports": dg.MetadataValue.json(
            [
                {
                    "file": r.file,
                    "status": r.status,
                    "lines_read": r.lines_read,
                    "loaded": r.loaded,
                    "quarantined": r.quarantined,
                    "removed": r.removed,
                }
                for r in files
            ]
        ),
        "warnings": dg.MetadataValue.json(result.warnings),
    }
    if result.garbage:
        metadata["crash_leftovers_deleted"] = dg.MetadataValue.json(result.garbage)
    return metadata


def _status(report: ingest.FileReport) -> str:
    """The file's status as a person reads it: an unchanged file was not read again."""
    return "unchanged, skipped" if report.status == "unchanged" else report.status


def _summary(files: list[ingest.FileReport]) -> str:
    """One line: how many files were loaded, replaced, removed, refused, or unchanged and skipped."""
    counts: dict[str, int] = {}
    for r in files:
        counts[_status(r)] = counts.get(_status(r), 0) + 1
    return "; ".join(f"{n} {status}" for status, n in counts.items()) + (
        f" ({len(files)} files)" if files else "no files"
    )


def _log(context: dg.AssetExecutionContext, result: ingest.IngestResult) -> None:
    for path in result.garbage:
        context.log.warning(f"deleted {path}: left in the lake by a run that was killed")
    for warning in result.warnings:
        context.log.warning(warning)
    for r in result.files:
        if r.status == "removed":
            context.log.warning(r.message)
        elif r.status == "unchanged":
            context.log.info(f"{r.file}: unchanged, skipped ({r.loaded:,} rows already in the lake)")
        elif r.status != "refused":
            context.log.info(
                f"{r.file}: {r.status}, {r.lines_read:,} lines, {r.loaded:,} loaded, "
                f"{r.quarantined:,} quarantined" + (f", {r.removed:,} old rows replaced" if r.removed else "")
            )


RAW_SOURCE = "raw_source"


def _previous_stamps(instance: dg.DagsterInstance) -> dict[str, fingerprint.Stamp]:
    """The files as the last observation recorded them (empty: never observed)."""
    records = instance.fetch_observations(dg.AssetKey(RAW_SOURCE), limit=1).records
    observation = records[0].asset_observation if records else None
    stamps = observation.metadata.get("stamps") if observation else None
    if stamps is None:
        return {}
    return {name: fingerprint.Stamp(*value) for name, value in cast(dict, stamps.value).items()}


def raw_source_asset(automation_condition: dg.AutomationCondition | None = None) -> dg.SourceAsset:
    """The raw source as an observable source asset, with the automation condition that observes it."""

    @dg.observable_source_asset(
        name=RAW_SOURCE,
        group_name="ingest",
        automation_condition=automation_condition,
        tags={"dagster/kind/csv": "", "dagster/kind/parquet": ""},
        description=(
            "The raw source as it stands: the competition's raw folder (MUSICTREND_RAW_DIR), or the file or folder "
            "at [source] path of musictrend.toml. Observed, never materialised: its data version is a hash of every "
            "file's content hash (the lake's XXH3-128 of the decompressed bytes) and of the source description; "
            "a file whose size and mtime are unchanged keeps its recorded hash without being read. A new data "
            "version is what makes the ingest run."
        ),
    )
    def raw_source(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> dg.ObserveResult:
        seen = fingerprint.observe(source.load_config(), warehouse.raw_dir, _previous_stamps(context.instance))
        for problem in seen.problems:
            context.log.warning(problem)
        context.log.info(f"raw_source: {len(seen.files)} files, {len(seen.hashed)} read; version {seen.version}")
        return dg.ObserveResult(
            data_version=dg.DataVersion(seen.version),
            metadata={
                "files": len(seen.files),
                "hashed_this_time": dg.MetadataValue.json(seen.hashed),
                "newest_drop_day": str(seen.newest_day) if seen.newest_day else "",
                "problems": dg.MetadataValue.json(seen.problems),
                "stamps": dg.MetadataValue.json(
                    {name: [s.size, s.mtime_ns, s.hash] for name, s in sorted(seen.files.items())}
                ),
            },
        )

    return raw_source


def _ingest(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, config: RefreshConfig, songs_only: bool
) -> tuple[ingest.IngestResult, int]:
    def progress(rows: int) -> None:
        context.log.info(f"ingest: {rows:,} action rows in the lake so far")

    with warehouse.connect() as con:
        try:
            result = ingest.ingest_raw_dir(
                con,
                Path(warehouse.raw_dir),
                warehouse.lake,
                full_refresh=config.full_refresh,
                songs_only=songs_only,
                progress=None if songs_only else progress,
                engine=warehouse.data_engine(),
                config=source.load_config(),  # $MUSICTREND_CONFIG, ./musictrend.toml, or the built-in tianchi
            )
        except ingest.IngestFailed as exc:
            _log(context, exc.result)
            raise
        table = "raw_songs" if songs_only else _PLAY_ROWS
        rows = cast(tuple, con.execute(f"SELECT count(*) FROM {table}").fetchone())[0]
    _log(context, result)
    return result, rows


@dg.asset(
    group_name="ingest",
    kinds=KINDS | {"csv"},
    pool=DUCKDB_POOL,
    deps=[RAW_SOURCE],
    description="mars_tianchi_songs.csv validated into the lake (`lake/songs/`), seen as the view `raw_songs`; "
    "bad lines in `quarantine_songs`.",
)
def raw_songs(
    context: dg.AssetExecutionContext, config: RefreshConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    result, rows = _ingest(context, warehouse, config, songs_only=True)
    return dg.MaterializeResult(metadata={**_report_metadata(result, "songs", warehouse), "dagster/row_count": rows})


@dg.asset(
    group_name="ingest",
    kinds=KINDS | {"csv"},
    pool=DUCKDB_POOL,
    deps=[raw_songs, RAW_SOURCE],
    description=(
        "The lake mirrors the raw folder: every mars_tianchi_user_actions*.csv[.gz] (the bulk file and daily "
        "drops) validated into `lake/user_actions/ds=YYYY-MM-DD/`, seen as the view `raw_user_actions`; new "
        "files loaded, changed ones replaced, removed ones' rows removed, each in one transaction. Lines "
        "that break the contract go to `quarantine_user_actions` with file, line, raw text and reason. "
        "Loaded + quarantined = lines read."
    ),
)
def raw_user_actions(
    context: dg.AssetExecutionContext, config: RefreshConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    result, rows = _ingest(context, warehouse, config, songs_only=False)
    with warehouse.connect() as con:
        head = query(con, "SELECT * FROM raw_user_actions LIMIT 10")
        quarantine = query(con, "SELECT * FROM quarantine_user_actions ORDER BY source_file, line_no LIMIT 10")
    metadata = {**_report_metadata(result, "actions", warehouse), "dagster/row_count": rows, "preview": preview(head)}
    if not quarantine.is_empty():
        metadata["quarantine_preview"] = preview(quarantine)
    return dg.MaterializeResult(metadata=metadata)
