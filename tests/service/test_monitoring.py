"""Monitoring's arithmetic against hand computations, and the retraining rules on their boundaries."""

from __future__ import annotations

import math
from datetime import date, timedelta

import polars as pl
import pytest

from musictrend_dagster.core.service.monitoring import live_score, score_vintages
from musictrend_dagster.core.service.serving import Selection, retrain_reasons

D1 = date(2015, 9, 1)
D2, D3 = D1 + timedelta(days=1), D1 + timedelta(days=2)
ACTUAL = {("a", D1): 10, ("a", D2): 20, ("a", D3): 0, ("b", D1): 5, ("b", D2): 5, ("b", D3): 5}


def official(pairs: list[tuple[str, float, float]], actual_days: dict[str, list[float]]) -> tuple[float, dict]:
    """The competition's score by hand: pairs (artist, forecast S, actual T) -> (f_norm, {artist: (sigma, phi)}).

    sigma_j = sqrt(mean over pairs with T > 0 of ((S - T) / T)^2) (0 without such a pair);
    phi_j = sqrt(sum of the artist's actual plays over its distinct days); F = sum (1 - sigma) phi / sum phi.
    """
    per = {}
    for artist, days in actual_days.items():
        errors = [((s - t) / t) ** 2 for a, s, t in pairs if a == artist and t > 0]
        sigma = math.sqrt(sum(errors) / len(errors)) if errors else 0.0
        per[artist] = (sigma, math.sqrt(sum(days)))
    total = sum(phi for _, phi in per.values())
    return sum((1 - sigma) * phi for sigma, phi in per.values()) / total, per


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "vintage": pl.Date,
            "artist_id": pl.String,
            "ds": pl.Date,
            "plays": pl.Float64,
            "model": pl.String,
            "model_version": pl.Int32,
        },
        orient="row",
    )


def actuals(through: date = D3) -> pl.DataFrame:
    rows = [(a, d, p) for (a, d), p in ACTUAL.items() if d <= through]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")


def test_each_vintage_is_scored_on_its_days_that_happened():
    forecast_v1 = {("a", D1): 12, ("a", D2): 15, ("a", D3): 7, ("b", D1): 5, ("b", D2): 10, ("b", D3): 4}
    later = D3 + timedelta(days=1)  # not actual yet: never scored
    rows = [(D1, a, d, s, "m", 1) for (a, d), s in forecast_v1.items()]
    rows += [
        (D3, "a", D3, 1.0, "m", 2),
        (D3, "b", D3, 6.0, "m", 2),
        (D3, "a", later, 9.0, "m", 2),
        (D3, "b", later, 9.0, "m", 2),
    ]
    scores, artists = score_vintages(frame(rows), actuals())

    want_v1, per_v1 = official(
        [(a, s, ACTUAL[(a, d)]) for (a, d), s in forecast_v1.items()], {"a": [10, 20, 0], "b": [5, 5, 5]}
    )
    want_v3, _per_v3 = official([("a", 1.0, 0), ("b", 6.0, 5)], {"a": [0], "b": [5]})
    assert want_v3 == pytest.approx(0.8)  # a's only day has no plays: phi 0; b is 20% off
    got = {r["vintage"]: r for r in scores.iter_rows(named=True)}
    assert got[D1]["f_norm"] == pytest.approx(want_v1) and got[D1]["days_scored"] == 3
    assert got[D3]["f_norm"] == pytest.approx(want_v3) and got[D3]["days_scored"] == 1
    assert (got[D1]["model_version"], got[D3]["model_version"]) == (1, 2)
    assert (got[D3]["first_day"], got[D3]["last_day"]) == (D3, D3)
    for row in artists.filter(pl.col("vintage") == D1).iter_rows(named=True):
        sigma, phi = per_v1[row["artist_id"]]
        assert row["sigma"] == pytest.approx(sigma) and row["phi"] == pytest.approx(phi)
        assert row["loss"] == pytest.approx(sigma * phi / sum(p for _, p in per_v1.values()))
    bias_b = (5 + 10 + 4 - 15) / 15
    assert artists.filter((pl.col("vintage") == D1) & (pl.col("artist_id") == "b"))["bias"][0] == pytest.approx(bias_b)


def test_a_vintage_is_scored_only_for_the_artists_it_forecast():
    late_artist = actuals().vstack(pl.DataFrame({"artist_id": ["new"], "ds": [D2], "plays": [50]}))
    scores, artists = score_vintages(frame([(D1, "a", D2, 20.0, "m", 1), (D1, "b", D2, 5.0, "m", 1)]), late_artist)
    assert scores["f_norm"][0] == pytest.approx(1.0) and scores["artists"][0] == 2
    assert "new" not in artists["artist_id"].to_list()


