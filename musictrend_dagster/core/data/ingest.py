"""Bring the lake up to date with the raw folder: after every run, the lake's rows are exactly
the contract-passing rows of the files now in the raw folder.

Per source file (see ``rawdir`` for what a source is):
- new: validated, staged and published (``lake``); its quarantined lines recorded;
- unchanged: skipped without reading it when its identity (size, mtime, ctime, inode,
  device) is as recorded; when the identity changed but the content hash did not (touched,
  copied back, replaced by its own gzip) only the identity is updated;
- changed (another content; for action files also a changed set of song ids, or a day that
  was in the future when it was loaded and has come since): replaced in one transaction;
- removed from the folder: its rows and quarantine entries removed in one transaction.
A drop whose content repeats another action file's is refused, naming both. Problems with
single files (refused, unreadable, wrong delimiter) do not stop the others: every other file
is brought up to date, then one ``IngestError`` lists them all. A missing songs or bulk file
stops everything before anything changes, so an unmounted raw folder never empties the lake.

The engine (``engines.duckdb`` by default, ``engines.spark``) only validates and writes aside;
publishing, bookkeeping and the mirror rules live here and in ``lake``, the same for any engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import cast

import duckdb
import pyarrow as pa

from musictrend_dagster.core.data import contract, lake
from musictrend_dagster.core.data.engines import Engine, Staged, duckdb_engine
from musictrend_dagster.core.data.rawdir import IngestError, RawFile, is_gzip, list_raw_dir, scan

ProgressFn = Callable[[int], None]
_DATASET = {"songs": lake.SONGS, "actions": lake.USER_ACTIONS}
_QUARANTINE = {"songs": "quarantine_songs", "actions": "quarantine_user_actions"}

__all__ = ["FileReport", "IngestError", "IngestResult", "ingest_raw_dir"]


@dataclass
class FileReport:
    file: str
    kind: str
    status: str  # "loaded" | "replaced" | "unchanged" | "removed" | "refused"
    lines_read: int = 0
    loaded: int = 0
    quarantined: int = 0
    removed: int = 0  # rows taken out of the lake: a removed file's, or a replaced file's old rows
    reasons: dict[str, int] = field(default_factory=dict)
    message: str = ""

    @property
    def skipped_unchanged(self) -> bool:
        return self.status == "unchanged"


@dataclass
class IngestResult:
    files: list[FileReport]
    warnings: list[str]
    errors: list[str]
    garbage: list[str]  # lake files a killed run had left, deleted at the start of this one

    def report(self, name: str) -> FileReport:
        return next(r for r in self.files if r.file == name)


class IngestFailed(IngestError):
    """Some files could not be brought up to date (the others were); carries the whole result."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__("\n".join(result.errors))
        self.result = result


@dataclass
class _Run:
    con: duckdb.DuckDBPyConnection
    lake: lake.Lake
    engine: Engine
    today: date
    full_refresh: bool
    previous: dict[str, dict]
    songs_key: str = ""
    hashes: dict[str, str] = field(default_factory=dict)  # content hash -> action source holding it


