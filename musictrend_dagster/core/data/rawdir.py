"""The raw folder as ingest sees it: which entries are raw files, and what each one holds.

Naming contract (anything else that looks like a raw file gets a warning naming it):

    mars_tianchi_songs.csv[.gz]                  the song catalogue
    mars_tianchi_user_actions.csv[.gz]           the bulk action log
    mars_tianchi_user_actions_YYYYMMDD.csv[.gz]  one day's drop (a real date)

A file and its gzip are one source: ``source_file`` is always the name without ``.gz``, so
replacing a file by its own gzip changes nothing, and having both is an error naming both.
A symlink is followed only when its target stays inside the raw folder. Paths are read as
given (never glob-expanded: see ``lake.literal_path``).

What a file holds is known without reading it when its identity (size, mtime_ns, ctime_ns,
inode, device) is unchanged: no tool can rewrite a file in place and restore its ctime. A
file whose identity changed is read once to hash its decompressed bytes; only a different
hash reloads it. A load counts lines and hashes in the same pass (``ContentScan``).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import cast

import xxhash

from musictrend_dagster.core.data.contract import (
    MAX_LINE_BYTES,
    QUARANTINED_TEXT_BYTES,
    SAFE_BYTES,
    RawFormat,
    unquoted_name,
)
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
Compression = bool | str  # True: gzip, "zstd", False: none (what ``is_gzip`` found)
SOURCE_SUFFIXES = (".csv", ".csv.gz", ".csv.zst", ".parquet")
_BOM = b"\xef\xbb\xbf"
_SONGS_RE = re.compile(re.escape(SONGS_FILE) + r"(\.gz)?")
_BULK_RE = re.compile(re.escape(ACTIONS_PREFIX) + r"\.csv(\.gz)?")
_DROP_RE = re.compile(re.escape(ACTIONS_PREFIX) + r"_(\d{8})\.csv(\.gz)?")
_LOOKS_RAW = re.compile(r"(?i).*(mars_tianchi.*|\.csv|\.csv\.gz|\.tsv)")
_OTHER_DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}
NAMING_CONTRACT = f"{SONGS_FILE}, {ACTIONS_PREFIX}.csv or {ACTIONS_PREFIX}_YYYYMMDD.csv, each optionally .gz"


class IngestError(Exception):
    """A file (or the raw folder) cannot be ingested; the message names it (and the line)."""


@dataclass(frozen=True)
class RawFile:
    name: str  # the source name: the file name without .gz
    path: Path  # the entry in the raw folder
    real: Path  # what is read: the entry, or its symlink target inside the folder
    kind: str  # "songs" | "actions" (tianchi); "songs" | "events" | "daily" (a described source)
    day: date | None = None  # a drop file's day
    fmt: RawFormat | None = None  # a described source's file: its format (from its own columns)

    def identity(self) -> tuple[int, int, int, int, int]:
        st = os.stat(self.real)
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


@dataclass
class Listing:
    """Songs file, action files (bulk first, then drops by day), and what was wrong with the rest."""

    songs: RawFile | None  # None: a described source without a catalogue
    actions: list[RawFile]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # sources an error keeps as they were (never removed)


def list_raw_dir(raw_dir: str | os.PathLike) -> Listing:
    raw = Path(raw_dir)
    try:
        names = sorted(os.listdir(raw))
    except FileNotFoundError:
        raise IngestError(
            f"{raw}: raw folder not found (it should hold {SONGS_FILE} and {ACTIONS_PREFIX}.csv)"
        ) from None
    except NotADirectoryError:
        raise IngestError(f"{raw}: not a folder") from None
    except PermissionError:
        raise IngestError(f"{raw}: cannot list the raw folder (permission denied)") from None
    inside = raw.resolve()
    found: dict[str, list[RawFile]] = {}
    warnings: list[str] = []
    errors: list[str] = []
    held: set[str] = set()
    for name in names:
        if name.startswith("."):
            continue
        path = raw / name
        kind, day = _classify(name)
        if kind is None:
            if _LOOKS_RAW.fullmatch(name):
                warnings.append(f"{path}: ignored, the name does not follow the naming contract ({NAMING_CONTRACT})")
            continue
        source = name.removesuffix(".gz")
        if kind == "bad_day":
            errors.append(f"{path}: the date in the name is not a real day (expected {ACTIONS_PREFIX}_YYYYMMDD.csv)")
            held.add(source)
            continue
        real = path.resolve()
        if path.is_symlink() and not real.is_relative_to(inside):
            errors.append(f"{path}: refused, it is a symlink to {real}, outside the raw folder")
            held.add(source)
            continue
        if not real.is_file():
            errors.append(f"{path}: refused, not a regular file")
            held.add(source)
            continue
        found.setdefault(source, []).append(RawFile(source, path, real, kind, day))
    songs: RawFile | None = None
    actions: list[RawFile] = []
    for source, twins in found.items():
        if len(twins) > 1:
            errors.append(
                f"{' and '.join(str(t.path) for t in twins)}: the same file twice (plain and gzip); keep one of them"
            )
            held.add(source)
            continue
        (f,) = twins
        if f.kind == "songs":
            songs = f
        else:
            actions.append(f)
    if songs is None and SONGS_FILE not in held:
        raise IngestError(f"{raw / SONGS_FILE}: songs file not found")
    if not any(f.day is None for f in actions) and f"{ACTIONS_PREFIX}.csv" not in held:
        raise IngestError(f"{raw / (ACTIONS_PREFIX + '.csv')}: bulk actions file not found")
    if songs is None:
        raise IngestError("\n".join(errors))
    actions.sort(key=lambda f: (f.day or date.min, f.name))
    return Listing(songs, actions, warnings, errors, held)


def _classify(name: str) -> tuple[str | None, date | None]:
    if _SONGS_RE.fullmatch(name):
        return "songs", None
    if _BULK_RE.fullmatch(name):
        return "actions", None
    if m := _DROP_RE.fullmatch(name):
        digits = m.group(1)
        try:
            return "actions", date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            return "bad_day", None
    return None, None


# --------------------------------------------------------------------------- content


def is_gzip(path: Path) -> Compression:
    """The file's compression by its first bytes: True (gzip), "zstd", or False (none)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return True if head[:2] == _GZIP_MAGIC else "zstd" if head == _ZSTD_MAGIC else False


