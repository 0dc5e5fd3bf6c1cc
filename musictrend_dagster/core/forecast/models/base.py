"""The one interface every forecaster implements, so backtests treat them all alike."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any, Protocol

import polars as pl

# Forecast frames: one row per artist and forecast day; plays is a float >= 0.
FORECAST_SCHEMA = {"artist_id": pl.String, "ds": pl.Date, "plays": pl.Float64}


def forecast_offset(last_day: date, start: date) -> int:
    """Days between the end of the fitted history and `start`; refuses to forecast the past."""
    gap = (start - last_day).days - 1
    if gap < 0:
        raise ValueError(f"forecast start {start} is not after the last fitted day {last_day}")
    return gap


@dataclass
class FitInfo:
    """What a fit leaves behind for tracking: per-epoch losses (empty for baselines)."""

    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)


class InsufficientHistory(ValueError):
    """The history is too short for this model (or for any backtest): a reason to skip, not a bug."""


class Forecaster(Protocol):
    """fit() sees only the history it is given (`core.forecast.features.HISTORY_COLUMNS`, one row per artist
    and day); predict() never looks at anything else.

    observe() (models whose registry spec says `observes`) points a fitted model at a newer history
    without learning anything: predict() then forecasts from that history's last day with the
    weights fit() learned. On the history fit() saw it changes nothing. This is how the registered
    champion forecasts every day from the newest data without being retrained (core/service/serving.py).
    """

    @property
    def name(self) -> str: ...

    def params(self) -> dict[str, Any]: ...

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo: ...

    def observe(self, history: pl.DataFrame, songs: pl.DataFrame) -> None: ...

    def predict(self, start: date, horizon: int) -> pl.DataFrame: ...


def hyperparameters(model: Any) -> dict[str, Any]:
    """A dataclass model's constructor fields but its `on_epoch` hook: each model's params() core, written once."""
    return {f.name: getattr(model, f.name) for f in fields(model) if f.init and f.name != "on_epoch"}
