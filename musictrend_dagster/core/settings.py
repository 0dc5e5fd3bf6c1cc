"""Where musictrend keeps its state: one home folder, overridable by environment.

Pure Python (no Dagster import) so the CLI, the core and the tests share one answer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ACTIONS_PREFIX = "mars_tianchi_user_actions"
SONGS_FILE = "mars_tianchi_songs.csv"
SUBMISSION_FILE = "mars_tianchi_artist_plays_predict.csv"
MLFLOW_EXPERIMENT = "musictrend"
MLFLOW_MONITORING_EXPERIMENT = "musictrend-monitoring"  # one run per registered version: its live scores
REGISTERED_MODEL = "musictrend-forecaster"
MAX_QUARANTINE_SHARE_VAR = "MUSICTREND_MAX_QUARANTINE_SHARE"
RETRAIN_EVERY_DAYS_VAR = "MUSICTREND_RETRAIN_EVERY_DAYS"
MLFLOW_UI_URL_VAR = "MUSICTREND_MLFLOW_UI_URL"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
ENGINE_VAR = "MUSICTREND_ENGINE"
SPARK_MASTER_VAR = "MUSICTREND_SPARK_MASTER"
HORIZON_VAR = "MUSICTREND_HORIZON"
DEFAULT_HORIZON = 60  # the competition's
MAX_HORIZON = 365
FORECASTS_CSV, FORECASTS_PARQUET = "forecasts.csv", "forecasts.parquet"
ENGINES = ("duckdb", "spark")
CHAMPION_METRIC_VAR = "MUSICTREND_CHAMPION_METRIC"
BACKTEST_WORKERS_VAR = "MUSICTREND_BACKTEST_WORKERS"  # processes a backtest's origins run in ("auto": the cores)
BACKTEST_MAX_ORIGINS_VAR = "MUSICTREND_BACKTEST_MAX_ORIGINS"  # origins of the backtest plan at most
MAX_BACKTEST_ORIGINS = 12
MODELS_VAR = "MUSICTREND_MODELS"  # the candidates, comma-separated (default: musictrend.toml's, else every model)
CHAMPION_METRICS = ("f_norm", "wape")  # the official score (higher is better), or WAPE (lower is better)
# What Spark accepts as a master (local[N], local[*], local[N,F], spark://, yarn, k8s://) or a Spark Connect URL.
_SPARK_MASTER_RE = re.compile(r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|(spark|k8s|sc)://\S+|yarn")


class ConfigError(ValueError):
    """A configuration value or a configured path is unusable; the message names the variable or path."""


def parse_max_quarantine_share(raw: str) -> float:
    """The share of quarantined action lines above which the run stops (0..1)."""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{MAX_QUARANTINE_SHARE_VAR} must be a number between 0 and 1, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"{MAX_QUARANTINE_SHARE_VAR} must be a number between 0 and 1, got {raw!r}")
    return value


def parse_retrain_every_days(raw: str) -> int:
    """Days of new data after which the champion is re-chosen (0 = never on a cadence)."""
    if not raw.strip().isdigit():
        raise ConfigError(f"{RETRAIN_EVERY_DAYS_VAR} must be a whole number of days (0 = off), got {raw!r}")
    return int(raw)


def parse_mlflow_ui_url(raw: str) -> str:
    """Where the MLflow UI is served: every link to MLflow is built on it, and `musictrend mlflow-ui`
    serves there unless told otherwise."""
    raw = raw or DEFAULT_MLFLOW_UI_URL
    url = urlsplit(raw)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme not in {"http", "https"} or not url.hostname or port is None or url.path.strip("/"):
        raise ConfigError(f"{MLFLOW_UI_URL_VAR} must look like http://HOST:PORT, got {raw!r}")
    return f"{url.scheme}://{url.netloc}"


def parse_engine(raw: str) -> str:
    """Which engine runs the data layer (ingest and SQL models): duckdb or spark (case-insensitive)."""
    value = raw.strip().lower() or DEFAULTS[ENGINE_VAR]
    if value not in ENGINES:
        raise ConfigError(f"{ENGINE_VAR} must be one of {', '.join(ENGINES)}, got {value!r}")
    return value


def parse_spark_master(raw: str) -> str:
    """Where the Spark engine runs: local[*], spark://host:7077, yarn, k8s://..., or sc://... (Connect)."""
    value = raw.strip() or DEFAULTS[SPARK_MASTER_VAR]
    if not _SPARK_MASTER_RE.fullmatch(value):
        raise ConfigError(
            f"{SPARK_MASTER_VAR} must be a Spark master (local[*], local[2], spark://host:7077, yarn, "
            f"k8s://https://host:443) or a Spark Connect URL (sc://host:15002), got {value!r}"
        )
    return value