def duckdb_compression(gz: Compression) -> str:
    return {True: "gzip", "zstd": "zstd"}.get(gz, "none")


def open_bytes(path: Path, gz: Compression) -> io.BufferedIOBase:
    if gz == "zstd":
        import zstandard

        # closefd: closing the reader (the caller's `with`) closes the file
        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
        return cast(io.BufferedIOBase, reader)  # read, readinto and close: all that is used
    return gzip.open(path, "rb") if gz else open(path, "rb")


# 1 for a byte that could break a screened rule; a CR is checked apart (it is fine before a LF).
_UNSAFE = bytes(0 if b in SAFE_BYTES or b == 0x0D else 1 for b in range(256))


@dataclass(frozen=True)
class Content:
    lines: int
    hash: str
    safe: bool  # every byte in contract.SAFE_BYTES (a CR only before a LF)


def scan(path: Path, gz: Compression) -> Content:
    """Lines, content hash and the safe-bytes screen, in one pass over the decompressed bytes.

    Lines as a person counts them: newline-terminated, plus an unterminated last one. One
    reused 1 MiB buffer stays in cache and allocates nothing per chunk. The hash is XXH3-128:
    it identifies content for change detection (not a security boundary: whoever writes the raw
    folder decides its content anyway) at a quarter of SHA-256's CPU, which the engine's scan
    beside it runs short of. The screen (one ``bytes.translate``) lets the engine skip the
    character rules, a regex per field, on files that cannot break them.
    """
    n, last, safe, cr_before = 0, None, True, False
    h = xxhash.xxh3_128()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open_bytes(path, gz) as f:
        while size := f.readinto(buf):
            chunk = buf if size == len(buf) else view[:size].tobytes()
            n += chunk.count(b"\n")
            h.update(chunk)
            if safe:
                if cr_before and chunk[0] != 0x0A:
                    safe = False
                cr_before = chunk[-1] == 0x0D
                crs = chunk.count(b"\r")
                lone_crs = crs and crs - chunk.count(b"\r\n") - cr_before  # most files hold no CR at all
                safe = safe and lone_crs == 0 and 1 not in chunk.translate(_UNSAFE)
            last = buf[size - 1]
    return Content(n + (last is not None and last != 0x0A), h.hexdigest(), safe and not cr_before)


class ContentScan(threading.Thread):
    """``scan`` in the background, beside the engine's read; ``result()`` re-raises its failure."""

    def __init__(self, path: Path, gz: Compression) -> None:
        super().__init__(daemon=True)
        self.path, self.gz = path, gz
        self.value: Content | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = scan(self.path, self.gz)
        except BaseException as exc:  # handed to the caller in result()
            self.error = exc

    def result(self) -> Content:
        self.join()
        if self.error is not None:
            raise IngestError(f"{self.path}: cannot read it: {self.error}") from self.error
        assert self.value is not None
        return self.value