def ingest_raw_dir(
    con: duckdb.DuckDBPyConnection,
    raw_dir: str | os.PathLike,
    lake_dir: str | os.PathLike,
    *,
    full_refresh: bool = False,
    now: datetime | None = None,
    songs_only: bool = False,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
) -> IngestResult:
    """Songs first, then removals, then the bulk file and every drop by day; one report per file.

    ``engine`` validates and writes each file (DuckDB when None).
    ``progress`` receives the running total of action rows in the lake from the files seen so far.
    Raises ``IngestFailed`` (after doing everything else) when any file could not be ingested.
    ``songs_only`` stops after the songs file (the action files' problems are left to the full run).
    """
    the_lake = lake.Lake(lake_dir)
    the_lake.ensure(con)
    garbage = [str(p) for p in the_lake.collect_garbage(con)]
    the_lake.refresh_views(con)
    listing = list_raw_dir(raw_dir)
    previous = {row["file"]: row for row in _rows(con, "SELECT * FROM ingested_files")}
    run = _Run(con, the_lake, engine or duckdb_engine(), contract.today_utc8(now), full_refresh, previous)
    names = {f.name for f in [listing.songs, *listing.actions]}
    run.hashes = {
        row["content_hash"]: name
        for name, row in previous.items()
        if row["kind"] == "actions" and name in names and row["lines_read"]
    }
    errors = list(listing.errors)
    reports = []

    def attempt(raw: RawFile) -> None:
        try:
            reports.append(_ingest_file(run, raw))
        except IngestError as exc:
            errors.append(str(exc))
            reports.append(FileReport(raw.name, raw.kind, "refused", message=str(exc)))

    attempt(listing.songs)
    if songs_only:
        errors = [r.message for r in reports if r.status == "refused"]
        listing.warnings, listing.actions, names = [], [], set(previous)
    run.songs_key = _songs_key(con)
    for name in sorted(set(previous) - names - listing.held):
        reports.append(_remove(run, name))
    total = 0
    for raw in listing.actions:
        attempt(raw)
        total += reports[-1].loaded
        if progress:
            progress(total)
    result = IngestResult(reports, listing.warnings, errors, garbage)
    if errors:
        raise IngestFailed(result)
    return result


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[dict]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=False)) for row in cur.fetchall()]


def _songs_key(con: duckdb.DuckDBPyConnection) -> str:
    """What "unknown song_id" depends on: the set of song ids (not the rest of the catalogue)."""
    (key,) = cast(
        tuple,
        con.execute(
            "SELECT md5(coalesce(string_agg(song_id, ',' ORDER BY song_id), '')) "
            "FROM (SELECT DISTINCT song_id FROM raw_songs)"
        ).fetchone(),
    )
    return key


def _unchanged(prev: dict) -> FileReport:
    return FileReport(
        prev["file"],
        prev["kind"],
        "unchanged",
        prev["lines_read"],
        prev["loaded"],
        prev["quarantined"],
        reasons=json.loads(prev["reasons"]),
    )


def _ingest_file(run: _Run, raw: RawFile) -> FileReport:
    prev = run.previous.get(raw.name)
    identity = raw.identity()
    if prev is not None and not run.full_refresh and _still_valid(run, prev, raw):
        if identity == (prev["size"], prev["mtime_ns"], prev["ctime_ns"], prev["inode"], prev["device"]):
            return _unchanged(prev)
        if scan(raw.real, is_gzip(raw.real)).hash == prev["content_hash"]:
            run.con.execute(
                "UPDATE ingested_files SET path = $p, size = $s, mtime_ns = $m, ctime_ns = $c, inode = $i, "
                "device = $d WHERE file = $f",
                {
                    "p": str(raw.path),
                    "s": identity[0],
                    "m": identity[1],
                    "c": identity[2],
                    "i": identity[3],
                    "d": identity[4],
                    "f": raw.name,
                },
            )
            return _unchanged(prev)

    load_id = lake.new_load_id()
    staging = run.lake.staging_dir(load_id)
    try:
        staged = run.engine.stage(run.con, contract.FORMATS[raw.kind], raw, staging, run.today)
        if raw.kind == "actions" and staged.lines_read:
            other = run.hashes.get(staged.content_hash)
            if other is not None and other != raw.name:
                raise IngestError(
                    f"{raw.path}: refused, its content repeats {other}, which is already loaded "
                    "(the same drop saved under two names?)"
                )
        old_rows = _publish(run, raw, identity, staged, load_id)
    finally:
        run.lake.discard(load_id)
    if raw.kind == "actions":
        if prev is not None:
            run.hashes.pop(prev["content_hash"], None)
        if staged.lines_read:
            run.hashes[staged.content_hash] = raw.name
    return FileReport(
        raw.name,
        raw.kind,
        "replaced" if prev is not None else "loaded",
        staged.lines_read,
        staged.loaded,
        staged.quarantined,
        old_rows,
        staged.reasons(),
    )


