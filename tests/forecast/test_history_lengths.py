"""Any history from 35 days: the backtest plan adapts, models that cannot fit are skipped with a
reason, the champion comes from the models that ran, and a 60-day forecast is always made.

Plans are checked against hand-derived expectations; every model is run on 35, 60, 90, 123,
150 and 183 days of the real tianchi-s1 aggregates (tiny epochs).
"""

import functools
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from musictrend_dagster.core.forecast.backtest import backtest, plan_backtest
from musictrend_dagster.core.forecast.models.base import InsufficientHistory
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, make_model, required_history, spec
from musictrend_dagster.core.sample import packaged_history

pytestmark = pytest.mark.slow  # whole runs of the graph

FIRST = date(2015, 3, 1)
TINY = {
    "seed_lstm": {"epochs": 1, "members": 1},
    "global_direct": {"epochs": 1},
    "global_ensemble": {"epochs": 1, "seeds": 1},
}
# Declared needs (registry): medianN -> N days, best_constant -> its 60-day window, networks -> input window + 14,
NEEDS = {
    "median14": 14,
    "median21": 21,
    "median30": 30,
    "best_constant": 60,
    "seed_lstm": 28,
    "global_direct": 42,
    "global_ensemble": 42,
    # statsforecast peers: two weekly seasons, 4 for the window average, and the log guard's 28 days
    **{f"{m}_{scale}": 28 for m in ("auto_ets", "auto_theta", "swa") for scale in ("log1p", "raw")},
}
# days of history -> (origins, window, training days before the oldest origin, skipped models), derived by hand:
# training = the largest need (60) unless that leaves < 7 test days (then n - 7, at least 28); window = the rest
# up to 60; origins every window/2 days back from the last window while they leave the training days, at most 3.
PLANS = {
    183: ([date(2015, 5, 3), date(2015, 6, 2), date(2015, 7, 2)], 60, 63, set()),
    150: ([date(2015, 4, 30), date(2015, 5, 30)], 60, 60, set()),
    123: ([date(2015, 5, 3)], 60, 63, set()),
    90: ([date(2015, 4, 30)], 30, 60, set()),
    60: ([date(2015, 4, 23)], 7, 53, {"best_constant"}),
    35: ([date(2015, 3, 29)], 7, 28, {"median30", "best_constant", "global_direct", "global_ensemble"}),
}


@pytest.fixture(scope="module")
def packaged():
    return packaged_history()


def test_declared_needs():
    assert {name: spec(name).min_history(spec(name).defaults) for name in MODEL_NAMES} == NEEDS
    assert required_history() == 60


@pytest.mark.parametrize("days", sorted(PLANS))
def test_plan_by_hand(days):
    origins, window, train, skipped = PLANS[days]
    plan = plan_backtest(FIRST, FIRST + timedelta(days=days - 1), required_history(), horizon=60)
    assert (list(plan.origins), plan.window, plan.train_days, plan.history_days) == (origins, window, train, days)
    assert {n for n in MODEL_NAMES if spec(n).skip_reason({}, plan.train_days)} == skipped
    assert f"{len(origins)} origin" in plan.describe() and f"{days} days of history" in plan.describe()


def test_too_short_a_history_says_what_is_needed():
    with pytest.raises(InsufficientHistory, match=r"history has 34 days .* at least 35"):
        plan_backtest(FIRST, FIRST + timedelta(days=33), required_history(), horizon=60)


def test_a_model_configured_to_need_more_is_skipped_with_its_reason():
    reason = spec("global_ensemble").skip_reason({"window_long": 56}, train_days=63)
    assert reason == "needs 70 days of history before an origin; the backtest plan leaves 63"
    assert spec("global_ensemble").skip_reason({}, train_days=63) is None


@pytest.mark.parametrize("days", sorted(PLANS))
def test_every_length_backtests_what_fits_and_forecasts_60_days(days, packaged):
    history, songs = packaged
    history = history.filter(pl.col("ds") < FIRST + timedelta(days=days))
    origins, window, _train, skipped = PLANS[days]
    plan = plan_backtest(history["ds"].min(), history["ds"].max(), required_history(), horizon=60)
    scores = {}
    for name in MODEL_NAMES:
        if spec(name).skip_reason(TINY.get(name, {}), plan.train_days):
            continue
        result = backtest(
            functools.partial(make_model, name, **TINY.get(name, {})), history, songs, plan.origins, horizon=plan.window
        )
        assert [o.origin for o in result.origins] == origins
        assert all(o.forecast["ds"].n_unique() == window for o in result.origins)
        scores[name] = result.mean_f_norm
    assert set(scores) == set(MODEL_NAMES) - skipped
    assert all(np.isfinite(v) for v in scores.values())
    champion = max(scores, key=scores.get)
    model = make_model(champion, **TINY.get(champion, {}))
    model.fit(history, songs)
    forecast = model.predict(history["ds"].max() + timedelta(days=1), 60)
    assert forecast.height == 50 * 60 and forecast["plays"].is_finite().all() and (forecast["plays"] >= 0).all()


# ---- the whole graph in-process at short lengths (tiny epochs) ---------------------------------

