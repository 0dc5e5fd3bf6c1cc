"""What the raw source holds, as a data version: what the raw asset's observation reports.

The source's files are listed as ingest lists them (``rawdir.list_raw_dir`` for the competition's
folder, ``rawdir.list_source`` for a source described in ``musictrend.toml``). Each file's content
hash is the lake's own (``rawdir.scan``: XXH3-128 of the decompressed bytes, the value ingest records
in ``ingested_files.content_hash``). A file whose size and mtime are those of the previous observation
keeps its recorded hash without being read, so observing an unchanged source costs one ``stat`` per
file. The data version hashes every file's source name and content hash, and the source description
(not its path): touching a file, or replacing it by its own gzip, leaves the version as it was.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import xxhash

from musictrend_dagster.core.data.rawdir import IngestError, Listing, is_gzip, list_raw_dir, list_source, scan
from musictrend_dagster.core.data.source import Config


@dataclass(frozen=True)
class Stamp:
    """One file as observed: its size and mtime (what says it is unchanged) and its content hash."""

    size: int
    mtime_ns: int
    hash: str


@dataclass(frozen=True)
class Observation:
    version: str  # the data version: changes exactly when a file's content, the set of files or the description does
    files: dict[str, Stamp]  # by source name
    hashed: list[str]  # the files read (hashed) this time: new or changed size/mtime
    newest_day: date | None  # the newest drop file's day (competition folder), None otherwise
    problems: list[str]  # files ingest will refuse, named (they are left out of the version)


def listing(config: Config, raw_dir: str | os.PathLike) -> Listing:
    """The source's files, as ingest lists them (raises ``IngestError`` naming a missing folder or file)."""
    if config.source.kind == "tianchi":
        return list_raw_dir(config.source.path or raw_dir)
    if config.source.path is None:
        raise IngestError(f"{config.where('source', 'path')}: missing")
    return list_source(config.source.path, config.source.kind, config.catalogue.path if config.catalogue else None)


def stat_key(config: Config, raw_dir: str | os.PathLike) -> str:
    """A cheap key of the source (names, sizes, mtimes; no file read): equal keys, nothing to observe.

    A source that cannot be listed keys as its error, so a persisting problem is observed (and named) once.
    """
    try:
        found = listing(config, raw_dir)
    except IngestError as exc:
        return "error: " + str(exc)
    h = xxhash.xxh3_128(repr(_described(config)).encode())
    for f in [found.songs, *found.actions]:
        if f is not None:
            st = os.stat(f.real)
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update("\n".join(found.errors).encode())
    return h.hexdigest()


def observe(config: Config, raw_dir: str | os.PathLike, previous: Mapping[str, Stamp]) -> Observation:
    """The source's data version; files whose size and mtime match ``previous`` are not read."""
    found = listing(config, raw_dir)
    files: dict[str, Stamp] = {}
    hashed: list[str] = []
    for f in [found.songs, *found.actions]:
        if f is None:
            continue
        st = os.stat(f.real)
        known = previous.get(f.name)
        if known is not None and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
            files[f.name] = known
            continue
        files[f.name] = Stamp(st.st_size, st.st_mtime_ns, scan(f.real, is_gzip(f.real)).hash)
        hashed.append(f.name)
    h = xxhash.xxh3_128(repr(_described(config)).encode())
    for name in sorted(files):
        h.update(f"{name}\0{files[name].hash}\n".encode())
    days = [f.day for f in found.actions if f.day is not None]
    return Observation(h.hexdigest(), files, hashed, max(days) if days else None, list(found.errors))


def _described(config: Config) -> tuple:
    """What of the description decides the data: kind, columns, formats (not where it lives)."""
    catalogue = (
        dataclasses.replace(config.catalogue, path=Path(config.catalogue.path.name)) if config.catalogue else None
    )
    return dataclasses.replace(config.source, path=None), catalogue