def parse_champion_metric(raw: str) -> str:
    value = raw.strip().lower() or "f_norm"
    if value not in CHAMPION_METRICS:
        raise ConfigError(f"{CHAMPION_METRIC_VAR} must be one of {', '.join(CHAMPION_METRICS)}, got {raw!r}")
    return value


def parse_horizon(raw: str) -> int:
    value = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= value <= MAX_HORIZON:
        raise ConfigError(f"{HORIZON_VAR} must be a whole number of days from 1 to {MAX_HORIZON}, got {raw!r}")
    return value


def parse_backtest_workers(raw: str) -> int:
    """Processes the origins of one backtest run in: a whole number >= 1, or `auto` (the cores this
    process may use)."""
    value = raw.strip().lower() or "auto"
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{BACKTEST_WORKERS_VAR} must be a whole number of processes (>= 1) or auto, got {raw!r}")
    return int(value)


def parse_backtest_max_origins(raw: str) -> int:
    """The backtest plan's origins at most (fewer for a large catalogue: each origin is one fit per model)."""
    value = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= value <= MAX_BACKTEST_ORIGINS:
        raise ConfigError(
            f"{BACKTEST_MAX_ORIGINS_VAR} must be a whole number of origins from 1 to {MAX_BACKTEST_ORIGINS}, "
            f"got {raw!r}"
        )
    return value


def parse_models(raw: str) -> tuple[str, ...] | None:
    """The candidate models' names, comma-separated (None for `all`: every model). Whether each name is a
    model, once, is the registry's check (core.forecast.models.registry.candidates)."""
    value = raw.strip() or "all"
    if value.lower() == "all":
        return None
    names = tuple(n.strip() for n in value.split(","))
    if "" in names:
        raise ConfigError(f"{MODELS_VAR} must be model names separated by commas, or all, got {raw!r}")
    return names


# Every setting read from the environment: its default and how it is checked. The Dagster resources
# take their fields from the same variables (dg.EnvVar), so the UI's Resources page names them.
DEFAULTS = {
    MAX_QUARANTINE_SHARE_VAR: "0.01",
    RETRAIN_EVERY_DAYS_VAR: "7",
    MLFLOW_UI_URL_VAR: DEFAULT_MLFLOW_UI_URL,
    ENGINE_VAR: "duckdb",
    SPARK_MASTER_VAR: "local[*]",
    CHAMPION_METRIC_VAR: "f_norm",
    HORIZON_VAR: str(DEFAULT_HORIZON),
    BACKTEST_WORKERS_VAR: "auto",
    BACKTEST_MAX_ORIGINS_VAR: "3",
    MODELS_VAR: "all",
}
PARSERS = {
    MAX_QUARANTINE_SHARE_VAR: parse_max_quarantine_share,
    RETRAIN_EVERY_DAYS_VAR: parse_retrain_every_days,
    MLFLOW_UI_URL_VAR: parse_mlflow_ui_url,
    ENGINE_VAR: parse_engine,
    SPARK_MASTER_VAR: parse_spark_master,
    CHAMPION_METRIC_VAR: parse_champion_metric,
    HORIZON_VAR: parse_horizon,
    BACKTEST_WORKERS_VAR: parse_backtest_workers,
    BACKTEST_MAX_ORIGINS_VAR: parse_backtest_max_origins,
    MODELS_VAR: parse_models,
}


