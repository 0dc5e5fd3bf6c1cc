"""The official score on hand-made cases, where the right answer is known without the code."""

import math
from datetime import date, timedelta

import polars as pl
import pytest

from musictrend_dagster.core.forecast.metric import artist_scores, f_norm


def frame(values: dict[str, list[float]]) -> pl.DataFrame:
    rows = [
        (artist, date(2015, 9, 1) + timedelta(days=k), v) for artist, vs in values.items() for k, v in enumerate(vs)
    ]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Float64}, orient="row")


def test_perfect_forecast_scores_one():
    actual = frame({"a": [10, 20, 30], "b": [1, 0, 5]})
    assert f_norm(actual, actual) == pytest.approx(1.0)


def test_zero_forecast_scores_zero():
    actual = frame({"a": [10, 20, 30], "b": [4, 9, 1]})
    assert f_norm(frame({"a": [0, 0, 0], "b": [0, 0, 0]}), actual) == pytest.approx(0.0)


def test_zero_actual_days_are_left_out_of_sigma_but_not_phi():
    actual = frame({"a": [10, 0, 10, 0]})
    forecast = frame({"a": [5, 1000, 15, 1000]})  # wild on the zero days: must not matter
    scores = artist_scores(forecast, actual).row(0, named=True)
    assert scores["sigma"] == pytest.approx(0.5)  # sqrt(mean(0.25, 0.25))
    assert scores["phi"] == pytest.approx(math.sqrt(20))
    assert f_norm(forecast, actual) == pytest.approx(0.5)


def test_weights_are_sqrt_of_volume():
    actual = frame({"big": [100, 100], "small": [1, 3]})
    forecast = frame({"big": [100, 100], "small": [0, 0]})  # big perfect, small sigma = 1
    assert f_norm(forecast, actual) == pytest.approx(math.sqrt(200) / (math.sqrt(200) + 2))


def test_best_constant_beats_mean_and_median():
    values = [10.0, 12.0, 50.0, 9.0, 100.0, 11.0]
    actual = frame({"a": values})
    c_star = sum(1 / x for x in values) / sum(1 / x**2 for x in values)
    mean = sum(values) / len(values)
    median = sorted(values)[2] / 2 + sorted(values)[3] / 2

    def score(c: float) -> float:
        return f_norm(frame({"a": [c] * len(values)}), actual)

    assert c_star < median < mean
    assert score(c_star) > score(median) > score(mean)
    # and it is the optimum: nudging it either way only loses
    assert score(c_star) > max(score(c_star * 0.98), score(c_star * 1.02))


def test_missing_forecast_days_are_an_error():
    actual = frame({"a": [1, 2, 3]})
    with pytest.raises(ValueError, match="misses 1 artist-days"):
        f_norm(frame({"a": [1, 2]}), actual)


def test_no_plays_at_all_is_an_error():
    actual = frame({"a": [0, 0]})
    with pytest.raises(ValueError, match="no plays"):
        f_norm(actual, actual)
