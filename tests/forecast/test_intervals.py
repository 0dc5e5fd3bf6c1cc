"""80% intervals: conformal quantiles by hand, coverage measured out of sample, forecasts bracketed."""

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.forecast.backtest import BacktestResult, OriginResult, backtest
from musictrend_dagster.core.forecast.intervals import calibrate, coverage, log_errors, with_interval
from musictrend_dagster.core.forecast.models.baselines import MedianForecaster


def _origin(origin: date, forecast: list[float], actual: list[float]) -> OriginResult:
    days = [origin + timedelta(days=k) for k in range(len(actual))]
    fc = pl.DataFrame({"artist_id": ["a"] * len(days), "ds": days, "plays": forecast})
    ac = pl.DataFrame({"artist_id": ["a"] * len(days), "ds": days, "plays": actual})
    return OriginResult(origin, 0.0, 0.0, 0.0, fc, pl.DataFrame(), ac)


def test_log_errors_by_hand():
    result = BacktestResult("m", {}, [_origin(date(2015, 5, 1), [9.0, 0.0], [19.0, 3.0])])
    errors = log_errors(result)
    assert errors["day"].to_list() == [0, 1]
    assert errors["err"].to_list() == pytest.approx([math.log(20 / 10), math.log(4 / 1)])


def test_calibration_quantiles_pool_neighbouring_days_and_extend_past_the_window():
    # 21 errors on day 0: -10..10 (/ 10); the 10% and 90% quantiles of -1.0..1.0 by 0.1 are -0.8 and 0.8
    errors = pl.DataFrame(
        {"day": [0] * 21, "err": [k / 10 for k in range(-10, 11)]}, schema={"day": pl.Int32, "err": pl.Float64}
    )
    cal = calibrate(errors, horizon=5)
    assert cal["day"].to_list() == [0, 1, 2, 3, 4]
    # days 1..3 pool day 0 (within 3 days); day 4 has no errors within 3 days, so it reuses the last one
    assert cal["lo"].to_list() == pytest.approx([-0.8] * 5)
    assert cal["hi"].to_list() == pytest.approx([0.8] * 5)


def test_quantiles_are_clamped_so_the_interval_holds_the_forecast():
    errors = pl.DataFrame(
        {"day": [0] * 11, "err": [0.5 + k / 10 for k in range(11)]}, schema={"day": pl.Int32, "err": pl.Float64}
    )
    cal = calibrate(errors, horizon=1)
    assert cal["lo"][0] == 0.0 and cal["hi"][0] == pytest.approx(1.4)


def test_interval_brackets_the_forecast_in_plays():
    cal = pl.DataFrame(
        {"day": [0, 1], "lo": [-0.5, -1.0], "hi": [0.25, 0.5]},
        schema={"day": pl.Int32, "lo": pl.Float64, "hi": pl.Float64},
    )
    start = date(2015, 9, 1)
    fc = pl.DataFrame(
        {
            "artist_id": ["a", "a", "a"],
            "ds": [start, start + timedelta(days=1), start + timedelta(days=5)],
            "plays": [99.0, 0.0, 9.0],
        }
    )
    out = with_interval(fc, cal)
    assert out["plays_lo"].to_list() == pytest.approx([100 * math.exp(-0.5) - 1, 0.0, 10 * math.exp(-1.0) - 1])
    assert out["plays_hi"].to_list() == pytest.approx(
        [100 * math.exp(0.25) - 1, math.exp(0.5) - 1, 10 * math.exp(0.5) - 1]
    )
    assert out["plays"].to_list() == fc["plays"].to_list()


def test_a_zero_quantile_gives_the_forecast_itself_despite_rounding():
    """(0.1 + 1) * exp(0) - 1 is 0.10000000000000009 in floating point: the bound must still be the forecast."""
    cal = pl.DataFrame(
        {"day": [0], "lo": [0.0], "hi": [0.0]}, schema={"day": pl.Int32, "lo": pl.Float64, "hi": pl.Float64}
    )
    fc = pl.DataFrame({"artist_id": ["a", "b"], "ds": [date(2015, 9, 1)] * 2, "plays": [0.1, 0.7]})
    out = with_interval(fc, cal)
    assert (out["plays_lo"] <= out["plays"]).all() and (out["plays"] <= out["plays_hi"]).all()


def test_coverage_is_leave_one_origin_out():
    """Origin 1's errors are all 0 and origin 2's all log(2): calibrated on the other, each covers nothing
    outside its own range: origin 1 (interval [0, log 2]) covers its zeros, origin 2 ([0, 0]) misses."""
    o1 = _origin(date(2015, 5, 1), [9.0] * 10, [9.0] * 10)
    o2 = _origin(date(2015, 6, 1), [9.0] * 10, [19.0] * 10)
    cov = coverage(BacktestResult("m", {}, [o1, o2]), horizon=10)
    assert cov.method == "leave-one-origin-out"
    assert cov.per_origin == {date(2015, 5, 1): 1.0, date(2015, 6, 1): 0.0}
    assert cov.overall == 0.5
    single = coverage(BacktestResult("m", {}, [o2]), horizon=10)
    assert single.method.startswith("in-sample") and single.overall == 1.0


def test_real_backtest_coverage_is_near_80_percent(five_artists):
    """On real data (5 artists, 3 origins) the out-of-sample coverage of median14 lands near the nominal 80%."""
    history, songs = five_artists
    first = history["ds"].min()
    result = backtest(
        lambda: MedianForecaster(14), history, songs, [first + timedelta(days=d) for d in (30, 40, 50)], horizon=30
    )
    cov = coverage(result, horizon=30)
    assert 0.6 < cov.overall < 0.95
    cal = calibrate(log_errors(result), 60)
    banded = with_interval(result.origins[-1].forecast, cal)
    assert (banded["plays_lo"] <= banded["plays"]).all() and (banded["plays"] <= banded["plays_hi"]).all()
    assert np.isfinite(banded["plays_hi"].to_numpy()).all()
