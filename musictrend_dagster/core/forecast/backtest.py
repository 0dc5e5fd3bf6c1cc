"""Rolling-origin backtests: every model refit on the days before each origin only.

The plan adapts to the history: a log of any length from MIN_HISTORY_DAYS (35) days up gets
a test window as long as the history allows (up to the horizon, at least 7 days) and as many
origins (up to `max_origins`) as leave every model the training days it declares. The horizon
is the setting (core.settings.horizon, 1..365 days), passed in by the caller.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl

from musictrend_dagster.core.forecast.distributed import fit_forecast
from musictrend_dagster.core.forecast.metric import artist_scores, f_norm
from musictrend_dagster.core.forecast.models.base import Forecaster, InsufficientHistory
from musictrend_dagster.core.settings import DEFAULT_HORIZON

MIN_TEST_DAYS = 7
MIN_TRAIN_DAYS = 28
MIN_HISTORY_DAYS = MIN_TRAIN_DAYS + MIN_TEST_DAYS


@dataclass(frozen=True)
class BacktestPlan:
    """Where the models are scored: `origins` (first test days, oldest first), each followed by
    `window` test days, each refit on the days before it; the oldest leaves `train_days`."""

    first_day: date
    last_day: date
    origins: tuple[date, ...]
    window: int
    train_days: int

    @property
    def history_days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def describe(self) -> str:
        origins = ", ".join(o.isoformat() for o in self.origins)
        n = len(self.origins)
        return (
            f"{n} origin{'s' * (n > 1)} ({origins}) x {self.window} test days, "
            f"from {self.history_days} days of history "
            f"({self.first_day}..{self.last_day}); the oldest origin leaves {self.train_days} training days"
        )


def plan_backtest(
    first_day: date,
    last_day: date,
    need: int,
    *,
    horizon: int,
    max_origins: int = 3,
    step: int | None = None,
) -> BacktestPlan:
    """The backtest a history of first_day..last_day allows, for models needing `need` training days.

    1. Training: the oldest origin leaves `need` days (at least 28), fewer only when that would
       leave under 7 test days; models needing more are skipped, not failed.
    2. Window: everything after that, up to `horizon` days (the forecast's horizon: a history
       long enough scores exactly the days a forecast covers).
    3. Origins: the newest window ends on the last day; older ones every `step` days (default
       half the window: 30 days for 60-day windows) while they leave the training days, up to
       `max_origins`. A 183-day log gives the 3 reference origins of the metric doc.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 day, got {horizon}")
    n_days = (last_day - first_day).days + 1
    if n_days < MIN_HISTORY_DAYS:
        raise InsufficientHistory(
            f"history has {n_days} days ({first_day}..{last_day}); backtests need at least {MIN_HISTORY_DAYS} "
            f"({MIN_TRAIN_DAYS} to train on, {MIN_TEST_DAYS} to score)"
        )
    train = min(max(need, MIN_TRAIN_DAYS), n_days - MIN_TEST_DAYS)
    window = min(horizon, n_days - train)
    step = step or max(MIN_TEST_DAYS, window // 2)
    newest = n_days - window
    starts = [newest - step * k for k in range(max_origins) if newest - step * k >= train]
    return BacktestPlan(
        first_day=first_day,
        last_day=last_day,
        origins=tuple(first_day + timedelta(days=s) for s in reversed(starts)),
        window=window,
        train_days=min(starts),
    )


def rolling_origins(last_day: date, n_origins: int = 3, step: int = 30, horizon: int = DEFAULT_HORIZON) -> list[date]:
    """First test days, oldest first: the last `horizon` days, then windows ending `step` days earlier
    (by default the metric doc's three reference origins of the competition's 60-day horizon)."""
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
    actual: pl.DataFrame
    losses: list[float] = field(default_factory=list)


@dataclass
class BacktestResult:
    model: str
    params: dict
    origins: list[OriginResult]

    @property
    def mean_f_norm(self) -> float:
        return sum(o.f_norm for o in self.origins) / len(self.origins)


@dataclass(frozen=True)
class Skipped:
    """A model the plan could not score, and why (it declared more history than the plan leaves)."""

    model: str
    params: dict
    reason: str


def backtest(
    make_model: Callable[[], Forecaster],
    history: pl.DataFrame,
    songs: pl.DataFrame,
    origins: list[date] | tuple[date, ...],
    *,
    horizon: int,
    on_origin: Callable[[OriginResult], None] | None = None,
    workers: int = 1,
    spark: Any = None,
) -> BacktestResult:
    """Fit a fresh model per origin on `ds < origin`, score the next `horizon` days.

    The songs table goes in whole (it is today's catalogue): the features read a song only from
    its publish day on, which the leakage tests check with songs published after the origin.

    `workers` > 1 runs the origins in that many processes (fresh interpreters: `make_model` must
    pickle); every fit is seeded, so the results are the serial ones, bit for bit. With a Spark
    session (`spark`) the origins run one after the other, each forecast on the cluster
    (core/forecast/distributed.py). `on_origin` hears each origin in order, oldest first.
    """
    if not origins:
        raise ValueError("backtest needs at least one origin")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    tasks = [(make_model, *_split(history, origin, horizon), songs, origin, horizon) for origin in origins]
    if workers == 1 or len(origins) == 1 or spark is not None:
        runs: Iterator[tuple[OriginResult, str, dict]] = (_run_origin(*task, spark=spark) for task in tasks)
        return _collect(runs, on_origin)
    with ProcessPoolExecutor(min(workers, len(origins)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_origin, *task) for task in tasks]
        return _collect((f.result() for f in futures), on_origin)


def _split(history: pl.DataFrame, origin: date, horizon: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training days before `origin`, the `horizon` days from it to score)."""
    end = origin + timedelta(days=horizon)
    train = history.filter(pl.col("ds") < origin)
    actual = history.filter((pl.col("ds") >= origin) & (pl.col("ds") < end)).select("artist_id", "ds", "plays")
    return train, actual


def _run_origin(
    make_model: Callable[[], Forecaster],
    train: pl.DataFrame,
    actual: pl.DataFrame,
    songs: pl.DataFrame,
    origin: date,
    horizon: int,
    spark: Any = None,
) -> tuple[OriginResult, str, dict]:
    """One origin: a fresh model fitted on `train`, its forecast scored; with the model's name and params."""
    model = make_model()
    t0 = time.perf_counter()
    info, forecast, fit_seconds = fit_forecast(model, train, songs, origin, horizon, spark=spark)
    result = OriginResult(
        origin=origin,
        f_norm=f_norm(forecast, actual),
        fit_seconds=fit_seconds,
        predict_seconds=time.perf_counter() - t0 - fit_seconds,
        forecast=forecast,
        scores=artist_scores(forecast, actual),
        actual=actual,
        losses=list(info.losses),
    )
    return result, model.name, model.params()


def _collect(
    runs: Iterable[tuple[OriginResult, str, dict]], on_origin: Callable[[OriginResult], None] | None
) -> BacktestResult:
    """The origins' results in order (each told to `on_origin` as it comes), named by the last model."""
    results, names = [], []
    for result, name, params in runs:
        results.append(result)
        names.append((name, params))
        if on_origin:
            on_origin(result)
    return BacktestResult(model=names[-1][0], params=names[-1][1], origins=results)