def default_for(var: str) -> str:
    """A setting's value when its variable is unset: the project file's (``[forecast] horizon`` and
    ``models`` in musictrend.toml), else the built-in default."""
    if var in (HORIZON_VAR, MODELS_VAR):
        from musictrend_dagster.core.data.source import load_config  # lazy: core.data reads this module

        forecast = load_config().forecast
        if var == HORIZON_VAR:
            return str(forecast.horizon)
        return ",".join(forecast.models) if forecast.models else DEFAULTS[var]
    return DEFAULTS[var]


def raw_setting(var: str) -> str:
    """The variable's value in this process's environment, or its default."""
    return os.environ.get(var) or default_for(var)


def max_quarantine_share() -> float:
    return parse_max_quarantine_share(raw_setting(MAX_QUARANTINE_SHARE_VAR))


def retrain_every_days() -> int:
    return parse_retrain_every_days(raw_setting(RETRAIN_EVERY_DAYS_VAR))


def mlflow_ui_url() -> str:
    return parse_mlflow_ui_url(raw_setting(MLFLOW_UI_URL_VAR))


def engine() -> str:
    return parse_engine(raw_setting(ENGINE_VAR))


def spark_master() -> str:
    return parse_spark_master(raw_setting(SPARK_MASTER_VAR))


def champion_metric() -> str:
    """The backtest score that picks the champion: f_norm (the official score, default) or wape."""
    return parse_champion_metric(raw_setting(CHAMPION_METRIC_VAR))


def horizon() -> int:
    """Days ahead every forecast covers, 1..365 (default 60): the backtest windows, the models' curves,
    the interval calibration and the served vintage all follow it."""
    return parse_horizon(raw_setting(HORIZON_VAR))


def backtest_workers() -> int:
    return parse_backtest_workers(raw_setting(BACKTEST_WORKERS_VAR))


def backtest_max_origins() -> int:
    return parse_backtest_max_origins(raw_setting(BACKTEST_MAX_ORIGINS_VAR))


def candidate_models() -> tuple[tuple[str, ...] | None, str]:
    """The models named as candidates (None: every model) and where they were named, for messages:
    MUSICTREND_MODELS, else musictrend.toml's ``[forecast] models`` (also when the Dagster resources
    have copied the file's list into the variable)."""
    from musictrend_dagster.core.data.source import load_config  # lazy: core.data reads this module

    raw = raw_setting(MODELS_VAR).strip() or DEFAULTS[MODELS_VAR]
    config = load_config()
    from_file = raw == default_for(MODELS_VAR) and config.forecast.models is not None
    return parse_models(raw), config.where("forecast", "models") if from_file else MODELS_VAR


def writes_submission() -> bool:
    """Whether the competition's submission file is written: only for the tianchi source (its artists)."""
    from musictrend_dagster.core.data.source import load_config  # lazy: core.data reads this module

    return load_config().source.kind == "tianchi"


def check_environment() -> None:
    """Fail at start, naming the variable, rather than deep inside a run."""
    for var, parse in PARSERS.items():
        parse(raw_setting(var))


@dataclass(frozen=True)
class Paths:
    """Every location the project reads or writes, derived from MUSICTREND_HOME."""

    home: Path
    raw_dir: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None, raw_dir: str | os.PathLike | None = None) -> Paths:
        home_path = Path(home or os.environ.get("MUSICTREND_HOME") or ".musictrend").expanduser().resolve()
        raw = raw_dir or os.environ.get("MUSICTREND_RAW_DIR") or home_path / "raw"
        return cls(home=home_path, raw_dir=Path(raw).expanduser().resolve())

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster").resolve()

    @property
    def mlflow_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def output_dir(self) -> Path:
        return self.home / "output"

    @property
    def submission(self) -> Path:
        return self.output_dir / SUBMISSION_FILE