GRAPH_TINY = {
    "seed_lstm": {"epochs": 1, "members": 1},
    "global_direct": {"epochs": 1},
    "global_ensemble": {"epochs": 2, "seeds": 1},
}


def _run_graph(paths, days: int):
    """Materialize all for the vintage after the log's `days` days (it starts on FIRST)."""
    import dagster as dg

    from musictrend_dagster.core.forecast.models.registry import SPECS
    from musictrend_dagster.definitions import build_defs

    config = {
        "ops": {
            f"backtest__{s.name}": {"config": {**s.defaults, **GRAPH_TINY[s.name]}}
            for s in SPECS
            if s.name in GRAPH_TINY
        }
    }
    with dg.DagsterInstance.ephemeral() as instance:
        return (
            build_defs(paths)
            .resolve_job_def("refresh_all")
            .execute_in_process(
                run_config=config, instance=instance, partition_key=(FIRST + timedelta(days=days)).isoformat()
            )
        )


def _first_days_of(tianchi, days: int, raw_dir):
    """The expanded real log cut to its first `days` days: the same raw files a user with less history has."""
    import shutil

    import duckdb

    raw_dir.mkdir(parents=True)
    shutil.copy(tianchi.songs_file, raw_dir / tianchi.songs_file.name)
    last = (FIRST + timedelta(days=days - 1)).strftime("%Y%m%d")
    duckdb.sql(
        f"COPY (SELECT * FROM read_csv('{tianchi.actions_file}', header=false, all_varchar=true) "
        f"WHERE column4 <= '{last}') "
        f"TO '{raw_dir / tianchi.actions_file.name}' (HEADER false)"
    )


@pytest.fixture(scope="module", params=["tianchi-35", "tianchi-123", "synthetic-120"])
def short_run(request, tianchi, tmp_path_factory):
    from musictrend_dagster.core.sample import generate_synthetic
    from musictrend_dagster.core.settings import Paths

    source, days = request.param.split("-")
    home = tmp_path_factory.mktemp(request.param)
    paths = Paths.from_env(home=home, raw_dir=home / "raw")
    if source == "tianchi":
        _first_days_of(tianchi, int(days), paths.raw_dir)
    else:
        generate_synthetic(paths.raw_dir, artists=8, days=int(days), rows=60_000, seed=5, progress=False)
    return request.param, paths, _run_graph(paths, int(days))


# what each short log's plan must be (hand-derived as in PLANS; the synthetic log starts on 2015-03-01 too)
SHORT = {
    "tianchi-35": (
        "1 origin (2015-03-29) x 7 test days",
        {"median30", "best_constant", "global_direct", "global_ensemble"},
    ),
    "tianchi-123": ("1 origin (2015-05-03) x 60 test days", set()),
    "synthetic-120": ("1 origin (2015-04-30) x 60 test days", set()),
}


def test_short_logs_run_skip_with_reasons_and_write_the_60_day_submission(short_run, capsys):
    from mlflow import MlflowClient

    from musictrend_dagster import cli
    from musictrend_dagster.core.service.outputs import read_submission
    from musictrend_dagster.core.service.store import load_forecast
    from musictrend_dagster.core.settings import MLFLOW_EXPERIMENT
    from musictrend_dagster.defs.resources import default_resources

    name, paths, result = short_run
    plan_text, skipped = SHORT[name]
    assert result.success
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    for model in MODEL_NAMES:
        meta = metadata[f"backtest/{model}"]
        assert plan_text in meta["plan"].value
        if model in skipped:
            assert meta["status"].value == "skipped"
            assert meta["skip_reason"].value.startswith(f"needs {NEEDS[model]} days of history before an origin")
        else:
            assert meta["status"].value == "ran" and 0 < meta["coverage_80"].value <= 1
    assert metadata["champion"]["champion"].value not in skipped

    client = MlflowClient(tracking_uri=paths.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id])
    assert {r.data.tags["model"] for r in runs if r.data.tags.get("status") == "skipped"} == skipped
    assert all("skip_reason" in r.data.tags for r in runs if r.data.tags.get("status") == "skipped")
    assert all("coverage_80" in r.data.metrics for r in runs if r.data.tags["model"] not in skipped)

    with default_resources(paths)["warehouse"].connect() as con:
        last = con.execute("SELECT max(ds) FROM artist_daily").fetchone()[0]
        n_artists = con.execute("SELECT count(DISTINCT artist_id) FROM artist_daily").fetchone()[0]
        forecast = load_forecast(con)
    submission = read_submission(paths.submission)
    assert submission.height == n_artists * 60 and submission["ds"].min() == last + timedelta(days=1)
    assert submission["ds"].n_unique() == 60
    assert ((forecast["plays_lo"] <= forecast["plays"]) & (forecast["plays"] <= forecast["plays_hi"])).all()

    capsys.readouterr()
    cli._print_summary(paths, [("full path", [result], 1.0)], ["first run: no champion registered yet"], None)
    out = capsys.readouterr().out
    assert plan_text in out
    for model in skipped:
        assert f"{model:<16} skipped: needs {NEEDS[model]} days" in out
