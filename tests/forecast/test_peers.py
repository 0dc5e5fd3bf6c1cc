"""statsforecast peers as registered candidates: shapes, non-negative, deterministic, no look-ahead, the
log guard, log vs raw, and a peer that wins the champion when the history has a strong weekly cycle."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.forecast.backtest import BacktestPlan, backtest
from musictrend_dagster.core.forecast.intervals import calibrate, coverage, log_errors
from musictrend_dagster.core.forecast.models.peers import AutoETSLog1p, AutoETSRaw, SeasonalWindowAverageRaw
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, make_model, spec
from musictrend_dagster.core.service.store import leaderboard, save_backtest, standings

PEERS = ["auto_ets_log1p", "auto_ets_raw", "auto_theta_log1p", "auto_theta_raw", "swa_log1p", "swa_raw"]


def test_peers_are_registered_candidates():
    assert set(PEERS) <= set(MODEL_NAMES)
    for name in PEERS:
        assert make_model(name).name == name
        assert make_model(name).log1p is name.endswith("log1p")
        assert not spec(name).uses_tensorflow


@pytest.mark.parametrize("name", PEERS)
def test_peer_forecasts_every_artist_and_day_non_negative_and_deterministic(five_artists, name):
    history, songs = five_artists
    origin = history["ds"].max() - timedelta(days=13)
    train = history.filter(pl.col("ds") < origin)
    runs = []
    for _ in range(2):
        model = make_model(name)
        model.fit(train, songs)
        runs.append(model.predict(origin, 14))
    forecast = runs[0]
    assert forecast.columns == ["artist_id", "ds", "plays"]
    assert forecast.height == 5 * 14
    assert forecast.group_by("artist_id").agg(pl.col("ds").min())["ds"].to_list() == [origin] * 5
    assert forecast["plays"].is_finite().all() and (forecast["plays"] >= 0).all()
    assert forecast.equals(runs[1])


@pytest.mark.parametrize("name", ["auto_ets_log1p", "swa_raw"])
def test_peer_sees_no_test_days(five_artists, assert_no_lookahead, name):
    history, songs = five_artists
    assert_no_lookahead(lambda: make_model(name), history, songs, history["ds"].max() - timedelta(days=13), 14)


def test_log_and_raw_fits_differ(five_artists):
    history, songs = five_artists
    origin = history["ds"].max() + timedelta(days=1)
    forecasts = []
    for cls in (AutoETSLog1p, AutoETSRaw):
        model = cls()
        model.fit(history, songs)
        forecasts.append(model.predict(origin, 10)["plays"].to_numpy())
    assert not np.allclose(forecasts[0], forecasts[1])


def test_log_forecasts_stay_inside_the_artists_recent_log_range():
    # a steady decline (halving every 15 days): unguarded, AutoETS's log trend ends at expm1(3.7) = 40 plays
    # after 60 days, far below the last 28 days' minimum (expm1(6.49) = 657)
    days = 60
    start = date(2015, 3, 1)
    plays = [10_000 * 0.5 ** (k / 15) for k in range(days)]
    history = pl.DataFrame(
        {
            "artist_id": ["falls"] * days,
            "ds": [start + timedelta(days=k) for k in range(days)],
            "plays": [float(round(p)) for p in plays],
        }
    )
    model = AutoETSLog1p(guard_days=28)
    model.fit(history, pl.DataFrame())
    forecast = model.predict(start + timedelta(days=days), 60)["plays"]
    last = history["plays"].tail(28)
    assert forecast.min() >= last.min() - 1e-6 and forecast.max() <= last.max() + 1e-6


def test_predict_refuses_days_inside_the_fitted_history(five_artists):
    history, songs = five_artists
    model = SeasonalWindowAverageRaw()
    model.fit(history, songs)
    with pytest.raises(ValueError, match="forecasts start after the fitted history"):
        model.predict(history["ds"].max(), 7)


def test_gappy_history_is_an_error(five_artists):
    history, songs = five_artists
    holed = history.filter(pl.col("ds") != history["ds"].min() + timedelta(days=5))
    with pytest.raises(ValueError, match="one row per artist and day without gaps; 5 artists do not"):
        SeasonalWindowAverageRaw().fit(holed, songs)


def _weekly_history(artists: int = 6, days: int = 140, seed: int = 7) -> pl.DataFrame:
    """Plays with a strong weekly cycle (weekends 5x weekdays) and little noise: a seasonal model must win."""
    rng = np.random.default_rng(seed)
    start = date(2015, 3, 2)  # a Monday
    rows = []
    for a in range(artists):
        level = 50 * (a + 1)
        for k in range(days):
            weekly = 5.0 if k % 7 in (5, 6) else 1.0
            rows.append((f"artist{a}", start + timedelta(days=k), float(rng.poisson(level * weekly))))
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Float64}, orient="row")


def test_a_peer_is_champion_when_it_scores_best(tmp_path):
    history = _weekly_history()
    last = history["ds"].max()
    origins = (last - timedelta(days=55), last - timedelta(days=27))
    plan = BacktestPlan(history["ds"].min(), last, origins, 28, (origins[0] - history["ds"].min()).days)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    models = ["median14", "best_constant", "swa_log1p", "swa_raw"]
    for name in models:
        result = backtest(lambda name=name: make_model(name), history, pl.DataFrame(), origins, horizon=28)
        save_backtest(con, result, f"run-{name}", {}, plan, calibrate(log_errors(result), 28), coverage(result, 28))
    board = leaderboard(standings(con, models, plan)[0])
    assert board["model"][0] in {"swa_log1p", "swa_raw"}
    assert board["f_norm"][0] > board.filter(pl.col("model") == "median14")["f_norm"][0] + 0.1