def test_the_live_score_pools_the_champions_own_forecasts_over_the_last_days():
    # version 1 (trained through D1 - 1) made vintages D1 and D2; version 2 made D3; a hindcast of version 1
    # (vintage D1 - 1, on or before its training data) is left out too.
    hindcast = D1 - timedelta(days=1)
    rows = [
        (D1, "a", D2, 30.0, "m", 1),
        (D1, "a", D3, 1.0, "m", 1),
        (D1, "b", D2, 4.0, "m", 1),
        (D1, "b", D3, 4.0, "m", 1),
        (D2, "a", D2, 22.0, "m", 1),
        (D2, "a", D3, 2.0, "m", 1),
        (D2, "b", D2, 6.0, "m", 1),
        (D2, "b", D3, 5.0, "m", 1),
        (D1, "a", D1, 10.0, "m", 1),
        (D1, "b", D1, 50.0, "m", 1),
        (hindcast, "a", D2, 999.0, "m", 1),
        (hindcast, "b", D2, 999.0, "m", 1),
        (D3, "a", D3, 500.0, "m", 2),
        (D3, "b", D3, 500.0, "m", 2),
    ]
    live = live_score(
        frame(rows),
        actuals(),
        model_version=1,
        model="m",
        backtest_f_norm=0.7,
        trained_through=hindcast,
        window=2,
        min_days=2,
    )
    pairs = [
        ("a", 30.0, 20),
        ("a", 1.0, 0),
        ("b", 4.0, 5),
        ("b", 4.0, 5),
        ("a", 22.0, 20),
        ("a", 2.0, 0),
        ("b", 6.0, 5),
        ("b", 5.0, 5),
    ]
    want, per = official(pairs, {"a": [20, 0], "b": [5, 5]})  # the last 2 days only: D1's forecasts are older
    assert live.f_norm == pytest.approx(want)
    assert (live.scored_days, live.first_day, live.last_day, live.forecasts) == (2, D2, D3, 8)
    worst = live.artists.row(0, named=True)
    assert worst["artist_id"] == max(per, key=lambda a: per[a][0] * per[a][1])
    assert live.judged and not live.degraded  # 0.83 vs backtest 0.70


@pytest.mark.parametrize(("backtest", "degraded"), [(0.99, False), (1.0001, True), (0.70, False)])
def test_degraded_means_more_than_the_tolerance_below_the_backtest(backtest, degraded):
    rows = [(D2, "a", D2, 20.0, "m", 1), (D2, "b", D2, 5.0 * 1.15, "m", 1)]  # a exact, b 15% over
    live = live_score(
        frame(rows), actuals(D2), 1, "m", backtest, trained_through=D1, window=14, min_days=1, tolerance=0.05
    )
    want, _ = official([("a", 20.0, 20), ("b", 5.75, 5)], {"a": [20], "b": [5]})
    assert live.f_norm == pytest.approx(want)
    assert want == pytest.approx(0.95, abs=0.001)  # (sqrt(20) + 0.85 sqrt(5)) / (sqrt(20) + sqrt(5))
    assert live.degraded is (live.f_norm < backtest - 0.05)
    assert live.degraded is degraded


def test_a_version_is_judged_only_from_min_days_scored():
    rows = [(D2, "a", D2, 100.0, "m", 1), (D2, "b", D2, 100.0, "m", 1)]  # 5x and 20x over: terrible, but one day
    live = live_score(frame(rows), actuals(D2), 1, "m", 0.9, trained_through=D1, min_days=7)
    assert live.f_norm < 0 and live.scored_days == 1
    assert not live.judged and not live.degraded
    assert "1 scored day(s) so far; judged from 7" in live.verdict()


SELECTED = Selection(model_version=3, data_through=date(2015, 8, 30), history_days=100)


@pytest.mark.parametrize(
    ("days_later", "history_days", "degraded", "expected"),
    [
        (6, 106, None, []),
        (7, 107, None, ["cadence: 7 new days"]),
        (1, 130, None, ["growth: the history grew from 100 to 130 days (+30%"]),
        (1, 129, None, []),
        (1, 101, "m v3: live f_norm 0.6 ...", ["degraded: m v3: live f_norm 0.6"]),
        (8, 131, "m v3: bad", ["cadence: 8 new days", "growth:", "degraded: m v3: bad"]),
    ],
)
def test_retraining_is_due_on_cadence_growth_or_degradation(days_later, history_days, degraded, expected):
    reasons = retrain_reasons(
        SELECTED, SELECTED.data_through + timedelta(days=days_later), history_days, degraded, every_days=7, growth=0.3
    )
    assert len(reasons) == len(expected)
    for reason, start in zip(reasons, expected, strict=False):
        assert reason.startswith(start), reasons


