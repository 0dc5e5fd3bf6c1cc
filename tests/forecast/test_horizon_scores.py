"""Per-horizon evaluation: WAPE, MASE (seasonal naive 7) and coverage per window by hand, the windows a
horizon gets, the leaderboard's per-horizon columns and the champion metric setting."""

from __future__ import annotations

import json
from datetime import date, timedelta

import duckdb
import polars as pl
import pytest

from musictrend_dagster.core.forecast.backtest import BacktestPlan, BacktestResult, OriginResult
from musictrend_dagster.core.forecast.evaluation import flat_metrics, horizon_means, horizon_scores, windows
from musictrend_dagster.core.forecast.intervals import calibrate, coverage, log_errors
from musictrend_dagster.core.forecast.metric import f_norm, mase, seasonal_naive_scale, wape
from musictrend_dagster.core.service.store import horizon_standings, leaderboard, save_backtest, standings
from musictrend_dagster.core.settings import CHAMPION_METRIC_VAR, ConfigError, champion_metric
from musictrend_dagster.defs.assets.models import leaderboard_table

D0 = date(2015, 3, 1)


def _frame(rows: dict[str, list[float]], start: date) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"artist_id": a, "ds": start + timedelta(days=k), "plays": float(v)}
            for a, values in rows.items()
            for k, v in enumerate(values)
        ],
        schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Float64},
    )


def test_wape_by_hand():
    actual = _frame({"a": [20, 20], "b": [12, 8]}, D0)
    forecast = _frame({"a": [10, 20], "b": [10, 10]}, D0)
    # |10-20| + 0 + |10-12| + |10-8| = 14 over 20+20+12+8 = 60
    assert wape(forecast, actual) == pytest.approx(14 / 60)


def test_mase_scales_by_the_in_sample_seasonal_naive_7_mae():
    history = _frame({"a": [1, 2, 3, 4, 5, 6, 7, 9, 2], "b": [10] * 7 + [12, 10], "c": [5] * 9}, D0)
    # seasonal naive 7: a's errors |9-1|, |2-2| -> scale 4; b's |12-10|, |10-10| -> 1; c's 0 (no MASE)
    assert seasonal_naive_scale(history).sort("artist_id")["scale"].to_list() == pytest.approx([4.0, 1.0, 0.0])
    start = D0 + timedelta(days=9)
    actual = _frame({"a": [20, 20], "b": [12, 8], "c": [5, 6]}, start)
    forecast = _frame({"a": [10, 20], "b": [10, 10], "c": [5, 5]}, start)
    # a: MAE 5 / 4 = 1.25; b: MAE 2 / 1 = 2.0; c left out (scale 0) -> mean 1.625
    assert mase(forecast, actual, history) == pytest.approx(1.625)


def test_mase_leaves_out_series_of_a_week_or_less_and_names_unseen_ones():
    history = _frame({"a": [1, 2, 3, 4, 5, 6, 7, 9], "new": [1] * 7}, D0)  # a's scale |9-1| = 8; new: none
    assert seasonal_naive_scale(history).sort("artist_id")["scale"].to_list() == [8.0, None]
    start = D0 + timedelta(days=8)
    actual = _frame({"a": [20.0], "new": [5.0]}, start)
    assert mase(_frame({"a": [16.0], "new": [1.0]}, start), actual, history) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="artist b of the actuals has no training history"):
        mase(_frame({"b": [1.0]}, start), _frame({"b": [2.0]}, start), history)


def test_windows_are_capped_at_the_horizon():
    assert windows(60) == [7, 14, 28, 60]
    assert windows(90) == [7, 14, 28, 60, 90]
    assert windows(30) == [7, 14, 28, 30]
    assert windows(10) == [7, 10]
    assert windows(7) == [7]


def _origin(origin: date, forecast: dict, actual: dict) -> OriginResult:
    return OriginResult(origin, 0.0, 0.0, 0.0, _frame(forecast, origin), pl.DataFrame(), _frame(actual, origin))