def check_delimiter(path: Path, gz: Compression, n_fields: int) -> None:
    """Fail fast, naming the file, when the first non-empty line uses another delimiter."""
    for line_no, line, _ in iter_lines(path, gz):
        text = line.decode("utf-8", "replace")
        if not text.strip():
            continue
        if text.count(",") != n_fields - 1:
            for delim, name in _OTHER_DELIMITERS.items():
                if text.count(delim) == n_fields - 1:
                    raise IngestError(
                        f"{path}: line {line_no} is delimited by {name}, expected ',' "
                        f"({n_fields} comma-separated columns, no header)"
                    )
        return


def iter_lines(path: Path, gz: Compression) -> Iterator[tuple[int, bytes, int]]:
    """(1-based line number, the line without its terminator, its length in bytes).

    A line longer than MAX_LINE_BYTES is cut to its first QUARANTINED_TEXT_BYTES bytes (its
    length stays exact), so one endless line never has to fit in memory.
    """
    line_no = 0
    carry = bytearray()
    carry_len = 0
    with open_bytes(path, gz) as f:
        while chunk := f.read(1 << 20):
            parts = chunk.split(b"\n")
            for i, part in enumerate(parts):
                if i == len(parts) - 1:  # no newline after it (yet)
                    carry_len += len(part)
                    if len(carry) <= MAX_LINE_BYTES:
                        carry += part[: MAX_LINE_BYTES + 1 - len(carry)]
                    break
                line_no += 1
                if carry_len:
                    whole = bytes(carry) + part[: max(0, MAX_LINE_BYTES + 1 - len(carry))]
                    length = carry_len + len(part)
                    carry, carry_len = bytearray(), 0
                else:
                    whole, length = part, len(part)
                yield _finish(line_no, whole, length)
    if carry_len:
        yield _finish(line_no + 1, bytes(carry), carry_len)


def _finish(line_no: int, line: bytes, length: int) -> tuple[int, bytes, int]:
    if line_no == 1 and line.startswith(_BOM):
        line, length = line[len(_BOM) :], length - len(_BOM)
    if line.endswith(b"\r") and length <= MAX_LINE_BYTES:
        line, length = line[:-1], length - 1
    if length > MAX_LINE_BYTES:
        line = line[:QUARANTINED_TEXT_BYTES]
    return line_no, line, length


# --------------------------------------------------------------------------- described sources


def list_source(path: Path, kind: str, catalogue: Path | None) -> Listing:
    """The files of a described source (``core.data.source``): ``path`` is a file or a folder.

    A folder is walked to any depth (a Hive-partitioned one too) in name order; its files named
    like data (``SOURCE_SUFFIXES``) are its files, other files are named in a warning. A file's
    source name is its path inside the folder (``dt=2026-11-30/part-0.parquet``), read as given.
    """
    path = Path(path)
    warnings: list[str] = []
    errors: list[str] = []
    files: list[RawFile] = []
    if path.is_file():
        candidates = [(path.name, path)]
        inside = path.parent.resolve()
    elif path.is_dir():
        inside = path.resolve()
        candidates = []
        for folder, dirs, names in os.walk(path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(names):
                if name.startswith((".", "_")):
                    continue
                full = Path(folder) / name
                rel = full.relative_to(path).as_posix()
                if catalogue is not None and full.resolve() == catalogue.resolve():
                    continue
                if not name.lower().endswith(SOURCE_SUFFIXES):
                    warnings.append(f"{full}: ignored, not a data file ({', '.join(SOURCE_SUFFIXES)})")
                    continue
                candidates.append((rel, full))
    else:
        raise IngestError(f"{path}: source path not found (an unmounted folder?)")
    held: set[str] = set()
    for name, full in candidates:
        real = full.resolve()
        if full.is_symlink() and not real.is_relative_to(inside):
            errors.append(f"{full}: refused, it is a symlink to {real}, outside the source folder")
            held.add(name)
            continue
        if not real.is_file():
            errors.append(f"{full}: refused, not a regular file")
            held.add(name)
            continue
        files.append(RawFile(name, full, real, kind))
    if not files and not errors:
        raise IngestError(f"{path}: no data files ({', '.join(SOURCE_SUFFIXES)}) found")
    songs = None
    if catalogue is not None:
        songs = RawFile(f"catalogue/{catalogue.name}", catalogue, catalogue.resolve(), "songs")
    return Listing(songs, files, warnings, errors, held)


def is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(".parquet")


def csv_header(path: Path) -> list[str]:
    """The first line's column names (a BOM and a CR dropped, quotes read); the file's columns by position."""
    for _, line, _ in iter_lines(path, is_gzip(path)):
        return [unquoted_name(c.strip()) for c in line.decode("utf-8", "replace").split(",")]
    return []
