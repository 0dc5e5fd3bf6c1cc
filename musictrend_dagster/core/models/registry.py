"""Every forecaster the project backtests, by name; defaults come from the constructors."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from musictrend_dagster.core.models.base import Forecaster
from musictrend_dagster.core.models.baselines import BestConstantForecaster, MedianForecaster
from musictrend_dagster.core.models.ensemble import GlobalEnsemble
from musictrend_dagster.core.models.global_model import GlobalModel
from musictrend_dagster.core.models.seed_lstm import SeedLSTM

_NOT_HYPERPARAMETERS = {"on_epoch"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., Forecaster]
    description: str
    uses_tensorflow: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """Hyperparameters a user may edit: the constructor's keyword defaults plus fixed ones."""
        params = {
            name: p.default
            for name, p in inspect.signature(self.build).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in _NOT_HYPERPARAMETERS
        }
        return {**params, **self.fixed}


SPECS: list[ModelSpec] = [
    ModelSpec("median14", MedianForecaster, "Median of the last 14 days, repeated.", fixed={"window": 14}),
    ModelSpec("median21", MedianForecaster, "Median of the last 21 days, repeated.", fixed={"window": 21}),
    ModelSpec("median30", MedianForecaster, "Median of the last 30 days, repeated.", fixed={"window": 30}),
    ModelSpec(
        "best_constant",
        BestConstantForecaster,
        "The constant that is optimal for this metric: sum(1/x)/sum(1/x^2) over the last 60 days.",
    ),
    ModelSpec(
        "seed_lstm",
        SeedLSTM,
        "The 2016 design: per day [plays, 3-day mean, 3-day variance], LSTM(35) -> LSTM(10) -> Dense(3) "
        "trained to reconstruct the next day, 60 days forecast by feeding predictions back.",
        uses_tensorflow=True,
    ),
    ModelSpec(
        "global_direct",
        GlobalModel,
        "One network over all artists: a smooth 60-day log-multiplier curve (level, trend, weekday) on top of "
        "the metric-optimal constant of the last 7 days, trained with the metric's own relative error.",
        uses_tensorflow=True,
    ),
    ModelSpec(
        "global_ensemble",
        GlobalEnsemble,
        "Six global_direct-shaped networks in numpy (3 seeds x 14- and 28-day inputs) trained on the metric's own "
        "sqrt-volume-weighted sigma with recent origins weighted up, their log-multiplier curves averaged over "
        "c*(last 7 days); inputs include downloads and distinct listeners per play.",
    ),
]
MODEL_NAMES = [s.name for s in SPECS]


def spec(name: str) -> ModelSpec:
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def make_model(name: str, **overrides: Any) -> Forecaster:
    s = spec(name)
    unknown = set(overrides) - set(s.defaults) - _NOT_HYPERPARAMETERS
    if unknown:
        raise ValueError(f"model {name}: unknown hyperparameters {sorted(unknown)}")
    return s.build(**{**s.defaults, **overrides})
