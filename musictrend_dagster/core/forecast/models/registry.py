"""Every forecaster the project backtests, by name; defaults come from the constructors.

Each spec declares the history it needs (`min_history`, training days as a function of its
hyperparameters): the backtest plan leaves that much before its oldest origin, and a model
configured to need more than the plan leaves is skipped with the reason, not failed.

The horizon is not a hyperparameter: it is the project's setting (core.settings.horizon), given
to the plan and to every model built here (models that learn a curve over it take it as `horizon`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

import polars as pl

from musictrend_dagster.core.forecast.backtest import BacktestPlan, plan_backtest
from musictrend_dagster.core.forecast.models import peers
from musictrend_dagster.core.forecast.models.base import Forecaster
from musictrend_dagster.core.forecast.models.baselines import BestConstantForecaster, MedianForecaster
from musictrend_dagster.core.forecast.models.ensemble import GlobalEnsemble
from musictrend_dagster.core.forecast.models.global_model import GlobalModel
from musictrend_dagster.core.forecast.models.recent import RecentLevel
from musictrend_dagster.core.forecast.models.seed_lstm import SeedLSTM
from musictrend_dagster.core.settings import DEFAULT_HORIZON, ConfigError, backtest_max_origins, candidate_models

_NOT_HYPERPARAMETERS = {"on_epoch", "horizon"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., Forecaster]
    description: str
    # Training days the model needs before an origin, from its hyperparameters.
    min_history: Callable[[dict[str, Any]], int]
    uses_tensorflow: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    # Can apply its fitted weights to a newer history (Forecaster.observe)? Else the daily path refits it.
    observes: bool = True

    @property
    def defaults(self) -> dict[str, Any]:
        """Hyperparameters a user may edit: the constructor's keyword defaults plus fixed ones."""
        params = {
            name: p.default
            for name, p in inspect.signature(self.build).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in _NOT_HYPERPARAMETERS
        }
        return {**params, **self.fixed}

    def skip_reason(self, params: dict[str, Any], train_days: int) -> str | None:
        """Why this model cannot be backtested with `train_days` before the oldest origin, or None."""
        need = self.min_history({**self.defaults, **params})
        if need > train_days:
            return f"needs {need} days of history before an origin; the backtest plan leaves {train_days}"
        return None


def _window(params: dict[str, Any]) -> int:
    """A level over the last `window` days needs those days."""
    return params["window"]


def _window_plus_targets(key: str) -> Callable[[dict[str, Any]], int]:
    """A network reading `key` days of input needs them plus two weeks of days to learn from."""
    return lambda params: params[key] + 14


SPECS: list[ModelSpec] = [
    ModelSpec("median14", MedianForecaster, "Median of the last 14 days, repeated.", _window, fixed={"window": 14}),
    ModelSpec("median21", MedianForecaster, "Median of the last 21 days, repeated.", _window, fixed={"window": 21}),
    ModelSpec("median30", MedianForecaster, "Median of the last 30 days, repeated.", _window, fixed={"window": 30}),
    ModelSpec(
        "best_constant",
        BestConstantForecaster,
        "The constant that is optimal for this metric: sum(1/x)/sum(1/x^2) over the last 60 days.",
        _window,
    ),
    ModelSpec(
        "seed_lstm",
        SeedLSTM,
        "The 2016 design: per day [plays, 3-day mean, 3-day variance], LSTM(35) -> LSTM(10) -> Dense(3) "
        "trained to reconstruct the next day, 60 days forecast by feeding predictions back; each window scaled "
        "to its own level, 3 members' median, anchored at c* of the last 14 days (literal_2016=true: the first "
        "implementation's choices).",
        _window_plus_targets("window"),
        uses_tensorflow=True,
    ),
    ModelSpec(
        "global_direct",
        GlobalModel,
        "One network over all artists: a smooth 60-day log-multiplier curve (level, trend, weekday) on top of "
        "the metric-optimal constant of the last 7 days, trained with the metric's own relative error.",
        _window_plus_targets("window"),
        uses_tensorflow=True,
    ),
    ModelSpec(
        "global_ensemble",
        GlobalEnsemble,
        "Six global_direct-shaped networks (3 seeds x 14- and 28-day inputs) trained together in TensorFlow "
        "on the metric's own sqrt-volume-weighted sigma with recent origins weighted up, their log-multiplier "
        "curves averaged over c*(last 7 days) moved 15% of the way (in log) toward c*(last 28 days); "
        "inputs include downloads and distinct listeners per play.",
        _window_plus_targets("window_long"),
        uses_tensorflow=True,
    ),
]


