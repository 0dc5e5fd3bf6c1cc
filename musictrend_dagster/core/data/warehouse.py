"""The DuckDB warehouse file: connection settings and the DDL of every table the project owns.

The warehouse holds the bookkeeping (``ingested_files``, the lake manifest ``lake_files`` and
``lake_changes``, ``model_state``), the quarantine tables, the views ``raw_user_actions`` /
``raw_songs`` over the lake, and the SQL models' tables. Whatever engine ran, tools read
every table of the data layer here under its usual name.
"""

from __future__ import annotations

import os
import re
from typing import cast

import duckdb

DEFAULT_MEMORY_LIMIT = "4GB"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS quarantine_user_actions (
    source_file VARCHAR, line_no BIGINT, raw_line VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS quarantine_songs (
    source_file VARCHAR, line_no BIGINT, raw_line VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS ingested_files (
    file VARCHAR, kind VARCHAR, path VARCHAR, size BIGINT, mtime_ns BIGINT, ctime_ns BIGINT, inode UBIGINT,
    device UBIGINT, content_hash VARCHAR, songs_key VARCHAR, lines_read BIGINT, loaded BIGINT,
    quarantined BIGINT, reasons VARCHAR, recheck_on DATE, load_id VARCHAR, loaded_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS model_state (
    model VARCHAR, sql_hash VARCHAR, last_change BIGINT, built_at TIMESTAMP);
"""
# The lake's manifest (core.data.lake).
LAKE_SQL = """
CREATE TABLE IF NOT EXISTS lake_files (
    dataset VARCHAR, source_file VARCHAR, path VARCHAR, ds DATE, rows BIGINT, load_id VARCHAR);
CREATE SEQUENCE IF NOT EXISTS lake_change_seq;
CREATE TABLE IF NOT EXISTS lake_changes (
    seq BIGINT, dataset VARCHAR, ds DATE, source_file VARCHAR, change VARCHAR, changed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS lake_relations (
    name VARCHAR, dataset VARCHAR, columns VARCHAR, partition_by VARCHAR, sql VARCHAR);
CREATE TABLE IF NOT EXISTS lake_root (root VARCHAR);
"""
# Every forecast the service made, by vintage (its first forecast day) and the last day of data it read;
# `forecast` is the newest vintage, `forecasts` the same in the long format of output/forecasts.csv
# (unique_id, ds as in the input; the columns of FORECASTS_COLUMNS in core.service.outputs).
# A table of an earlier release gains data_through: its vintages read the days before them.
VINTAGES_SQL = """
CREATE TABLE IF NOT EXISTS forecast_vintages (
    vintage DATE, artist_id VARCHAR, ds DATE, plays DOUBLE, plays_lo DOUBLE, plays_hi DOUBLE, model VARCHAR,
    model_version INTEGER, data_through DATE);
ALTER TABLE forecast_vintages ADD COLUMN IF NOT EXISTS data_through DATE;
UPDATE forecast_vintages SET data_through = vintage - 1 WHERE data_through IS NULL;
CREATE OR REPLACE VIEW forecast AS
    SELECT artist_id, ds, plays, plays_lo, plays_hi, model, model_version, vintage FROM forecast_vintages
    WHERE vintage = (SELECT max(vintage) FROM forecast_vintages);
CREATE OR REPLACE VIEW forecasts AS
    SELECT artist_id AS unique_id, ds, plays AS forecast, plays_lo AS lo80, plays_hi AS hi80, model, model_version,
        data_through
    FROM forecast_vintages WHERE vintage = (SELECT max(vintage) FROM forecast_vintages);
"""
# The champion record of earlier releases: the MLflow registry holds it now (version tags and the
# `champion` alias, core/service/tracking.py), so a copy here could only disagree with it. Dropped.
_RETIRED = ("champion_selections",)
# Tables of the layout before the lake (raw rows stored in the warehouse): dropped once, the
# next ingest rebuilds everything from the raw folder.
_LEGACY = ("raw_user_actions", "raw_songs", "quarantine_user_actions", "quarantine_songs", "ingested_files")


def connect(db_path: str | os.PathLike, memory_limit: str = DEFAULT_MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """Open the warehouse with the settings the ingest speed and RSS figures assume."""
    con = duckdb.connect(str(db_path))
    con.execute(f"SET memory_limit = '{_checked_memory_limit(memory_limit)}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # else a polling thread draws on stderr of batch runs
    ensure_schema(con)
    return con


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse's own tables if absent (explicit types: nothing is guessed)."""
    legacy = cast(
        tuple,
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'raw_user_actions' "
            "AND table_type = 'BASE TABLE' AND table_schema = current_schema()"
        ).fetchone(),
    )[0]
    if legacy:
        for table in _LEGACY:
            con.execute(f"DROP TABLE IF EXISTS {table}")
    for table in _RETIRED:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(SCHEMA_SQL)


def _checked_memory_limit(value: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value.strip(), re.IGNORECASE):
        raise ValueError(f"memory_limit must look like '4GB', got {value!r}")
    return value.strip()
