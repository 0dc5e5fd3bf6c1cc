"""Any horizon from 1 to 365 days (MUSICTREND_HORIZON): the backtest windows, every model, the interval
calibration and the served vintage all take it, and 7, 28 and 90 days run end to end."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from musictrend_dagster.core import settings
from musictrend_dagster.core.forecast.backtest import backtest, plan_backtest
from musictrend_dagster.core.forecast.features import HISTORY_COLUMNS
from musictrend_dagster.core.forecast.intervals import calibrate, coverage, log_errors
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, SPECS, make_model, required_history, spec
from musictrend_dagster.core.sample import generate_synthetic, packaged_history
from musictrend_dagster.core.service.outputs import FORECASTS_COLUMNS, read_forecasts, read_submission
from musictrend_dagster.core.service.store import query

HORIZONS = (7, 28, 90)
TINY = {
    "seed_lstm": {"epochs": 1, "members": 1},
    "global_direct": {"epochs": 1},
    "global_ensemble": {"epochs": 1, "seeds": 1},
}


# ---- the setting ---------------------------------------------------------------------------------


def test_horizon_defaults_to_60_and_reads_the_variable(monkeypatch):
    monkeypatch.delenv(settings.HORIZON_VAR, raising=False)
    assert settings.horizon() == 60
    for value in ("1", "7", "90", "365", " 28 "):
        monkeypatch.setenv(settings.HORIZON_VAR, value)
        assert settings.horizon() == int(value)
    monkeypatch.setenv(settings.HORIZON_VAR, "")  # set but empty counts as unset, like every setting
    assert settings.horizon() == 60


@pytest.mark.parametrize("bad", ["0", "366", "-7", "7.5", "sixty"])
def test_a_bad_horizon_names_the_variable_at_start(monkeypatch, bad):
    monkeypatch.setenv(settings.HORIZON_VAR, bad)
    message = f"MUSICTREND_HORIZON must be a whole number of days from 1 to 365, got {bad!r}"
    with pytest.raises(settings.ConfigError) as caught:
        settings.check_environment()
    assert str(caught.value) == message


def test_the_horizon_is_not_a_hyperparameter_but_reaches_every_model():
    assert all("horizon" not in s.defaults for s in SPECS)  # not in the launchpad: one setting, not 7 knobs
    for name in ("global_direct", "global_ensemble"):  # the models that learn a curve over the horizon
        assert make_model(name, horizon=90).horizon == 90
        assert make_model(name).horizon == settings.DEFAULT_HORIZON


# ---- the plan ------------------------------------------------------------------------------------

FIRST = date(2015, 3, 1)


@pytest.mark.parametrize(
    ("horizon", "origins"),
    [
        # 183 days, 60 training days at least: windows of h days, every h/2 days (at least 7) back from the end
        (7, [date(2015, 8, 10), date(2015, 8, 17), date(2015, 8, 24)]),
        (28, [date(2015, 7, 6), date(2015, 7, 20), date(2015, 8, 3)]),
        (60, [date(2015, 5, 3), date(2015, 6, 2), date(2015, 7, 2)]),
        (90, [date(2015, 6, 2)]),  # the next one back (2015-04-18) would leave 48 training days
    ],
)
def test_the_test_windows_are_the_horizon_and_fit_the_history(horizon, origins):
    last = FIRST + timedelta(days=182)
    plan = plan_backtest(FIRST, last, required_history(), horizon=horizon)
    assert list(plan.origins) == origins and plan.window == horizon
    assert plan.origins[-1] + timedelta(days=horizon - 1) == last  # the newest window ends on the last day
    assert (plan.origins[0] - FIRST).days >= required_history()  # the oldest leaves every model its days


def test_a_horizon_longer_than_the_history_allows_scores_what_fits():
    plan = plan_backtest(FIRST, FIRST + timedelta(days=119), required_history(), horizon=90)
    assert plan.window == 60 and list(plan.origins) == [FIRST + timedelta(days=60)]


# ---- every model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_series():
    """Five real artists over the whole packaged season (183 days) and their songs."""
    frame, songs = packaged_history()
    artists = sorted(frame["artist_id"].unique())[:5]
    return (
        frame.filter(pl.col("artist_id").is_in(artists)).select(HISTORY_COLUMNS),
        songs.filter(pl.col("artist_id").is_in(artists)),
    )


@pytest.mark.slow
@pytest.mark.parametrize("horizon", HORIZONS)
def test_every_model_backtests_and_forecasts_the_horizon(five_series, horizon):
    history, songs = five_series
    plan = plan_backtest(history["ds"].min(), history["ds"].max(), required_history(), horizon=horizon)
    for name in MODEL_NAMES:
        params = TINY.get(name, {})
        result = backtest(
            lambda name=name, params=params: make_model(name, horizon=horizon, **params),
            history,
            songs,
            plan.origins,
            horizon=horizon,
        )
        assert all(o.forecast.height == 5 * horizon and o.forecast["ds"].n_unique() == horizon for o in result.origins)
        calibration = calibrate(log_errors(result), horizon)
        assert calibration["day"].to_list() == list(range(horizon))  # one quantile pair per day ahead
        cover = coverage(result, horizon)
        assert 0 < cover.overall <= 1 and len(cover.per_origin) == len(plan.origins)
        model = make_model(name, horizon=horizon, **params)
        model.fit(history, songs)
        ahead = model.predict(history["ds"].max() + timedelta(days=1), horizon)
        assert ahead.height == 5 * horizon and ahead["plays"].is_finite().all() and (ahead["plays"] >= 0).all()
        if spec(name).uses_tensorflow and name != "seed_lstm":
            with pytest.raises(ValueError, match=f"forecasts {horizon} days after its history"):
                model.predict(history["ds"].max() + timedelta(days=1), horizon + 1)


# ---- the whole graph -----------------------------------------------------------------------------

ARTISTS, DAYS = 5, 150


def _tiny_training() -> dict:
    ops = {}
    for s in SPECS:
        if s.uses_tensorflow:
            sizes = {k: 1 for k in ("members", "seeds") if k in s.defaults}
            ops[f"backtest__{s.name}"] = {"config": {**s.defaults, **sizes, "epochs": 1}}
    return {"ops": ops}


def _vintage_after(raw_dir) -> str:
    """The vintage partition after the raw log's last day (the actions' last column, yyyymmdd)."""
    con = duckdb.connect()
    try:
        (last,) = con.execute(
            "SELECT max(strptime(column4, '%Y%m%d'))::DATE FROM read_csv($f, header=false, all_varchar=true)",
            {"f": [str(f) for f in sorted(raw_dir.glob("mars_tianchi_user_actions*.csv"))]},
        ).fetchone()
    finally:
        con.close()
    return (last + timedelta(days=1)).isoformat()


@pytest.fixture(scope="module", params=HORIZONS, ids=[f"h{h}" for h in HORIZONS])
def run_at(request, tmp_path_factory):
    """The whole graph in-process on a small synthetic log with MUSICTREND_HORIZON=h."""
    from musictrend_dagster.definitions import build_defs

    horizon = request.param
    home = tmp_path_factory.mktemp(f"h{horizon}")
    paths = settings.Paths.from_env(home=home, raw_dir=home / "raw")
    generate_synthetic(paths.raw_dir, artists=ARTISTS, days=DAYS, rows=30_000, seed=3, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.HORIZON_VAR, str(horizon))
        defs = build_defs(paths)
        with dg.DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def("refresh_all").execute_in_process(
                run_config=_tiny_training(), instance=instance, partition_key=_vintage_after(paths.raw_dir)
            )
    return horizon, paths, result


def _table(paths, sql: str) -> pl.DataFrame:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return query(con, sql)
    finally:
        con.close()


@pytest.mark.slow
def test_the_graph_backtests_calibrates_and_forecasts_the_horizon(run_at):
    horizon, paths, result = run_at
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    first, last = FIRST, FIRST + timedelta(days=DAYS - 1)
    plan = plan_backtest(first, last, required_history(), horizon=horizon)
    assert plan.window == horizon
    runs = _table(paths, "SELECT * FROM backtest_runs ORDER BY model")
    assert runs["status"].to_list() == ["ran"] * len(MODEL_NAMES)
    assert set(runs["window"].to_list()) == {horizon}
    assert set(runs["origins"].to_list()) == {",".join(o.isoformat() for o in plan.origins)}
    for name in MODEL_NAMES:
        assert meta[f"backtest/{name}"]["horizon"].value == horizon
        assert 0 < meta[f"backtest/{name}"]["coverage_80"].value <= 1  # coverage measured on this horizon
    calibration = _table(
        paths, "SELECT model, count(*) AS days, max(day) AS last FROM interval_calibration GROUP BY model"
    )
    assert set(calibration["days"].to_list()) == {horizon} and set(calibration["last"].to_list()) == {horizon - 1}

    forecast = _table(paths, "SELECT * FROM forecast ORDER BY artist_id, ds")
    assert meta["forecast"]["horizon"].value == horizon
    assert forecast.height == ARTISTS * horizon
    assert forecast.group_by("artist_id").agg(n=pl.col("ds").n_unique())["n"].to_list() == [horizon] * ARTISTS
    assert forecast["ds"].min() == last + timedelta(days=1)
    assert forecast["ds"].max() == last + timedelta(days=horizon)
    assert ((forecast["plays_lo"] <= forecast["plays"]) & (forecast["plays"] <= forecast["plays_hi"])).all()
    # the champion's own calibration, day by day, is what the served interval uses
    champion = meta["champion"]["champion"].value
    cal = _table(paths, f"SELECT day, lo, hi FROM interval_calibration WHERE model = '{champion}' ORDER BY day")
    served = forecast.with_columns(day=(pl.col("ds") - pl.col("ds").min()).dt.total_days().cast(pl.Int32)).join(
        cal, on="day"
    )
    assert served.height == forecast.height
    expected_hi = pl.max_horizontal((pl.col("plays") + 1) * pl.col("hi").exp() - 1, "plays")
    assert served.select(((pl.col("plays_hi") - expected_hi).abs() <= 1e-6 * (1 + expected_hi)).all()).item()

    # published: forecasts.csv and .parquet hold the same vintage, h days per series; so does the submission
    files = read_forecasts(paths.output_dir / settings.FORECASTS_CSV)
    assert files.equals(read_forecasts(paths.output_dir / settings.FORECASTS_PARQUET))
    assert files.columns == FORECASTS_COLUMNS and files.height == ARTISTS * horizon
    assert files.select("unique_id", "ds", "forecast", "lo80", "hi80").equals(
        forecast.select(unique_id="artist_id", ds="ds", forecast="plays", lo80="plays_lo", hi80="plays_hi")
    )
    assert files["data_through"].unique().to_list() == [last] and files["model"].unique().to_list() == [champion]
    assert meta["forecast_files"]["dagster/row_count"].value == ARTISTS * horizon
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluations["forecast_files_match"] and evaluations["forecast_complete_and_valid"]
    assert all(evaluations.values())
    submission = read_submission(paths.submission)
    assert submission.height == ARTISTS * horizon and submission["ds"].n_unique() == horizon


# ---- changing the horizon ------------------------------------------------------------------------


def test_a_champion_chosen_for_another_horizon_is_due_for_retraining():
    from musictrend_dagster.core.service.serving import Selection, retrain_reasons

    chosen = Selection(model_version=3, data_through=date(2015, 8, 30), history_days=183, horizon=60)
    assert retrain_reasons(chosen, date(2015, 8, 31), 184, every_days=0, horizon=60) == []
    assert retrain_reasons(chosen, date(2015, 8, 31), 184, every_days=0, horizon=90) == [
        "horizon: v3 was backtested and trained for 60 days ahead, the setting is now 90"
    ]
    registered_before = Selection(model_version=1, data_through=date(2015, 8, 30), history_days=183)
    assert registered_before.horizon == 60  # versions registered before the setting served 60 days


def test_serving_a_longer_horizon_than_the_champion_learnt_says_to_retrain(five_series):
    from musictrend_dagster.core.forecast.intervals import calibrate
    from musictrend_dagster.core.service.serving import ServedModel, forecast_vintage

    history, songs = five_series
    model = make_model("global_direct", horizon=28, **TINY["global_direct"])
    model.fit(history, songs)
    errors = pl.DataFrame({"origin": [FIRST] * 28, "artist_id": ["a"] * 28, "day": list(range(28)), "err": [0.0] * 28})
    served = ServedModel(
        model, "global_direct", TINY["global_direct"], calibrate(errors, 28), history["ds"].max(), 183, 0.7
    )
    assert forecast_vintage(served, history, songs, horizon=28).frame["ds"].n_unique() == 28
    with pytest.raises(ValueError, match="trained for 28 days ahead, 90 asked: retrain it for this horizon"):
        forecast_vintage(served, history, songs, horizon=90)


def test_the_command_refuses_a_bad_horizon_before_it_starts(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, settings.HORIZON_VAR: "400"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("musictrend")), "run", "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "MUSICTREND_HORIZON must be a whole number of days from 1 to 365, got '400'" in done.stderr
