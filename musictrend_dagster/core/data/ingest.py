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

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import cast

import duckdb
import pyarrow as pa

from musictrend_dagster.core.data import contract, lake
from musictrend_dagster.core.data.engines import Engine, Staged, duckdb_engine
from musictrend_dagster.core.data.lake import literal_path
from musictrend_dagster.core.data.rawdir import (
    IngestError,
    Listing,
    RawFile,
    csv_header,
    duckdb_compression,
    is_gzip,
    is_parquet,
    list_raw_dir,
    list_source,
    scan,
)
from musictrend_dagster.core.data.source import EXTRA_COUNTS, Config, SourceError

ProgressFn = Callable[[int], None]
_DATASET = {"songs": lake.SONGS, "actions": lake.USER_ACTIONS, "events": lake.EVENTS, "daily": lake.DAILY_PLAYS}
# Every play-data kind shares one quarantine table (source_file tells them apart): the checks read one.
_QUARANTINE = {
    "songs": "quarantine_songs",
    "actions": "quarantine_user_actions",
    "events": "quarantine_user_actions",
    "daily": "quarantine_user_actions",
}
_PLAY_KINDS = ("actions", "events", "daily")
SAMPLE_ROWS = 1000  # rows of each new file a column must have one good value in (else: the wrong column)

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
    config: Config | None = None,
) -> IngestResult:
    """Songs first, then removals, then the bulk file and every drop by day; one report per file.

    ``config`` is the source description (``core.data.source``): None or kind ``tianchi`` reads
    ``raw_dir`` as the competition's folder; ``events`` and ``daily`` read the described files
    (and catalogue), each checked against the description before anything is loaded.
    ``engine`` validates and writes each file (DuckDB when None).
    ``progress`` receives the running total of action rows in the lake from the files seen so far.
    Raises ``IngestFailed`` (after doing everything else) when any file could not be ingested.
    ``songs_only`` stops after the songs file (the action files' problems are left to the full run).
    """
    the_lake = lake.Lake(lake_dir)
    the_lake.ensure(con)
    garbage = [str(p) for p in the_lake.collect_garbage(con)]
    the_lake.refresh_views(con)
    previous = {row["file"]: row for row in _rows(con, "SELECT * FROM ingested_files")}
    if config is None or config.source.kind == "tianchi":
        listing = list_raw_dir(config.source.path if config and config.source.path else raw_dir)
    else:
        assert config.source.path is not None  # parse() requires a path for events and daily
        listing = list_source(
            config.source.path, config.source.kind, config.catalogue.path if config.catalogue else None
        )
        listing = check_source(con, config, listing, previous, full_refresh)
    run = _Run(con, the_lake, engine or duckdb_engine(), contract.today_utc8(now), full_refresh, previous)
    names = {f.name for f in [listing.songs, *listing.actions] if f is not None}
    run.hashes = {
        row["content_hash"]: name
        for name, row in previous.items()
        if row["kind"] == "actions" and name in names and row["lines_read"]
    }
    errors = list(listing.errors)
    reports = []

    def record(raw: RawFile, outcome: FileReport | IngestError) -> FileReport:
        if isinstance(outcome, IngestError):
            errors.append(str(outcome))
            outcome = FileReport(raw.name, raw.kind, "refused", message=str(outcome))
        reports.append(outcome)
        return outcome

    if listing.songs is not None:
        for raw, outcome in _ingest_in_order(run, [listing.songs]):
            record(raw, outcome)
    if songs_only:
        errors = [r.message for r in reports if r.status == "refused"]
        listing.warnings, listing.actions, names = [], [], set(previous)
    run.songs_key = _songs_key(con)
    for name in sorted(set(previous) - names - listing.held):
        reports.append(_remove(run, name))
    total = 0
    for raw, outcome in _ingest_in_order(run, listing.actions):
        total += record(raw, outcome).loaded
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