def test_cadence_zero_turns_it_off_and_no_champion_means_the_first_run():
    assert retrain_reasons(SELECTED, SELECTED.data_through + timedelta(days=365), 101, every_days=0) == []
    assert retrain_reasons(None, D1, 10) == ["first run: no champion registered yet"]


def test_the_monitoring_chart_draws_each_vintage_the_live_line_and_each_versions_backtest(tmp_path):
    from musictrend_dagster.core.service.plots import monitoring_figure, plot_monitoring, worst_artists_figure

    scores = pl.DataFrame(
        {"vintage": [D1, D2, D3], "model_version": [1, 1, 2], "days_scored": [3, 2, 1], "f_norm": [0.71, 0.64, 0.80]}
    )
    live = pl.DataFrame({"as_of": [D2, D3], "f_norm": [0.70, 0.66], "judged": [False, True]})
    selections = pl.DataFrame(
        {
            "model_version": [1, 2],
            "model": ["median14", "global_ensemble"],
            "data_through": [D1 - timedelta(days=1), D2],
            "backtest_f_norm": [0.72, 0.75],
        }
    )
    ax = monitoring_figure(scores, live, selections, tolerance=0.05).axes[0]
    dots = sorted(
        (line.get_xdata()[0], line.get_ydata()[0])
        for line in ax.get_lines()
        if line.get_marker() == "o" and len(line.get_xdata()) == 1
    )
    assert dots == list(zip(scores["vintage"], scores["f_norm"], strict=False)), "one dot per vintage at its f_norm"
    levels = {
        round(float(line.get_ydata()[0]), 4)
        for line in ax.get_lines()
        if line.get_linestyle() in ("--", ":") and len(line.get_ydata()) == 2
    }
    assert {0.72, 0.67, 0.75, 0.70} <= levels, "each version's backtest and its warning threshold"
    solid = [
        line
        for line in ax.get_lines()
        if line.get_linestyle() == "-" and line.get_color() == "k" and len(line.get_ydata())
    ]
    assert [list(line.get_ydata()) for line in solid] == [[0.66]], "the judged live score, solid"
    first, second = (plot_monitoring(scores, live, selections, 0.05, path=tmp_path / f"{k}.png") for k in "ab")
    assert first.read_bytes() == second.read_bytes(), "same input, same PNG"

    artists = pl.DataFrame(
        {"artist_id": ["x", "y", "z"], "sigma": [0.5, 0.1, 0.9], "loss": [0.02, 0.001, 0.05], "bias": [-0.2, 0.01, 0.5]}
    )
    bars = worst_artists_figure(artists, top_n=2).axes[0].patches
    assert [round(b.get_width(), 4) for b in bars] == [0.02, 0.05], "the two largest losses, the worst on top"


@pytest.mark.parametrize("drift", [1.0, 2.0])
def test_a_synthetic_drift_makes_retraining_due_and_no_drift_does_not(drift):
    """The champion forecast each artist at its level (with 5% noise) for 14 days; with drift, the actual
    plays doubled from the 5th day on. Its live score falls below backtest - 0.05 only with drift, and
    only then does the degradation reason appear."""
    import numpy as np

    rng = np.random.default_rng(7)
    levels = {"a": 100.0, "b": 40.0, "c": 900.0}
    days = [D1 + timedelta(days=k) for k in range(14)]
    rows, acts = [], []
    for k, day in enumerate(days):
        for artist, level in levels.items():
            actual = round(level * (drift if k >= 4 else 1.0) * rng.uniform(0.95, 1.05))
            acts.append((artist, day, actual))
            rows.append((day, artist, day, level, "m", 1))  # a one-day-ahead vintage per day
    actual = pl.DataFrame(acts, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")
    live = live_score(frame(rows), actual, 1, "m", backtest_f_norm=0.9, trained_through=D1 - timedelta(days=1))
    # by hand: sigma = sqrt(mean ((S - T) / T)^2) per artist; drift 2x on 10 of 14 days gives sigma near
    # sqrt(10/14 * 0.25) = 0.42, so f_norm near 0.58 < 0.85; without it, under 0.05 off
    pairs = [(a, levels[a], t) for a, _, t in acts]
    want, _ = official(pairs, {a: [t for b, _, t in acts if b == a] for a in levels})
    assert live.f_norm == pytest.approx(want)
    assert live.judged and live.degraded is (drift > 1)
    selection = Selection(1, D1 - timedelta(days=1), 100)
    reasons = retrain_reasons(selection, days[-1], 114, live.verdict() if live.degraded else None, every_days=0)
    assert [r.split(":")[0] for r in reasons] == (["degraded"] if drift > 1 else [])