def test_coverage_f_norm_and_wape_per_window_by_hand():
    # Origin A forecasts perfectly; origin B perfectly for 7 days, then twice the actual.
    # B calibrated on A's errors (all 0): interval = the forecast itself, so B covers days 1-7 only.
    # A calibrated on B's errors: lo <= 0 <= hi always holds A's zero errors: A covers every day.
    a, b = D0 + timedelta(days=30), D0 + timedelta(days=44)
    tens = {"x": [10] * 14, "y": [10] * 14}
    bad = {"x": [10] * 7 + [20] * 7, "y": [10] * 7 + [20] * 7}
    result = BacktestResult("m", {}, [_origin(a, tens, tens), _origin(b, bad, tens)])
    history = _frame({"x": [10 + (k % 7) for k in range(60)], "y": [10 + (k % 2) for k in range(60)]}, D0)
    scores = horizon_scores(result, history).sort("origin", "window")
    assert scores["window"].to_list() == [7, 14, 7, 14]
    assert scores["coverage"].to_list() == pytest.approx([1.0, 1.0, 1.0, 0.5])
    assert scores["wape"].to_list() == pytest.approx([0.0, 0.0, 0.0, 0.5])
    # f_norm of B over 14 days: sigma per artist = sqrt(mean of 7 zeros and 7 ones) = sqrt(0.5)
    assert scores["f_norm"].to_list() == pytest.approx([1.0, 1.0, 1.0, 1 - 0.5**0.5])
    # MASE of B over 14 days: MAE 5; x's scale is 0 (a 7-day cycle: excluded), y's is 1 -> 5
    assert scores["mase"].to_list() == pytest.approx([0.0, 0.0, 0.0, 5.0])
    # the full window's coverage is the intervals' own leave-one-origin-out coverage
    assert scores.filter(pl.col("window") == 14)["coverage"].mean() == pytest.approx(coverage(result, 14).overall)
    means = horizon_means(scores)
    assert means["coverage"].to_list() == pytest.approx([1.0, 0.75])
    assert flat_metrics(scores)["coverage_h14"] == pytest.approx(0.75)
    assert flat_metrics(scores)["wape_h7"] == pytest.approx(0.0)
    assert set(flat_metrics(scores)) == {f"{m}_h{w}" for m in ("f_norm", "wape", "mase", "coverage") for w in (7, 14)}


def _scores(model: str, f_norms: list[float], wapes: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": [model] * 2,
            "origin": [D0, D0 + timedelta(days=30)],
            "f_norm": f_norms,
            "wape": wapes,
            "mase": [1.0, 1.0],
            "coverage": [0.8, 0.8],
            "fit_seconds": [1.0, 1.0],
            "predict_seconds": [0.1, 0.1],
            "mlflow_run_id": [f"r{model}"] * 2,
            "params": ["{}"] * 2,
        }
    )


def test_the_champion_metric_setting_switches_the_selection(monkeypatch):
    # a: better official score; b: better (lower) WAPE
    scores = pl.concat([_scores("a", [0.80, 0.78], [0.40, 0.42]), _scores("b", [0.75, 0.74], [0.30, 0.31])])
    monkeypatch.delenv(CHAMPION_METRIC_VAR, raising=False)
    assert champion_metric() == "f_norm"
    assert leaderboard(scores, champion_metric())["model"].to_list() == ["a", "b"]
    monkeypatch.setenv(CHAMPION_METRIC_VAR, "wape")
    assert leaderboard(scores, champion_metric())["model"].to_list() == ["b", "a"]
    assert leaderboard(scores, "wape")["wape"].to_list() == pytest.approx([0.305, 0.41])
    monkeypatch.setenv(CHAMPION_METRIC_VAR, "mape")
    with pytest.raises(ConfigError, match="MUSICTREND_CHAMPION_METRIC must be one of f_norm, wape, got 'mape'"):
        champion_metric()


def test_backtest_horizon_scores_reach_the_leaderboard(tmp_path):
    a, b = D0 + timedelta(days=30), D0 + timedelta(days=44)
    tens = {"x": [10] * 14, "y": [10] * 14}
    bad = {"x": [10] * 7 + [20] * 7, "y": [10] * 7 + [20] * 7}
    result = BacktestResult("m", {"window": 3}, [_origin(a, tens, tens), _origin(b, bad, tens)])
    history = _frame({"x": [10 + (k % 7) for k in range(60)], "y": [10 + (k % 2) for k in range(60)]}, D0)
    horizons = horizon_scores(result, history)
    cal = calibrate(log_errors(result), 14)
    plan = BacktestPlan(D0, D0 + timedelta(days=57), (a, b), 14, 30)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    save_backtest(con, result, "run1", {"window": 3}, plan, cal, coverage(result, 14), horizons)
    scores, _ = standings(con, ["m"], plan)
    assert scores["wape"].to_list() == pytest.approx([0.0, 0.5])  # the full window's WAPE per origin
    stored = horizon_standings(con, ["m"])
    assert stored.sort("origin", "window")["coverage"].to_list() == pytest.approx([1.0, 1.0, 1.0, 0.5])
    board = leaderboard_table(scores, stored)
    row = board.row(0, named=True)
    assert row["model"] == "m" and row["wape"] == pytest.approx(0.25)
    assert row["coverage_h14"] == pytest.approx(0.75) and row["f_norm_h7"] == pytest.approx(1.0)
    assert leaderboard_table(scores, stored, "wape").columns[:3] == ["model", "wape", "f_norm"]
    assert json.loads(scores["params"][0]) == {"window": 3}