def _ingest_in_order(run: _Run, files: list[RawFile]) -> Iterator[tuple[RawFile, FileReport | IngestError]]:
    """Each file's report (or the error refusing it), in order. Up to `engine.concurrent_files` files are
    validated and written aside at once, each on its own cursor of the warehouse (DuckDB releases the GIL:
    a one-row-group Parquet file is one thread's scan, so files one after another leave cores idle); they
    are published one at a time, in order, on the run's connection, so the lake, the bookkeeping and the
    duplicate-content check see exactly the sequence a serial run makes."""
    width = max(1, run.engine.concurrent_files)
    pending: deque[tuple[RawFile, dict | None, tuple, FileReport | IngestError | Future]] = deque()
    queue = iter(files)
    with ThreadPoolExecutor(width, thread_name_prefix="stage") as pool:
        try:
            while True:
                while len(pending) < width and (raw := next(queue, None)) is not None:
                    pending.append(_start(run, raw, pool if width > 1 else None))
                if not pending:
                    return
                raw, prev, identity, outcome = pending.popleft()
                if isinstance(outcome, Future):
                    try:
                        load_id, staged = outcome.result()
                    except IngestError as exc:
                        yield raw, exc
                        continue
                    try:
                        outcome = _publish_staged(run, raw, prev, identity, load_id, staged)
                    except IngestError as exc:
                        outcome = exc
                yield raw, outcome
        finally:
            for *_, outcome in pending:  # a failure elsewhere: drop what was written aside and not published
                if isinstance(outcome, Future) and not outcome.cancel() and outcome.exception() is None:
                    run.lake.discard(outcome.result()[0])


def _start(
    run: _Run, raw: RawFile, pool: ThreadPoolExecutor | None
) -> tuple[RawFile, dict | None, tuple, FileReport | IngestError | Future]:
    """A file's unchanged report, its error, or its staging under way (in `pool`; inline without one)."""
    prev, identity = run.previous.get(raw.name), raw.identity()
    try:
        unchanged = _unchanged_load(run, raw, prev, identity)
    except IngestError as exc:
        return raw, prev, identity, exc
    if unchanged is not None:
        return raw, prev, identity, unchanged
    if pool is None:
        done: Future = Future()
        try:
            done.set_result(_stage(run, run.con, raw))
        except IngestError as exc:
            done.set_exception(exc)
        return raw, prev, identity, done
    return raw, prev, identity, pool.submit(_stage_on_cursor, run, raw)


def _unchanged_load(run: _Run, raw: RawFile, prev: dict | None, identity: tuple) -> FileReport | None:
    """The report of a file whose recorded load still stands (its identity updated if only that changed)."""
    if prev is None or run.full_refresh or not _still_valid(run, prev, raw):
        return None
    if identity == (prev["size"], prev["mtime_ns"], prev["ctime_ns"], prev["inode"], prev["device"]):
        return _unchanged(prev)
    if scan(raw.real, is_gzip(raw.real)).hash != prev["content_hash"]:
        return None
    run.con.execute(
        "UPDATE ingested_files SET path = $p, size = $s, mtime_ns = $m, ctime_ns = $c, inode = $i, "
        "device = $d WHERE file = $f",
        {**_where_it_is(raw, identity), "f": raw.name},
    )
    return _unchanged(prev)


def _where_it_is(raw: RawFile, identity: tuple) -> dict:
    """The file's path and identity (size, mtime, ctime, inode, device) as the bookkeeping's parameters."""
    return {"p": str(raw.path), **dict(zip("smcid", identity, strict=True))}


def _stage_on_cursor(run: _Run, raw: RawFile) -> tuple[str, Staged]:
    with run.con.cursor() as con:  # its own connection to the warehouse: temp tables and scans of its own
        return _stage(run, con, raw)


def _stage(run: _Run, con: duckdb.DuckDBPyConnection, raw: RawFile) -> tuple[str, Staged]:
    """The file validated and its good rows written aside under a new load id (discarded if this fails)."""
    load_id = lake.new_load_id()
    try:
        fmt = raw.fmt or contract.FORMATS[raw.kind]
        staged = run.engine.stage(con, fmt, raw, run.lake.staging_dir(load_id), run.today)
        staged.quarantine = same_key_lines(staged.quarantine, "row" if fmt.reader == "parquet" else "line")
    except BaseException:
        run.lake.discard(load_id)
        raise
    return load_id, staged


def _publish_staged(
    run: _Run, raw: RawFile, prev: dict | None, identity: tuple, load_id: str, staged: Staged
) -> FileReport:
    try:
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


def _load_key(run: _Run, raw: RawFile) -> str | None:
    """What a load depends on besides the file: the song ids (play data), and for a described source's
    file its format (the description's columns, formats, zone...): a changed description reloads it."""
    songs = run.songs_key if raw.kind in _PLAY_KINDS else ""
    if raw.fmt is None:
        return songs or None
    return hashlib.md5(f"{songs}|{raw.fmt!r}".encode()).hexdigest()


