"""statsforecast's models as candidates like any other: what a user who knows the library would pick instead.

Each peer fits one statsforecast model over every artist at once (`StatsForecast(models=[...],
freq="D", n_jobs=...)`: numba-compiled, no Python loop over series), on log1p(plays) or on raw
plays. The log variant is back-transformed with expm1; raw forecasts are clipped at 0.

Log-scale guard: a log fit can diverge (AutoETS on log1p went to -40 on one tianchi artist,
i.e. a forecast of 0 plays for 60 days). Every log forecast is clipped, in log space, to the
range [min, max] of the artist's own log1p(plays) over its last `guard_days` days of history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar, cast

import polars as pl

from musictrend_dagster.core.forecast.features import require_columns
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA, FitInfo, InsufficientHistory, hyperparameters


@dataclass(eq=False)
class StatsPeer:
    """Shared fit/predict of the statsforecast peers; subclasses say which model (`_model`), its name and the
    scale (`log1p`: a class constant, so a model's registered name always says its scale)."""

    base_name: ClassVar[str]
    log1p: ClassVar[bool]
    season_length: int = 7
    guard_days: int = 28
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.season_length < 1 or self.guard_days < 1 or self.n_jobs < 1:
            raise ValueError(
                f"{self.base_name}: season_length, guard_days and n_jobs must be positive, got "
                f"{self.season_length}, {self.guard_days}, {self.n_jobs}"
            )
        self._fitted: Any = None
        self._last: date | None = None
        self._first: date | None = None
        self._guard: pl.DataFrame | None = None

    @property
    def name(self) -> str:
        return f"{self.base_name}_{'log1p' if self.log1p else 'raw'}"

    def _model(self) -> Any:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Hyperparameters plus the training range (None before fit)."""
        return {
            **hyperparameters(self),
            "log1p": self.log1p,
            "train_start": self._first.isoformat() if self._first else None,
            "train_end": self._last.isoformat() if self._last else None,
        }

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        """One StatsForecast fit over all artists' dense daily series (songs carry nothing these models use)."""
        from statsforecast import StatsForecast  # numba compiles on import: only when a peer is used

        require_columns(history, ["artist_id", "ds", "plays"], f"{self.name}: history")
        frame = (
            history.select(pl.col("artist_id").cast(pl.String), pl.col("ds").cast(pl.Date), pl.col("plays"))
            .drop_nulls()
            .sort("artist_id", "ds")
        )
        if frame.is_empty():
            raise InsufficientHistory(f"{self.name}: history is empty")
        lengths = frame.group_by("artist_id").agg(n=pl.len(), span=(pl.col("ds").max() - pl.col("ds").min()))
        gappy = lengths.filter(pl.col("span").dt.total_days() + 1 != pl.col("n"))
        if gappy.height:
            raise ValueError(
                f"{self.name}: history must have one row per artist and day without gaps; "
                f"{gappy.height} artists do not, e.g. {gappy['artist_id'][0]}"
            )
        self._first, self._last = cast(date, frame["ds"].min()), cast(date, frame["ds"].max())
        ends = frame.group_by("artist_id").agg(pl.col("ds").max()).filter(pl.col("ds") != self._last)
        if ends.height:
            raise ValueError(
                f"{self.name}: every artist's history must end on {self._last}; "
                f"{ends['artist_id'][0]} ends on {ends['ds'][0]}"
            )
        y = pl.col("plays").cast(pl.Float64)
        data = frame.select(
            unique_id="artist_id", ds=pl.col("ds").cast(pl.Datetime("us")), y=y.log1p() if self.log1p else y
        )
        self._guard = data.group_by("unique_id").agg(
            lo=pl.col("y").tail(self.guard_days).min(), hi=pl.col("y").tail(self.guard_days).max()
        )
        self._fitted = StatsForecast(models=[self._model()], freq="1d", n_jobs=self.n_jobs).fit(df=data)
        return FitInfo()

    def observe(self, history: pl.DataFrame, songs: pl.DataFrame) -> None:
        """Statistical models re-estimate on the newer history: a refit takes seconds."""
        self.fit(history, songs)

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        """Days start..start+horizon-1 for every artist seen in fit; start must be after the history."""
        if self._fitted is None or self._last is None or self._guard is None:
            raise RuntimeError(f"{self.name}: predict() called before fit()")
        if horizon < 1:
            raise ValueError(f"horizon must be positive, got {horizon}")
        gap = (start - self._last).days - 1
        if gap < 0:
            raise ValueError(f"{self.name}: forecasts start after the fitted history ({self._last}), got {start}")
        out = self._fitted.predict(h=gap + horizon)  # polars in (fit), polars out
        value = pl.col(out.columns[-1]).cast(pl.Float64).fill_nan(None)
        if self.log1p:
            value = value.clip(pl.col("lo"), pl.col("hi")).exp() - 1
        return (
            out.join(self._guard, on="unique_id", how="left")
            .select(
                artist_id=pl.col("unique_id").cast(pl.String),
                ds=pl.col("ds").cast(pl.Date),
                plays=value.fill_null(0.0).clip(lower_bound=0.0),
            )
            .filter(pl.col("ds") >= start, pl.col("ds") < start + timedelta(days=horizon))
            .cast(FORECAST_SCHEMA)
            .sort("artist_id", "ds")
        )


@dataclass(eq=False)
class AutoETSPeer(StatsPeer):
    """statsforecast AutoETS (error/trend/season chosen by AICc), weekly season."""

    base_name: ClassVar[str] = "auto_ets"

    def _model(self) -> Any:
        from statsforecast.models import AutoETS

        return AutoETS(season_length=self.season_length)


@dataclass(eq=False)
class AutoThetaPeer(StatsPeer):
    """statsforecast AutoTheta (theta variant chosen by MSE), weekly season."""

    base_name: ClassVar[str] = "auto_theta"

    def _model(self) -> Any:
        from statsforecast.models import AutoTheta

        return AutoTheta(season_length=self.season_length)


@dataclass(eq=False)
class SeasonalWindowAveragePeer(StatsPeer):
    """statsforecast SeasonalWindowAverage: each weekday the mean of its last `windows` same weekdays."""

    base_name: ClassVar[str] = "swa"
    windows: int = 4

    def _model(self) -> Any:
        from statsforecast.models import SeasonalWindowAverage

        return SeasonalWindowAverage(season_length=self.season_length, window_size=self.windows)


class AutoETSLog1p(AutoETSPeer):
    """AutoETS on log1p(plays)."""

    log1p = True


class AutoETSRaw(AutoETSPeer):
    """AutoETS on raw plays."""

    log1p = False


class AutoThetaLog1p(AutoThetaPeer):
    """AutoTheta on log1p(plays)."""

    log1p = True


class AutoThetaRaw(AutoThetaPeer):
    """AutoTheta on raw plays."""

    log1p = False


class SeasonalWindowAverageLog1p(SeasonalWindowAveragePeer):
    """SeasonalWindowAverage on log1p(plays): a geometric-style mean per weekday."""

    log1p = True


class SeasonalWindowAverageRaw(SeasonalWindowAveragePeer):
    """SeasonalWindowAverage on raw plays."""

    log1p = False
