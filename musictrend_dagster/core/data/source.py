"""The source description (``musictrend.toml``): what the input data is and how to read it.

Parsed and checked once (``load_config``) into frozen dataclasses; everything downstream (the
contract's rules, the listing of the source's files, the forecast's horizon) reads them. Found
as the file given by ``--config`` (``musictrend run/ingest/replay``), else ``$MUSICTREND_CONFIG``
(what the Dagster code location reads), else ``./musictrend.toml``; without any, the built-in
``tianchi`` source (the competition's raw folder, today's behaviour).

Every problem a key can have is a ``SourceError`` whose ONE message names the file and the key.
What only the data can tell (an absent column, a column of the wrong type throughout, a
``plays_when`` matching no row, a catalogue mapping no song) is checked by ``core.data.sources``
before anything is loaded.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CONFIG_NAME = "musictrend.toml"
CONFIG_ENV = "MUSICTREND_CONFIG"
KINDS = ("tianchi", "events", "daily")
SERIES_LEVELS = ("artist", "song")
# A daily source's optional counts beside plays (absent: 0), what the learned models also read.
EXTRA_COUNTS = ("downloads", "collects", "listeners")
TIME_FORMATS = ("iso", "epoch_s", "epoch_ms")
MAX_HORIZON = 365

_SOURCE_KEYS = {
    "tianchi": {"kind", "path"},
    "daily": {
        "kind",
        "path",
        "series",
        "series_is",
        "day",
        "day_format",
        "timezone",
        "plays",
        "downloads",
        "collects",
        "listeners",
    },
    "events": {
        "kind",
        "path",
        "user",
        "song",
        "artist",
        "time",
        "time_format",
        "timezone",
        "action",
        "plays_when",
        "downloads_when",
        "collects_when",
        "other_when",
    },
}
_CATALOGUE_KEYS = {"path", "song", "artist", "publish", "publish_format"}
_FORECAST_KEYS = {"horizon", "series_level", "models"}
_TABLES = {"source", "catalogue", "forecast"}


class SourceError(ValueError):
    """The source description cannot work; the message names the file and the key."""


@dataclass(frozen=True)
class Catalogue:
    """Song -> artist (and the publish date, where known)."""

    path: Path
    song: str = "song_id"
    artist: str = "artist_id"
    publish: str | None = None
    publish_format: str = "iso"


@dataclass(frozen=True)
class Source:
    kind: str  # tianchi | events | daily
    path: Path | None  # tianchi: the raw folder (None: $MUSICTREND_RAW_DIR); else a file or folder
    # daily
    series: str = "unique_id"
    day: str = "ds"
    day_format: str = "iso"
    plays: str = "y"
    downloads: str | None = None  # optional count columns (absent: 0 on every day)
    collects: str | None = None
    listeners: str | None = None  # distinct listeners of the series that day
    series_is: str | None = None  # "artist" | "song"; None: "song" with a [catalogue], else "artist"
    # events
    user: str = "user_id"
    song: str = "song_id"
    artist: str | None = None
    time: str = "time"
    time_format: str = "iso"
    action: str | None = None
    plays_when: tuple[str, ...] | None = None  # None: every row is a play
    downloads_when: tuple[str, ...] = ()
    collects_when: tuple[str, ...] = ()
    other_when: tuple[str, ...] = ()  # kept (a listener's action) but counted as no play
    # both
    timezone: str = "UTC"  # where a day begins


@dataclass(frozen=True)
class Forecast:
    horizon: int = 60
    series_level: str = "artist"
    models: tuple[str, ...] | None = None  # the candidates by name (None: every model)


@dataclass(frozen=True)
class Config:
    source: Source
    catalogue: Catalogue | None = None
    forecast: Forecast = Forecast()
    file: Path | None = None  # the musictrend.toml it came from (None: built in)

    def where(self, table: str, key: str) -> str:
        """How a message names a key: ``musictrend.toml [source] plays``."""
        return f"{self.file or '(built-in source)'}: [{table}] {key}"


BUILTIN = Config(Source("tianchi", None))


def find_config(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Path | None:
    """The file to read: ``explicit``, else ``$MUSICTREND_CONFIG``, else ``./musictrend.toml`` (None: built in)."""
    for given, what in ((explicit, "--config"), (os.environ.get(CONFIG_ENV) or None, CONFIG_ENV)):
        if given:
            path = Path(given).expanduser().resolve()
            if not path.is_file():
                raise SourceError(f"{path}: source description not found (given by {what})")
            return path
    local = (cwd or Path.cwd()) / CONFIG_NAME
    return local.resolve() if local.is_file() else None


def load_config(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Config:
    """The source description in force (see ``find_config``), parsed and checked."""
    path = find_config(explicit, cwd)
    return BUILTIN if path is None else parse_file(path)


def parse_file(path: Path) -> Config:
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)


def parse(data: dict, file: Path | None) -> Config:
    """Check every key once; relative paths are taken from the file's folder."""
    where = str(file or "(source description)")
    base = file.parent if file else Path.cwd()
    for table in data:
        if table not in _TABLES:
            raise SourceError(f"{where}: unknown key [{table}] (expected [source], [catalogue], [forecast])")
        if not isinstance(data[table], dict):
            raise SourceError(f"{where}: {table} must be a table ([{table}])")
    src = data.get("source")
    if src is None:
        raise SourceError(f"{where}: [source] is missing (kind and path at least)")
    kind = src.get("kind")
    if kind not in KINDS:
        raise SourceError(f"{where}: [source] kind = {kind!r}: expected one of {', '.join(KINDS)}")
    _known(where, "source", src, _SOURCE_KEYS[kind], f"for kind = {kind!r}")
    if "path" not in src and kind != "tianchi":
        raise SourceError(f"{where}: [source] path is missing (a file, a folder or a Hive-partitioned folder)")
    fields = {k: v for k, v in src.items() if k not in ("kind", "path")}
    for key, value in fields.items():
        if key.endswith("_when"):
            if not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
                raise SourceError(f"{where}: [source] {key} must be a non-empty list of event names")
            fields[key] = tuple(value)
        elif not (isinstance(value, str) and value):
            raise SourceError(f"{where}: [source] {key} must be a non-empty string, got {value!r}")
    path = _path(where, "source", src, base) if "path" in src else None
    if path is not None and not path.exists():
        raise SourceError(f"{where}: [source] path = {src['path']!r}: {path} does not exist")
    source = Source(kind, path, **fields)
    if "timezone" in fields:
        try:
            ZoneInfo(source.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SourceError(f"{where}: [source] timezone = {source.timezone!r}: unknown time zone") from None
    for key in ("day_format", "time_format"):
        _check_format(where, "source", key, getattr(source, key))
    if kind == "events":
        if source.plays_when is None and (source.downloads_when or source.collects_when or source.other_when):
            raise SourceError(f"{where}: [source] plays_when is needed when other *_when lists are given")
        if source.plays_when is not None and source.action is None:
            raise SourceError(f"{where}: [source] action is missing (the column plays_when is matched against)")
        lists = {k: getattr(source, k) or () for k in ("plays_when", "downloads_when", "collects_when", "other_when")}
        seen: dict[str, str] = {}
        for key, names in lists.items():
            for name in names:
                if name in seen:
                    raise SourceError(f"{where}: [source] {key}: event {name!r} is also in {seen[name]}")
                seen[name] = key
    catalogue = None
    if "catalogue" in data:
        cat = data["catalogue"]
        _known(where, "catalogue", cat, _CATALOGUE_KEYS, "")
        if "path" not in cat:
            raise SourceError(f"{where}: [catalogue] path is missing")
        cpath = _path(where, "catalogue", cat, base)
        if not cpath.is_file():
            raise SourceError(f"{where}: [catalogue] path = {cat['path']!r}: {cpath} is not a file")
        extra = {k: v for k, v in cat.items() if k != "path"}
        for key, value in extra.items():
            if not (isinstance(value, str) and value):
                raise SourceError(f"{where}: [catalogue] {key} must be a non-empty string, got {value!r}")
        catalogue = Catalogue(cpath, **extra)
        _check_format(where, "catalogue", "publish_format", catalogue.publish_format)
        if kind == "tianchi":
            raise SourceError(f"{where}: [catalogue] is for events and daily sources (tianchi has its songs file)")
    fc = data.get("forecast", {})
    _known(where, "forecast", fc, _FORECAST_KEYS, "")
    horizon = fc.get("horizon", 60)
    if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_HORIZON:
        raise SourceError(
            f"{where}: [forecast] horizon = {horizon!r}: expected a whole number of days, 1..{MAX_HORIZON}"
        )
    level = fc.get("series_level", "artist")
    if level not in SERIES_LEVELS:
        raise SourceError(f"{where}: [forecast] series_level = {level!r}: expected artist or song")
    if kind == "tianchi" and level == "song":
        raise SourceError(f"{where}: [forecast] series_level = 'song' needs an events or daily source")
    models = fc.get("models")
    if models is not None:
        if not (isinstance(models, list) and models and all(isinstance(m, str) and m for m in models)):
            raise SourceError(f"{where}: [forecast] models = {models!r}: expected a list of model names")
        models = tuple(models)  # which names are models, once each: the registry's check
    if kind == "daily":
        source = _series_is(where, source, catalogue, level)
    if kind == "events" and level == "artist" and source.artist is None and catalogue is None:
        raise SourceError(f"{where}: [source] artist is missing (or give a [catalogue] mapping songs to artists)")
    return Config(source, catalogue, Forecast(horizon, level, models), file)


def _series_is(where: str, source: Source, catalogue: Catalogue | None, level: str) -> Source:
    """What a daily series is: an artist, or a song (mapped to its artist by the catalogue, or forecast itself).

    Per-song distinct listeners cannot be summed to an artist's (a listener of two songs counts once):
    a ``listeners`` column of song series forecast per artist is refused, never summed into a wrong number.
    """
    given = source.series_is
    if given is not None and given not in SERIES_LEVELS:
        raise SourceError(f"{where}: [source] series_is = {given!r}: expected artist or song")
    series_is = given or ("song" if catalogue is not None or level == "song" else "artist")
    if level == "song" and series_is != "song":
        raise SourceError(f"{where}: [source] series_is = 'artist' contradicts [forecast] series_level = 'song'")
    if series_is == "song" and level == "artist" and catalogue is None:
        raise SourceError(f"{where}: [source] series_is = 'song' needs a [catalogue] mapping songs to artists")
    if series_is == "song" and level == "artist" and source.listeners is not None:
        raise SourceError(
            f"{where}: [source] listeners = {source.listeners!r}: per-song distinct listeners cannot be summed "
            "to an artist's (a listener of two songs counts once); leave it out, or forecast songs "
            "(series_level = 'song')"
        )
    return replace(source, series_is=series_is)


def _known(where: str, table: str, values: dict, allowed: set[str], note: str) -> None:
    for key in values:
        if key not in allowed:
            raise SourceError(
                f"{where}: [{table}] {key}: unknown key{(' ' + note) if note else ''} "
                f"(known: {', '.join(sorted(allowed))})"
            )


def _path(where: str, table: str, values: dict, base: Path) -> Path:
    raw = values["path"]
    if not (isinstance(raw, str) and raw):
        raise SourceError(f"{where}: [{table}] path must be a non-empty string")
    return (base / Path(raw).expanduser()).resolve()


def _check_format(where: str, table: str, key: str, value: str) -> None:
    if value in TIME_FORMATS or "%" in value:
        return
    raise SourceError(
        f"{where}: [{table}] {key} = {value!r}: "
        "expected 'iso', 'epoch_s', 'epoch_ms' or a strptime format such as '%Y%m%d'"
    )


# --------------------------------------------------------------------------- musictrend init

EXAMPLES = {
    "daily": """\
# musictrend.toml: what the input is (see docs/your-own-data.md).
# Daily counts, one row per series and day. A file in the forecasting libraries' long
# format (columns unique_id, ds, y; ISO dates) needs only kind and path.
[source]
kind = "daily"
path = "data/plays.csv"        # a file, a folder, or a Hive-partitioned folder; .csv, .csv.gz, .csv.zst or .parquet
# series = "unique_id"         # the series id column (artist; or song, with [catalogue] or series_level = "song")
# day = "ds"                   # the day column
# day_format = "iso"           # "iso" (2026-11-30), a strptime format ("%Y%m%d"), "epoch_s" or "epoch_ms"
# plays = "y"                  # the count column (non-negative whole numbers)
# downloads = "downloads"      # optional counts beside plays (absent: 0); the learned models read
# collects = "collects"        #   downloads and distinct listeners too
# listeners = "listeners"      # distinct listeners of the series that day (not for songs forecast per artist)
# series_is = "artist"         # "artist" or "song" (default: "song" with [catalogue], else "artist")

# [catalogue]                  # optional: song -> artist, when the series are songs
# path = "data/songs.csv"
# song = "song_id"
# artist = "artist_id"

[forecast]
horizon = 60                   # days ahead, 1..365
series_level = "artist"        # artist | song
# models = ["median14", "best_constant", "global_direct"]  # the candidates (default: every model)
""",
    "events": """\
# musictrend.toml: what the input is (see docs/your-own-data.md).
# A listening log, one row per event.
[source]
kind = "events"
path = "data/events"           # a file, a folder, or a Hive-partitioned folder (dt=2026-11-30/part-0.parquet)
user = "user_id"
song = "song_id"
artist = "artist_id"           # optional when [catalogue] maps songs to artists
time = "played_at"
time_format = "iso"            # "iso" (with an offset: 2026-11-30T23:59:59+08:00), "epoch_s", "epoch_ms" or strptime
timezone = "UTC"               # where a day begins, e.g. "Asia/Shanghai"
action = "event"               # the event name column; absent (with plays_when): every row is a play
plays_when = ["play", "stream"]
# downloads_when = ["download"]
# collects_when = ["like"]
# other_when = ["skip"]        # kept as a listener's action, counted as no play; any other name is quarantined

# [catalogue]                  # optional: song -> artist (and publish date)
# path = "data/songs.csv"
# song = "song_id"
# artist = "artist_id"

[forecast]
horizon = 60                   # days ahead, 1..365
series_level = "artist"        # artist | song
# models = ["median14", "best_constant", "global_direct"]  # the candidates (default: every model)
""",
}


def write_example(folder: Path, kind: str) -> Path:
    """``musictrend init``: a commented example ``musictrend.toml`` (never over an existing one)."""
    target = Path(folder) / CONFIG_NAME
    if target.exists():
        raise SourceError(f"{target}: already exists (not overwritten)")
    target.write_text(EXAMPLES[kind], encoding="utf-8")
    return target