def _seasons(params: dict[str, Any]) -> int:
    """A seasonal statistical model needs its seasons (two at least) and the days its log guard reads."""
    return max(params["season_length"] * params.get("windows", 2), params["guard_days"])


_PEERS = [
    (peers.AutoETSLog1p, peers.AutoETSRaw, "statsforecast AutoETS (error, trend and weekly season chosen by AICc)"),
    (peers.AutoThetaLog1p, peers.AutoThetaRaw, "statsforecast AutoTheta (theta model chosen by MSE, weekly season)"),
    (
        peers.SeasonalWindowAverageLog1p,
        peers.SeasonalWindowAverageRaw,
        "statsforecast SeasonalWindowAverage: each weekday the mean of its last 4 same weekdays",
    ),
]
SCALES = {
    True: "fitted on log1p(plays), back-transformed with expm1 after clipping to the artist's own log range over "
    "its last 28 days (a diverging log fit cannot reach 0 or explode)",
    False: "fitted on raw plays, clipped at 0",
}
SPECS += [
    ModelSpec(
        f"{build.base_name}_{'log1p' if build.log1p else 'raw'}",
        build,
        f"{what}, {SCALES[build.log1p]}; all artists in one StatsForecast call.",
        _seasons,
    )
    for *builds, what in _PEERS
    for build in builds
]
MODEL_NAMES = [s.name for s in SPECS]


def spec(name: str) -> ModelSpec:
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def candidates() -> list[ModelSpec]:
    """The models backtested and ranked for the champion, in the registry's order: those named by
    MUSICTREND_MODELS or musictrend.toml's ``[forecast] models``, else every model. A catalogue of 10^5
    series may leave out the per-series statsforecast peers, whose fits have no sample (docs/catalogue-scale.md)."""
    names, where = candidate_models()
    if names is None:
        return list(SPECS)
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ConfigError(f"{where}: no model named {', '.join(unknown)}; the models: {', '.join(MODEL_NAMES)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: {', '.join(twice)} named more than once")
    return [s for s in SPECS if s.name in names]


def candidate_names() -> list[str]:
    """The candidates' names, in the registry's order: what the leaderboard ranks."""
    return [s.name for s in candidates()]


def required_history() -> int:
    """Training days that let every candidate run with its default hyperparameters: the plan's target."""
    return max(s.min_history(s.defaults) for s in candidates())


def backtest_plan(history: pl.DataFrame, horizon: int, max_origins: int | None = None) -> BacktestPlan:
    """The plan every backtest and the champion share: from the history's span, the models' needs and
    the forecast horizon (test windows of `horizon` days where the history allows), with at most
    `max_origins` origins (default: the setting, core.settings.backtest_max_origins, so every caller
    plans alike)."""
    return plan_backtest(
        cast(date, history["ds"].min()),
        cast(date, history["ds"].max()),
        required_history(),
        horizon=horizon,
        max_origins=backtest_max_origins() if max_origins is None else max_origins,
    )


def make_model(name: str, *, horizon: int = DEFAULT_HORIZON, **overrides: Any) -> Forecaster:
    """The named forecaster for `horizon` days ahead with its defaults overridden, new and returning
    artists at their own level."""
    s = spec(name)
    unknown = set(overrides) - set(s.defaults) - _NOT_HYPERPARAMETERS
    if unknown:
        raise ValueError(f"model {name}: unknown hyperparameters {sorted(unknown)}")
    takes_horizon = "horizon" in inspect.signature(s.build).parameters
    return RecentLevel(s.build(**{**s.defaults, **overrides, **({"horizon": horizon} if takes_horizon else {})}))
