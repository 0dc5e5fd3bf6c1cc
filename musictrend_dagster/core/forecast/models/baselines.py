"""Constant-level baselines: cheap, hard to beat on daily plays, and the yardstick for every other model.

Both repeat one level per artist over the whole horizon, computed from the last `window`
days of the fitted history; the forecast starts after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar, cast

import polars as pl

from musictrend_dagster.core.forecast.features import require_columns
from musictrend_dagster.core.forecast.metric import c_star_expr
from musictrend_dagster.core.forecast.models.base import (
    FORECAST_SCHEMA,
    FitInfo,
    InsufficientHistory,
    forecast_offset,
    hyperparameters,
)


@dataclass(eq=False)
class _WindowLevelForecaster:
    """Shared fit/predict: fit reduces each artist's last `window` days to one level and keeps only the levels
    (not the history: at 10^5 series that is gigabytes per fitted model); predict repeats them."""

    name: ClassVar[str]
    window: int

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be a positive number of days, got {self.window}")
        self._levels: pl.DataFrame | None = None  # one row per artist: artist_id, plays
        self._range: tuple[date, date] | None = None  # the fitted history's first and last day

    def _level(self, plays: pl.Expr) -> pl.Expr:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Hyperparameters plus the training range (None before fit)."""
        first, last = self._range or (None, None)
        return {
            **hyperparameters(self),
            "train_start": first.isoformat() if first else None,
            "train_end": last.isoformat() if last else None,
        }

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        """Each artist's level over its last `window` days; songs carry nothing a constant level can use."""
        require_columns(history, ["artist_id", "ds", "plays"], f"{self.name}: history")
        frame = (
            history.select(
                pl.col("artist_id").cast(pl.String),
                pl.col("ds").cast(pl.Date),
                pl.col("plays").cast(pl.Float64),
            )
            .drop_nulls()
            .sort("artist_id", "ds")
        )
        if not frame.height:
            raise InsufficientHistory(f"{self.name}: history is empty")
        self._range = cast(date, frame["ds"].min()), cast(date, frame["ds"].max())
        self._levels = (
            frame.group_by("artist_id", maintain_order=True)
            .agg(plays=self._level(pl.col("plays").tail(self.window)))
            .with_columns(pl.col("plays").clip(lower_bound=0.0))
        )
        return FitInfo()

    def observe(self, history: pl.DataFrame, songs: pl.DataFrame) -> None:
        """A level has no weights: reading the newer history is all a fit does."""
        self.fit(history, songs)

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        """Every artist seen in fit at its level, days start..start+horizon-1 (after the fitted history)."""
        if self._levels is None or self._range is None:
            raise RuntimeError(f"{self.name}: predict() called before fit()")
        if horizon < 1:
            raise ValueError(f"horizon must be positive, got {horizon}")
        forecast_offset(self._range[1], start)
        days = pl.DataFrame({"ds": [start + timedelta(days=k) for k in range(horizon)]}, schema={"ds": pl.Date})
        return (
            self._levels.join(days, how="cross")
            .select(list(FORECAST_SCHEMA))
            # polars types a schema's keys invariantly (str | Selector | ...): a plain dict[str, ...] never matches
            .cast(FORECAST_SCHEMA)  # type: ignore[arg-type]
            .sort("artist_id", "ds")
        )


class MedianForecaster(_WindowLevelForecaster):
    """Median of the last `window` days: robust to the one-day spikes that dominate this data."""

    @property  # the base declares name a class attribute; the median's name depends on its window
    def name(self) -> str:  # type: ignore[override]
        return f"median{self.window}"

    def _level(self, plays: pl.Expr) -> pl.Expr:
        return plays.median()


@dataclass(eq=False)
class BestConstantForecaster(_WindowLevelForecaster):
    """The constant minimising the metric's relative error on the window: c = sum(1/x) / sum(1/x^2).

    The score punishes over-forecasting low days, so this sits below mean and median.
    Days with 0 plays are floored at 1 so they count as the hardest possible day, not infinity.
    """

    name: ClassVar[str] = "best_constant"
    window: int = 60

    def _level(self, plays: pl.Expr) -> pl.Expr:
        return c_star_expr(plays)
