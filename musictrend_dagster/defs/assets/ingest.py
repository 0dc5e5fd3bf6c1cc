"""Ingest group: the raw CSVs into DuckDB with an explicit schema; bad lines to quarantine."""

from pathlib import Path

import dagster as dg

from musictrend_dagster.core import ingest
from musictrend_dagster.core.data import query
from musictrend_dagster.defs.metadata import preview
from musictrend_dagster.defs.resources import WarehouseResource
from musictrend_dagster.instance import DUCKDB_POOL
from musictrend_dagster.settings import SONGS_FILE


def _report_metadata(reports: list[ingest.LoadReport]) -> dict:
    lines = sum(r.lines_read for r in reports)
    loaded = sum(r.loaded for r in reports)
    quarantined = sum(r.quarantined for r in reports)
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, n in r.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    table = ["| file | lines | loaded | quarantined | unchanged, skipped |", "|---|---|---|---|---|"]
    table += [f"| {r.file} | {r.lines_read:,} | {r.loaded:,} | {r.quarantined:,} | {r.skipped_unchanged} |" for r in reports]
    return {
        "lines_read": lines,
        "loaded": loaded,
        "quarantined": quarantined,
        "quarantine_reasons": dg.MetadataValue.json(reasons),
        "files": dg.MetadataValue.md("\n".join(table)),
    }


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "csv"},
    pool=DUCKDB_POOL,
    description="mars_tianchi_songs.csv loaded as read into `raw_songs`; bad lines in `quarantine_songs`.",
)
def raw_songs(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        report = ingest.load_songs(con, Path(warehouse.raw_dir) / SONGS_FILE)
        rows = con.execute("SELECT count(*) FROM raw_songs").fetchone()[0]
    context.log.info(f"songs: {report.loaded:,} loaded, {report.quarantined:,} quarantined")
    return dg.MaterializeResult(metadata={**_report_metadata([report]), "dagster/row_count": rows})


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "csv"},
    pool=DUCKDB_POOL,
    deps=[raw_songs],
    description=(
        "Every mars_tianchi_user_actions*.csv (the bulk file and daily drops) loaded once each into "
        "`raw_user_actions`; lines that break the contract go to `quarantine_user_actions` with file, "
        "line, raw text and reason. Loaded + quarantined = lines read."
    ),
)
def raw_user_actions(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    def progress(rows: int) -> None:
        context.log.info(f"ingest: {rows:,} action rows loaded so far")

    with warehouse.connect() as con:
        # The songs file was loaded by raw_songs: ingest_raw_dir skips it as unchanged.
        reports = ingest.ingest_raw_dir(con, Path(warehouse.raw_dir), progress=progress)[1:]
        rows = con.execute("SELECT count(*) FROM raw_user_actions").fetchone()[0]
        head = query(con, "SELECT * FROM raw_user_actions LIMIT 10")
        quarantine = query(con, "SELECT * FROM quarantine_user_actions ORDER BY source_file, line_no LIMIT 10")
    for r in reports:
        context.log.info(f"{r.file}: {r.loaded:,} loaded, {r.quarantined:,} quarantined" + (" (unchanged, skipped)" if r.skipped_unchanged else ""))
    metadata = {**_report_metadata(reports), "dagster/row_count": rows, "preview": preview(head)}
    if not quarantine.is_empty():
        metadata["quarantine_preview"] = preview(quarantine)
    return dg.MaterializeResult(metadata=metadata)