def _still_valid(run: _Run, prev: dict, raw: RawFile) -> bool:
    """A recorded load still stands unless the song ids changed under it or a future day has come."""
    if (raw.kind in _PLAY_KINDS or raw.fmt is not None) and prev["songs_key"] != _load_key(run, raw):
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
        _record_file(con, raw, identity, staged, _load_key(run, raw), load_id)
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
            **_where_it_is(raw, identity),
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


# --------------------------------------------------------------------------- described sources


def same_key_lines(quarantine: pa.Table, unit: str) -> pa.Table:
    """Fill in ``{same_key:K}`` in reasons: the lines (rows) of the other quarantined rows with the same K."""
    reasons = quarantine.column("reason").to_pylist()
    keys = [(m.group(1) if (m := contract.SAME_KEY_RE.search(r or "")) else None) for r in reasons]
    if not any(keys):
        return quarantine
    numbers = quarantine.column("line_no").to_pylist()
    by_key: dict[str, list[int]] = {}
    for key, n in zip(keys, numbers, strict=True):
        if key is not None:
            by_key.setdefault(key, []).append(n)
    filled = [
        r
        if key is None
        else contract.SAME_KEY_RE.sub(
            f"{unit} " + ", ".join(str(o) for o in sorted(by_key[key]) if o != n)
            if len(by_key[key]) > 1
            else f"a {unit} that is itself quarantined",
            r,
        )
        for r, key, n in zip(reasons, keys, numbers, strict=True)
    ]
    return quarantine.set_column(quarantine.schema.get_field_index("reason"), "reason", pa.array(filled, pa.string()))


def _columns(con: duckdb.DuckDBPyConnection, raw: RawFile) -> tuple[list[tuple[str, str]], str]:
    if is_parquet(raw.real):
        try:
            described = con.execute(
                "DESCRIBE SELECT * FROM read_parquet($p, hive_partitioning = false)", {"p": literal_path(raw.real)}
            ).fetchall()
        except duckdb.Error as exc:
            raise IngestError(f"{raw.path}: not a readable Parquet file: {exc}") from exc
        return [(row[0], row[1]) for row in described], "parquet"
    header = csv_header(raw.real)
    if not header or header == [""]:
        raise SourceError(f"{raw.path}: empty file: a CSV source file needs a header line naming its columns")
    return [(name, "VARCHAR") for name in header], "csv"


def _lines_sql(fmt: contract.RawFormat) -> str:
    from musictrend_dagster.core.data.engines.duckdb import csv_lines, parquet_lines

    return parquet_lines(fmt) if fmt.reader == "parquet" else csv_lines(fmt)


def _params(raw: RawFile) -> dict:
    params = {"path": literal_path(raw.real)}
    if not is_parquet(raw.real):
        params["compression"] = duckdb_compression(is_gzip(raw.real))
    return params


