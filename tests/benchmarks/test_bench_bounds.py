"""The bounds table's oracles (benchmarks/bench_models.py): what a perfect level would score, by hand."""

from __future__ import annotations

import math
import sys
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_models

from musictrend_dagster.core.forecast.backtest import BacktestResult, OriginResult
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA

ORIGIN = date(2015, 5, 3)


def _frame(values: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(a, ORIGIN + timedelta(days=d), v) for a, row in values.items() for d, v in enumerate(row)],
        schema=FORECAST_SCHEMA,
        orient="row",
    )


@pytest.fixture
def result() -> BacktestResult:
    # a: played 10, 20, then nothing, forecast at 5; b: silent until day 3, forecast at 2
    forecast = _frame({"a": [5.0, 5.0, 5.0], "b": [2.0, 2.0, 2.0]})
    actual = _frame({"a": [10.0, 20.0, 0.0], "b": [0.0, 0.0, 4.0]})
    return BacktestResult("m", {}, [OriginResult(ORIGIN, 0.0, 0.0, 0.0, forecast, None, actual)])


def _plays(result: BacktestResult) -> list[float]:
    """The forecast, a's 3 days then b's."""
    return result.origins[0].forecast.sort("artist_id", "ds")["plays"].to_list()


def test_hindsight_constant_is_each_artists_metric_optimal_level(result):
    bound = bench_models.hindsight_constant(result)
    # a: (1/10 + 1/20) / (1/100 + 1/400) = 12; b: its one day with plays, 4
    assert _plays(bound) == pytest.approx([12.0] * 3 + [4.0] * 3)
    # a misses by +20% and -40% on its 2 days with plays, b is exact; phi = sqrt(total plays)
    sigma_a, phi_a, phi_b = math.sqrt((0.2**2 + 0.4**2) / 2), math.sqrt(30), 2.0
    assert bound.origins[0].f_norm == pytest.approx(((1 - sigma_a) * phi_a + phi_b) / (phi_a + phi_b))


def test_nowcast_oracle_scales_to_the_first_test_days_only(result):
    # days 1-2 of a: S/T = 0.5, 0.25 -> k = 0.75 / 0.3125 = 2.4; b has no plays there and keeps its forecast
    assert _plays(bench_models.nowcast_oracle(result, 2)) == pytest.approx([12.0] * 3 + [2.0] * 3)
    # day 1 only: k = 0.5 / 0.25 = 2
    assert _plays(bench_models.nowcast_oracle(result, 1)) == pytest.approx([10.0] * 3 + [2.0] * 3)
