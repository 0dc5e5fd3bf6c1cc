"""The daily path's core: the registered champion reads the newest days without learning (observe), a
kind that cannot is refit and says so, and the vintage starts the day after the newest data."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import timedelta

import polars as pl
import pytest

from musictrend_dagster.core.forecast.models.registry import make_model
from musictrend_dagster.core.service import serving
from musictrend_dagster.core.service.serving import ServedModel, forecast_vintage

CALIBRATION = pl.DataFrame({"day": [0], "lo": [-0.1], "hi": [0.1]})
TINY = {"global_ensemble": {"epochs": 0, "seeds": 1, "window_short": 7, "window_long": 14}}


def _split(five_artists, days: int):
    history, songs = five_artists
    return history.filter(pl.col("ds") < history["ds"].min() + timedelta(days=days)), songs


def _level(c_star_last, history: pl.DataFrame, shrink: float) -> list[float]:
    """The untrained ensemble's level: c*(last 7 days) moved `shrink` of the way (in log) toward c*(last 28 days)."""
    return [
        a ** (1 - shrink) * b**shrink for a, b in zip(c_star_last(history, 7), c_star_last(history, 28), strict=False)
    ]


def test_the_ensemble_observes_new_days_with_its_trained_weights(five_artists, c_star_last):
    """Untrained heads forecast their level flat (c*(last 7 days) shrunk toward c*(last 28 days)); after
    observe() that is the NEW history's level."""
    short, songs = _split(five_artists, 60)
    history, _ = five_artists
    model = make_model("global_ensemble", epochs=0, seeds=1, window_short=7, window_long=14)
    model.fit(short, songs)
    model.observe(history, songs)
    start = history["ds"].max() + timedelta(days=1)
    fc = model.predict(start, 10).sort("artist_id", "ds")
    per_artist = fc.group_by("artist_id", maintain_order=True).agg(lo=pl.col("plays").min(), hi=pl.col("plays").max())
    # new and returning artists are forecast at their own level (core/forecast/models/recent.py): compare the others
    recent = set(model.recent_artists())
    want = _level(c_star_last, history, model.level_shrink)
    rows = [(a, lo, hi, w) for (a, lo, hi), w in zip(per_artist.rows(), want, strict=False) if a not in recent]
    assert rows, "the fixture has established artists"
    for _, lo, hi, w in rows:
        assert lo == pytest.approx(w, rel=1e-9) and hi == pytest.approx(w, rel=1e-9)
    assert want != pytest.approx(_level(c_star_last, short, model.level_shrink))


@pytest.mark.parametrize("name", ["global_ensemble", "global_direct", "seed_lstm", "median14"])
def test_observe_learns_nothing(five_artists, name):
    """Observing other days and then the fitted history again gives back the fitted forecast exactly;
    a baseline observing a history forecasts what a fresh fit on it forecasts (a level has no weights)."""
    short, songs = _split(five_artists, 60)
    history, _ = five_artists
    tiny = {"epochs": 1} | ({"seeds": 1, "window_short": 7, "window_long": 14} if name == "global_ensemble" else {})
    model = make_model(name, **(tiny if name != "median14" else {}))
    model.fit(short, songs)
    start_short, start_long = short["ds"].max() + timedelta(days=1), history["ds"].max() + timedelta(days=1)
    fitted = model.predict(start_short, 30)
    model.observe(history, songs)
    observed = model.predict(start_long, 30)
    assert not observed["plays"].equals(fitted["plays"])
    model.observe(short, songs)
    assert model.predict(start_short, 30).equals(fitted)
    if name == "median14":
        fresh = make_model(name)
        fresh.fit(history, songs)
        assert fresh.predict(start_long, 30).equals(observed)


def test_forecast_vintage_from_the_served_champion(five_artists):
    short, songs = _split(five_artists, 60)
    history, _ = five_artists
    model = make_model("median14")
    model.fit(short, songs)
    served = pickle.loads(pickle.dumps(ServedModel(model, "median14", {}, CALIBRATION, short["ds"].max(), 60, 0.7)))
    made = forecast_vintage(served, history, songs, horizon=60)
    assert made.vintage == history["ds"].max() + timedelta(days=1) == made.frame["ds"].min()
    assert made.data_through == history["ds"].max() and made.history_days == 80
    assert made.refit is None and not made.in_sample
    assert made.frame.height == 5 * 60 and made.frame["vintage"].unique().to_list() == [made.vintage]
    assert (made.frame["plays_lo"] <= made.frame["plays"]).all() and (
        made.frame["plays"] <= made.frame["plays_hi"]
    ).all()

    back = forecast_vintage(served, history, songs, start=short["ds"].max() - timedelta(days=4), horizon=7)
    assert back.in_sample and back.data_through == short["ds"].max() - timedelta(days=5)
    with pytest.raises(ValueError, match="leaves a gap after the last observed day"):
        forecast_vintage(served, history, songs, start=history["ds"].max() + timedelta(days=2), horizon=60)


def test_a_kind_that_cannot_observe_is_refit_and_says_so(five_artists, monkeypatch):
    """Every registered kind observes today; a kind that declares it cannot (a model whose state is
    the data it saw) is refit with its registered hyperparameters, and the vintage says so."""
    short, songs = _split(five_artists, 60)
    history, _ = five_artists
    blind = dataclasses.replace(serving.model_spec("median14"), observes=False)
    monkeypatch.setattr(serving, "model_spec", lambda name: blind)
    model = make_model("median14")
    model.fit(short, songs)
    served = ServedModel(model, "median14", {}, CALIBRATION, short["ds"].max(), 60, 0.2)
    made = forecast_vintage(served, history, songs, horizon=10)
    assert made.refit.startswith("median14 cannot apply learned weights to new days: refit on 80 days")
    assert made.frame["ds"].min() == history["ds"].max() + timedelta(days=1)


@pytest.mark.parametrize("name", ["median14", "global_ensemble"])
def test_a_vintage_never_changes_the_served_model(five_artists, name):
    """One loaded champion serves every vintage (a backfill makes many): each vintage observes its days on a
    private copy, so the served model still forecasts from the days it was trained on, and a vintage is the
    same whichever vintages were made before it."""
    short, songs = _split(five_artists, 60)
    history, _ = five_artists
    model = make_model(name, **TINY.get(name, {}))
    model.fit(short, songs)
    start = short["ds"].max() + timedelta(days=1)
    trained = model.predict(start, 30)
    served = ServedModel(model, name, {}, CALIBRATION, short["ds"].max(), 60, 0.7)
    newest = forecast_vintage(served, history, songs, horizon=30)
    assert newest.refit is None and served.forecaster is model
    assert model.predict(start, 30).equals(trained)
    earlier = forecast_vintage(served, history, songs, start=start - timedelta(days=3), horizon=30)
    assert forecast_vintage(served, history, songs, horizon=30).frame.equals(newest.frame)
    alone = make_model(name, **TINY.get(name, {}))
    alone.fit(short, songs)
    served_alone = ServedModel(alone, name, {}, CALIBRATION, short["ds"].max(), 60, 0.7)
    back = forecast_vintage(served_alone, history, songs, start=start - timedelta(days=3), horizon=30)
    assert back.frame.equals(earlier.frame)