def check_source(
    con: duckdb.DuckDBPyConnection, config: Config, listing: Listing, previous: dict[str, dict], full_refresh: bool
) -> Listing:
    """Each file's format from its own columns, and what only the data can tell, before anything loads.

    Raises ONE ``SourceError`` naming the key and the file: a column the description names that
    the file lacks or holds in a type it cannot be read as; a column with no good value in a new
    file's first rows (the wrong column, or the wrong format); a ``plays_when`` matching no row of
    the new files; a catalogue that maps no song (series) of them. Files whose identity is as
    recorded are not read again (only their header or schema).
    """
    src = config.source
    files = []
    for raw in [listing.songs, *listing.actions]:
        if raw is None:
            continue
        columns, reader = _columns(con, raw)
        try:
            if raw.kind == "songs":
                fmt = contract.catalogue_format(config, columns, reader)
            else:
                fmt = contract.source_format(config, columns, reader)
        except contract.FormatError as exc:
            value = getattr(config.catalogue if exc.table == "catalogue" else src, exc.key)
            raise SourceError(f"{config.where(exc.table, exc.key)} = {value!r}: {raw.path}: {exc}") from None
        files.append(replace(raw, fmt=fmt))
    songs = files[0] if listing.songs is not None else None
    actions = files[1:] if songs is not None else files
    new = [f for f in actions if full_refresh or _changed(f, previous.get(f.name))]
    for raw in new:
        fmt = _fmt(raw)
        named = dict(fmt.named)
        counts = tuple((key, f"p_{key}") for key in EXTRA_COUNTS if getattr(src, key))
        probes = {"daily": (("day", "d"), ("plays", "pd"), *counts), "events": (("time", "g"),)}[raw.kind]
        select = ", ".join(f"count({derived}), count(*), min({named[key]})" for key, derived in probes)
        row = con.execute(
            f"SELECT {select} FROM (SELECT * FROM ({_lines_sql(fmt)}) LIMIT {SAMPLE_ROWS})", _params(raw)
        ).fetchone()
        assert row is not None  # an aggregate returns one row
        for i, (key, _) in enumerate(probes):
            good, seen, example = row[3 * i : 3 * i + 3]
            if seen and not good:
                raise SourceError(
                    f"{config.where('source', key)} = {getattr(src, key)!r}: {raw.path}: no value of the first "
                    f"{seen:,} rows reads as {_expected(config, key)} (e.g. {example!r}): the wrong column or format?"
                )
    if not new:
        return replace(listing, songs=songs, actions=actions)
    catalogue = config.catalogue
    mapped_key = "series" if src.kind == "daily" else "song"
    maps_songs = (src.series_is == "song" if src.kind == "daily" else not src.artist) and (
        config.forecast.series_level == "artist"
    )
    keys = (["action"] if src.kind == "events" and src.plays_when is not None else []) + (
        [mapped_key] if songs is not None and catalogue is not None and maps_songs else []
    )
    if not keys:
        return replace(listing, songs=songs, actions=actions)
    # One read of the new files for both checks, aggregated in DuckDB (a wrong column may hold millions of values).
    params = {f"{k}{i}": v for i, f in enumerate(new) for k, v in _params(f).items()}
    aggregates = []
    if "action" in keys:
        assert src.plays_when is not None
        wanted = ", ".join(_sql(n) for n in src.plays_when)
        aggregates += [f"count(*) FILTER (WHERE v0 IN ({wanted}))", "list(DISTINCT v0 ORDER BY v0)[1:20]"]
    if mapped_key in keys and songs is not None:
        cat = _fmt(songs)
        cat_sql = f"SELECT CAST({dict(cat.named)['song']} AS VARCHAR) FROM ({_lines_sql(cat)})"
        params |= {f"{k}_cat": v for k, v in _params(songs).items()}
        cat_sql = cat_sql.replace("$path", "$path_cat").replace("$compression", "$compression_cat")
        last = f"v{len(keys) - 1}"
        aggregates += [f"count(*) FILTER (WHERE {last} IN ({cat_sql}))", f"min({last})"]
    found = con.execute(f"SELECT {', '.join(aggregates)} FROM ({_union(new, keys)})", params).fetchone()
    assert found is not None  # an aggregate returns one row
    if "action" in keys:
        hits, names = found[0], found[1]
        if not hits:
            shown = ", ".join(repr(n) for n in names if n is not None) or "none"
            raise SourceError(
                f"{config.where('source', 'plays_when')} = {list(src.plays_when or ())!r}: matches no row of "
                f"{', '.join(str(f.path) for f in new[:3])}{' ...' if len(new) > 3 else ''} "
                f"(event names found: {shown})"
            )
    if mapped_key in keys and catalogue is not None:
        mapped, sample = found[-2], found[-1]
        if sample is not None and not mapped:
            raise SourceError(
                f"{config.where('catalogue', 'song')} = {catalogue.song!r}: {catalogue.path} maps no "
                f"{mapped_key} of the source (e.g. {sample!r} is not in it)"
            )
    return replace(listing, songs=songs, actions=actions)


def _sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fmt(raw: RawFile) -> contract.RawFormat:
    if raw.fmt is None:
        raise ValueError(f"{raw.path}: no format (check_source makes one per file)")
    return raw.fmt


def _union(files: list[RawFile], keys: list[str]) -> str:
    """Some columns (by their description keys) of every file, as text: for a DISTINCT over all of them."""
    return " UNION ALL ".join(
        (
            "SELECT "
            + ", ".join(f"CAST({dict(_fmt(f).named)[k]} AS VARCHAR) AS v{n}" for n, k in enumerate(keys))
            + f" FROM ({_lines_sql(_fmt(f))}) WHERE nfields = {_fmt(f).n_fields}"
        )
        .replace("$path", f"$path{i}")
        .replace("$compression", f"$compression{i}")
        for i, f in enumerate(files)
    )


def _expected(config: Config, key: str) -> str:
    src = config.source
    if key in ("plays", *EXTRA_COUNTS):
        return "a whole number"
    fmt = src.day_format if key == "day" else src.time_format
    return {"iso": "ISO-8601" + (" with an offset" if key == "time" else "")}.get(fmt, fmt)


def _changed(raw: RawFile, prev: dict | None) -> bool:
    if prev is None:
        return True
    return raw.identity() != (prev["size"], prev["mtime_ns"], prev["ctime_ns"], prev["inode"], prev["device"])
