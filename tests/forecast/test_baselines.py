"""Baselines against the reference table of the official metric doc (copied into
tests/forecast/reference/metric_reference.md), on the packaged real data."""

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from musictrend_dagster.core.forecast.backtest import backtest, rolling_origins
from musictrend_dagster.core.forecast.models.base import FORECAST_SCHEMA
from musictrend_dagster.core.forecast.models.baselines import BestConstantForecaster, MedianForecaster
from musictrend_dagster.core.sample import packaged_history

ORIGINS = rolling_origins(date(2015, 8, 30))
REFERENCE_FILE = Path(__file__).parent / "reference" / "metric_reference.md"


def read_reference() -> dict[str, tuple[list[float], float]]:
    """The metric doc's table (tests/forecast/reference/metric_reference.md): per model, f_norm per window and mean."""
    rows = [line.strip("|").split("|") for line in REFERENCE_FILE.read_text().splitlines() if line.startswith("| ")]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    names = {"c* over last 60": "best_constant"}
    table = {names.get(col, col): [float(row[i]) for row in body] for i, col in enumerate(header) if i}
    assert [row[0] for row in body] == ["20150503..20150701", "20150602..20150731", "20150702..20150830", "mean"]
    return {name: (values[:3], values[3]) for name, values in table.items()}


REFERENCE = read_reference()
FACTORIES = {
    "median14": lambda: MedianForecaster(14),
    "median21": lambda: MedianForecaster(21),
    "median30": lambda: MedianForecaster(30),
    "median60": lambda: MedianForecaster(60),
    "best_constant": BestConstantForecaster,
}


@pytest.fixture(scope="module")
def packaged() -> tuple[pl.DataFrame, pl.DataFrame]:
    return packaged_history()


@pytest.fixture(scope="module")
def history(packaged) -> pl.DataFrame:
    return packaged[0]


@pytest.fixture(scope="module")
def songs(packaged) -> pl.DataFrame:
    return packaged[1]


def tiny(values: dict[str, list[int]], first: date = date(2015, 1, 1)) -> pl.DataFrame:
    rows = [(a, first + timedelta(days=k), v) for a, vs in values.items() for k, v in enumerate(vs)]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")


def test_reference_file_holds_the_published_table():
    assert set(REFERENCE) == set(FACTORIES)
    assert REFERENCE["median14"] == ([0.7215, 0.7415, 0.6947], 0.7192)
    assert REFERENCE["best_constant"] == ([0.6604, 0.7226, 0.7337], 0.7056)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_table_reproduced(name, history, songs):
    result = backtest(FACTORIES[name], history, songs, ORIGINS, horizon=60)
    per_origin, mean = REFERENCE[name]
    assert result.model == name
    assert [o.origin for o in result.origins] == [date(2015, 5, 3), date(2015, 6, 2), date(2015, 7, 2)]
    assert [round(o.f_norm, 4) for o in result.origins] == per_origin
    assert round(result.mean_f_norm, 4) == mean


def test_forecast_covers_every_artist_and_day(history, songs):
    model = MedianForecaster(14)
    model.fit(history, songs)
    out = model.predict(date(2015, 8, 31), 60)
    assert dict(out.schema) == FORECAST_SCHEMA
    assert out.height == 50 * 60
    assert out["ds"].min() == date(2015, 8, 31) and out["ds"].max() == date(2015, 10, 29)
    assert out["plays"].min() >= 0
    assert out.group_by("artist_id").agg(pl.col("plays").n_unique())["plays"].max() == 1  # constant per artist


def test_median_uses_only_the_last_window_of_the_history():
    model = MedianForecaster(3)
    model.fit(tiny({"a": [1000, 1, 2, 9, 4, 5]}), pl.DataFrame())
    # the last 3 days: 9, 4, 5
    assert model.predict(date(2015, 1, 7), 2)["plays"].to_list() == [5.0, 5.0]
    # start long after the history: still the last 3 days there are
    assert model.predict(date(2015, 3, 1), 1)["plays"].to_list() == [5.0]


def test_a_fitted_level_keeps_one_level_per_artist_from_its_last_window_days():
    """A fitted baseline held its whole history: 1.6 GB at 100,000 x 365. It keeps one level per artist, from
    its last `window` days, and a start inside the history is refused, as the networks refuse it, never read
    from fewer days."""
    model = MedianForecaster(3)
    model.fit(tiny({"a": [1000, 1, 2, 9, 4, 5], "b": [7, 8]}), pl.DataFrame())
    assert model._levels is not None and sorted(model._levels.rows()) == [("a", 5.0), ("b", 7.5)]
    assert model.params() == {"window": 3, "train_start": "2015-01-01", "train_end": "2015-01-06"}
    forecast = model.predict(date(2015, 1, 7), 2)
    assert forecast.rows() == [
        ("a", date(2015, 1, 7), 5.0),
        ("a", date(2015, 1, 8), 5.0),
        ("b", date(2015, 1, 7), 7.5),
        ("b", date(2015, 1, 8), 7.5),
    ]
    with pytest.raises(ValueError, match="forecast start 2015-01-06 is not after the last fitted day 2015-01-06"):
        model.predict(date(2015, 1, 6), 1)


def test_best_constant_formula_floors_zero_days_at_one():
    model = BestConstantForecaster(window=3)
    model.fit(tiny({"a": [50, 0, 2, 4]}), pl.DataFrame())
    x = [1, 2, 4]  # the 0 counts as 1
    expected = sum(1 / v for v in x) / sum(1 / v**2 for v in x)
    assert model.predict(date(2015, 1, 5), 1)["plays"][0] == pytest.approx(expected)


def test_params_carry_hyperparameters_and_training_range(history, songs):
    model = BestConstantForecaster()
    assert model.name == "best_constant"
    assert model.params() == {"window": 60, "train_start": None, "train_end": None}
    model.fit(history.filter(pl.col("ds") < date(2015, 7, 2)), songs)
    assert model.params() == {"window": 60, "train_start": "2015-03-01", "train_end": "2015-07-01"}
    assert MedianForecaster(21).name == "median21"


def test_backtest_forecasts_never_see_the_test_window(history, songs):
    origin = ORIGINS[-1]
    in_window = pl.col("ds") >= origin
    tampered = history.with_columns(pl.when(in_window).then(pl.col("plays") * 7 + 3).otherwise(pl.col("plays")))
    for name, factory in FACTORIES.items():
        clean = backtest(factory, history, songs, [origin], horizon=60)
        dirty = backtest(factory, tampered, songs, [origin], horizon=60)
        assert clean.origins[0].forecast.equals(dirty.origins[0].forecast), name
        assert clean.origins[0].f_norm != dirty.origins[0].f_norm  # the actuals did change


def test_bad_use_gives_clear_errors():
    with pytest.raises(ValueError, match="window"):
        MedianForecaster(0)
    model = MedianForecaster(3)
    with pytest.raises(RuntimeError, match="before fit"):
        model.predict(date(2015, 1, 1), 1)
    with pytest.raises(ValueError, match=r"median3: history lacks column\(s\) \['plays'\]"):
        model.fit(pl.DataFrame({"artist_id": ["a"], "ds": [date(2015, 1, 1)]}), pl.DataFrame())
    model.fit(tiny({"a": [1, 2, 3]}), pl.DataFrame())
    with pytest.raises(ValueError, match="forecast start 2015-01-01 is not after the last fitted day 2015-01-03"):
        model.predict(date(2015, 1, 1), 1)