def _still_valid(run: _Run, prev: dict, raw: RawFile) -> bool:
    """A recorded load still stands unless the song ids changed under it or a future day has come."""
    if raw.kind == "actions" and prev["songs_key"] != run.songs_key:
        return False
    return prev["recheck_on"] is None or run.today < prev["recheck_on"]


def _publish(run: _Run, raw: RawFile, identity: tuple, staged: Staged, load_id: str) -> int:
    """Swap the source's rows, quarantine and bookkeeping in ONE transaction; returns the rows it replaced."""
    dataset = _DATASET[raw.kind]
    placed = run.lake.place(dataset, raw.name, load_id, staged.files)
    con = run.con
    con.execute("BEGIN TRANSACTION")
    try:
        old_rows = cast(
            tuple,
            con.execute(
                "SELECT coalesce(sum(rows), 0) FROM lake_files WHERE dataset = $d AND source_file = $f",
                {"d": dataset.name, "f": raw.name},
            ).fetchone(),
        )[0]
        superseded = run.lake.swap(
            con, dataset, raw.name, load_id, placed, "replaced" if raw.name in run.previous else "loaded"
        )
        _replace_quarantine(con, raw.kind, raw.name, staged.quarantine)
        _record_file(con, raw, identity, staged, run.songs_key if raw.kind == "actions" else None, load_id)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        run.lake.delete([p for p, _, _ in placed])
        raise
    run.lake.delete(superseded)
    return int(old_rows)


def _replace_quarantine(con: duckdb.DuckDBPyConnection, kind: str, name: str, quarantine: pa.Table) -> None:
    table = _QUARANTINE[kind]
    con.execute(f"DELETE FROM {table} WHERE source_file = $f", {"f": name})
    if quarantine.num_rows:
        con.register("_quarantine_batch", quarantine)
        try:
            con.execute(f"INSERT INTO {table} SELECT $f, line_no, raw_line, reason FROM _quarantine_batch", {"f": name})
        finally:
            con.unregister("_quarantine_batch")


def _record_file(
    con: duckdb.DuckDBPyConnection, raw: RawFile, identity: tuple, staged: Staged, songs_key: str | None, load_id: str
) -> None:
    """Bookkeeping row, written inside the file's transaction so it commits with the data."""
    con.execute("DELETE FROM ingested_files WHERE file = $f", {"f": raw.name})
    con.execute(
        "INSERT INTO ingested_files VALUES ($f, $k, $p, $s, $m, $c, $i, $d, $h, $sk, $r, $l, $q, $why, $until, $load, "
        "now()::TIMESTAMP)",
        {
            "f": raw.name,
            "k": raw.kind,
            "p": str(raw.path),
            "s": identity[0],
            "m": identity[1],
            "c": identity[2],
            "i": identity[3],
            "d": identity[4],
            "h": staged.content_hash,
            "sk": songs_key,
            "r": staged.lines_read,
            "l": staged.loaded,
            "q": staged.quarantined,
            "why": json.dumps(staged.reasons()),
            "until": staged.recheck_on,
            "load": load_id,
        },
    )


def _remove(run: _Run, name: str) -> FileReport:
    """A source gone from the raw folder: its rows, quarantine entries and bookkeeping go, in one transaction."""
    prev = run.previous[name]
    dataset = _DATASET[prev["kind"]]
    con = run.con
    con.execute("BEGIN TRANSACTION")
    try:
        rows = cast(
            tuple,
            con.execute(
                "SELECT coalesce(sum(rows), 0) FROM lake_files WHERE dataset = $d AND source_file = $f",
                {"d": dataset.name, "f": name},
            ).fetchone(),
        )[0]
        superseded = run.lake.swap(con, dataset, name, None, [], "removed")
        con.execute(f"DELETE FROM {_QUARANTINE[prev['kind']]} WHERE source_file = $f", {"f": name})
        con.execute("DELETE FROM ingested_files WHERE file = $f", {"f": name})
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    run.lake.delete(superseded)
    run.hashes = {h: n for h, n in run.hashes.items() if n != name}
    return FileReport(
        name,
        prev["kind"],
        "removed",
        removed=int(rows),
        message=f"{name} is no longer in the raw folder: its {int(rows):,} rows were removed",
    )