def test_mlflow_runs_of_every_model_share_the_per_horizon_metric_names(tmp_path):
    from musictrend_dagster.core.forecast.backtest import backtest
    from musictrend_dagster.core.forecast.models.registry import make_model
    from musictrend_dagster.core.service.tracking import Tracker

    history = _frame({a: [100 * (i + 1) + (k * 7) % 13 for k in range(70)] for i, a in enumerate("abc")}, D0)
    origins = [D0 + timedelta(days=42), D0 + timedelta(days=56)]
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts")
    names = {}
    for model in ("median14", "swa_log1p"):
        result = backtest(lambda model=model: make_model(model), history, pl.DataFrame(), origins, horizon=14)
        horizons = horizon_scores(result, history)
        run = tracker.client.get_run(tracker.log_backtest(result, horizons=horizons))
        metrics = run.data.metrics
        assert metrics["f_norm_h14"] == pytest.approx(result.mean_f_norm)
        assert metrics["wape_h7"] == pytest.approx(horizon_means(horizons)["wape"][0])
        last = horizons.filter((pl.col("origin") == origins[1]) & (pl.col("window") == 14))
        assert metrics["coverage_h14_20150426"] == pytest.approx(last["coverage"][0])
        assert metrics["mase"] == pytest.approx(metrics["mase_h14"])
        names[model] = {k for k in metrics if "_h" in k}
    assert names["median14"] == names["swa_log1p"]
    assert {"f_norm_h7", "wape_h14", "mase_h7", "coverage_h14"} <= names["median14"]


def _constant_result(model: str, origins: list[date], early: float, late: float) -> BacktestResult:
    """One artist whose actual is 10 every day; the forecast is `early` on days 1-7 and `late` after."""
    runs = []
    for origin in origins:
        forecast = _frame({"x": [early] * 7 + [late] * 53}, origin)
        actual = _frame({"x": [10.0] * 60}, origin)
        runs.append(OriginResult(origin, f_norm(forecast, actual), 0.0, 0.0, forecast, pl.DataFrame(), actual))
    return BacktestResult(model, {}, runs)


def test_the_per_horizon_champion_is_chosen_on_earlier_origins_and_scored_on_the_next():
    from musictrend_dagster.core.forecast.evaluation import composed_f_norm, nested_segment_check

    origins = [D0 + timedelta(days=30 * k) for k in range(4)]
    # a is exact on days 1-7 and 20% off after; b is 50% off on days 1-7 and exact after
    results = {"a": _constant_result("a", origins, 10.0, 12.0), "b": _constant_result("b", origins, 15.0, 10.0)}
    # whole window: a's sigma = sqrt(53/60 * 0.04), b's = sqrt(7/60 * 0.25): b is the better single model
    assert results["b"].mean_f_norm > results["a"].mean_f_norm
    assert composed_f_norm(results, {0: "a", 1: "b", 2: "b"}, origins[3]) == pytest.approx(1.0)
    rows = nested_segment_check(results, min_choose=2)
    assert rows["origin"].to_list() == origins[2:]  # each held-out origin after the first two
    assert rows["single"].to_list() == ["b", "b"]
    assert rows["segments"].to_list() == ["a / b / b"] * 2
    assert rows["single_f_norm"].to_list() == pytest.approx([1 - (7 / 60 * 0.25) ** 0.5] * 2)
    assert rows["composed_f_norm"].to_list() == pytest.approx([1.0, 1.0])


def test_window_leaders_say_where_a_model_beats_the_champion():
    from musictrend_dagster.core.forecast.evaluation import window_leaders

    rows = [
        ("champ", 7, 0.80, 0.20),
        ("champ", 60, 0.75, 0.25),
        ("peer", 7, 0.82, 0.19),
        ("peer", 60, 0.70, 0.30),
    ]
    scores = pl.DataFrame(
        [
            {"model": m, "origin": D0, "window": w, "f_norm": f, "wape": p, "mase": 1.0, "coverage": 0.8}
            for m, w, f, p in rows
        ]
    )
    leaders = window_leaders(scores, "champ")
    assert leaders["best"].to_list() == ["peer", "champ"]
    assert leaders["champion_lead"].to_list() == pytest.approx([-0.02, 0.0])
    by_wape = window_leaders(scores, "champ", "wape")
    assert by_wape["best"].to_list() == ["peer", "champ"]
    assert by_wape["champion_lead"].to_list() == pytest.approx([-0.01, 0.0])


def test_mase_is_nan_not_a_crash_when_every_history_is_exactly_weekly():
    """A user's perfectly weekly series leave seasonal naive no error to scale by: the backtest goes on."""
    import math

    from musictrend_dagster.core.forecast.metric import mase

    first = date(2015, 3, 1)
    history = pl.DataFrame(
        {
            "artist_id": ["a"] * 21,
            "ds": [first + timedelta(days=d) for d in range(21)],
            "plays": [d % 7 for d in range(21)],
        }
    )
    day = first + timedelta(days=21)
    forecast = pl.DataFrame({"artist_id": ["a"], "ds": [day], "plays": [1.0]})
    actual = pl.DataFrame({"artist_id": ["a"], "ds": [day], "plays": [2]})
    assert math.isnan(mase(forecast, actual, history))
