"""Rolling-origin backtests: every model refit on the days before each origin only."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from musictrend_dagster.core.metric import artist_scores, f_norm
from musictrend_dagster.core.models.base import Forecaster

HORIZON = 60


def rolling_origins(last_day: date, n_origins: int = 3, step: int = 30, horizon: int = HORIZON) -> list[date]:
    """First test days, oldest first: the last `horizon` days, then windows ending `step` days earlier."""
    newest = last_day - timedelta(days=horizon - 1)
    return [newest - timedelta(days=step * k) for k in reversed(range(n_origins))]


@dataclass
class OriginResult:
    origin: date
    f_norm: float
    fit_seconds: float
    predict_seconds: float
    forecast: pl.DataFrame
    scores: pl.DataFrame
    losses: list[float] = field(default_factory=list)


@dataclass
class BacktestResult:
    model: str
    params: dict
    origins: list[OriginResult]

    @property
    def mean_f_norm(self) -> float:
        return sum(o.f_norm for o in self.origins) / len(self.origins)


def backtest(
    make_model: Callable[[], Forecaster],
    history: pl.DataFrame,
    songs: pl.DataFrame,
    origins: list[date],
    horizon: int = HORIZON,
    on_origin: Callable[[OriginResult], None] | None = None,
) -> BacktestResult:
    """Fit a fresh model per origin on `ds < origin`, score the next `horizon` days."""
    results = []
    model = None
    for origin in origins:
        end = origin + timedelta(days=horizon)
        train = history.filter(pl.col("ds") < origin)
        actual = history.filter((pl.col("ds") >= origin) & (pl.col("ds") < end))
        model = make_model()
        t0 = time.perf_counter()
        info = model.fit(train, songs)
        t1 = time.perf_counter()
        forecast = model.predict(origin, horizon)
        t2 = time.perf_counter()
        result = OriginResult(
            origin=origin,
            f_norm=f_norm(forecast, actual),
            fit_seconds=t1 - t0,
            predict_seconds=t2 - t1,
            forecast=forecast,
            scores=artist_scores(forecast, actual),
            losses=list(info.losses),
        )
        results.append(result)
        if on_origin:
            on_origin(result)
    assert model is not None, "backtest needs at least one origin"
    return BacktestResult(model=model.name, params=model.params(), origins=results)
