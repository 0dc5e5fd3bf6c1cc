"""The daily service: the registered champion forecasts from the newest data, and says when it is due
for retraining.

Serving. A retrain registers a `ServedModel` as the MLflow model of its registered version
(core/service/tracking.py): the champion fitted on every day of the history, its 80% interval
calibration and where it came from. The daily path loads it and calls `forecast_vintage`: a private
copy of the model observes the history before the vintage (the first forecast day) and forecasts
`horizon` days from there, with no backtest; the loaded model itself never changes. A model kind
that can apply its learned weights to a newer history (`ModelSpec.observes`) does so in
milliseconds; any other kind is refit with the registered hyperparameters, and the vintage says so
(`Vintage.refit`).

Storing a fitted forecaster (`split_networks` / `join_networks`): its Keras networks are taken out
and stored in Keras's own format; the rest (numpy arrays, polars frames, hyperparameters) is pickled,
so no TensorFlow object is ever pickled.

Retraining. `retrain_reasons` turns the service's state into the reasons a retrain is due: no
champion yet, `every_days` days of new data since the last selection (the data's calendar, not the
wall clock: a replay or a catch-up of several days retrains as the live service would, and a feed
that stalls does not retrain on the same data), the history grown by `growth` since the last
selection, or the champion's live score degraded (core/service/monitoring.py).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, cast

import polars as pl

from musictrend_dagster.core.forecast.distributed import observe_forecast
from musictrend_dagster.core.forecast.intervals import with_interval
from musictrend_dagster.core.forecast.models.base import Forecaster
from musictrend_dagster.core.forecast.models.registry import make_model
from musictrend_dagster.core.forecast.models.registry import spec as model_spec
from musictrend_dagster.core.settings import DEFAULT_HORIZON

RETRAIN_EVERY_DAYS = 7
RETRAIN_GROWTH = 0.30


@dataclass
class ServedModel:
    """The champion as registered: fitted on `history_days` days up to `trained_through`."""

    forecaster: Forecaster
    model: str
    params: dict[str, Any]
    calibration: pl.DataFrame  # day, lo, hi: the interval calibration of its backtests
    trained_through: date
    history_days: int
    backtest_f_norm: float


def _network(obj: Any) -> bool:
    """Is `obj` a Keras network? Any other Keras or TensorFlow object in a fitted model is refused."""
    if not type(obj).__module__.startswith(("keras", "tensorflow")):
        return False
    import keras  # only reached when the model holds a Keras object: TensorFlow is already loaded

    if isinstance(obj, keras.Model):
        return True
    raise TypeError(f"a fitted forecaster holds a {type(obj).__qualname__} outside a Keras model: it cannot be stored")


class _NetworkPickler(pickle.Pickler):
    """Pickles a forecaster with each Keras network replaced by its index in `networks`."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.networks: list[Any] = []

    def persistent_id(self, obj: Any) -> int | None:
        if not _network(obj):
            return None
        for k, known in enumerate(self.networks):
            if known is obj:
                return k
        self.networks.append(obj)
        return len(self.networks) - 1


class _NetworkUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, networks: list[Any]) -> None:
        super().__init__(file)
        self.networks = networks

    def persistent_load(self, pid: Any) -> Any:
        return self.networks[pid]


def split_networks(forecaster: Forecaster) -> tuple[bytes, list[Any]]:
    """(the forecaster pickled without its Keras networks, the networks): what a registered version stores."""
    buffer = io.BytesIO()
    pickler = _NetworkPickler(buffer)
    pickler.dump(forecaster)
    return buffer.getvalue(), pickler.networks


def join_networks(state: bytes, networks: list[Any]) -> Forecaster:
    """A forecaster from `split_networks`' two parts (the networks are used as given, not copied)."""
    return cast(Forecaster, _NetworkUnpickler(io.BytesIO(state), networks).load())


def private_copy(forecaster: Forecaster) -> Forecaster:
    """A copy that can observe new days without changing `forecaster`: its state is copied, its networks
    (read-only once fitted) are shared."""
    return join_networks(*split_networks(forecaster))


@dataclass(frozen=True)
class Vintage:
    """One forecast of the service: `frame` holds vintage, artist_id, ds, plays, plays_lo, plays_hi."""

    frame: pl.DataFrame
    vintage: date
    data_through: date  # the last day the forecast read
    history_days: int
    refit: str | None  # None: the registered weights observed the new days; else why the model was refit
    in_sample: bool  # the model was trained on days on or after the vintage: a hindcast, not a forecast


def vintage_day(history: pl.DataFrame, start: date | None = None) -> date:
    """The first forecast day: `start`, or the day after the newest data; never past that day."""
    next_day = cast(date, history["ds"].max()) + timedelta(days=1)
    if start is not None and start > next_day:
        raise ValueError(
            f"forecast start {start} leaves a gap after the last observed day {next_day - timedelta(days=1)}"
        )
    return start or next_day


def forecast_vintage(
    served: ServedModel,
    history: pl.DataFrame,
    songs: pl.DataFrame,
    start: date | None = None,
    *,
    horizon: int,
    spark: Any = None,
) -> Vintage:
    """The champion's `horizon`-day forecast from the vintage day on, read from the days before it; a
    model refit here is built for `horizon` days, and one whose learned curve is shorter says so. With a
    Spark session the fitted champion reads and forecasts every batch of series on the cluster."""
    vintage = vintage_day(history, start)
    seen = history.filter(pl.col("ds") < vintage)
    if seen.is_empty():
        raise ValueError(f"no history before the forecast start {vintage}")
    forecaster, refit = served.forecaster, None
    if model_spec(served.model).observes:
        forecaster = private_copy(served.forecaster)  # the served model is shared: it never changes
    else:
        refit = (
            f"{served.model} cannot apply learned weights to new days: refit on {seen['ds'].n_unique()} days "
            "with the registered hyperparameters"
        )
        forecaster = make_model(served.model, horizon=horizon, **served.params)
        forecaster.fit(seen, songs)
    learned = getattr(forecaster, "horizon", None)  # models that learn a curve over a fixed horizon
    if learned is not None and learned < horizon:
        raise ValueError(
            f"the champion {served.model} was trained for {learned} days ahead, {horizon} asked: retrain it for "
            f"this horizon (musictrend run --retrain)"
        )
    point = (
        forecaster.predict(vintage, horizon)
        if refit
        else observe_forecast(forecaster, seen, songs, vintage, horizon, spark=spark)
    )
    predicted = with_interval(point, served.calibration)
    return Vintage(
        frame=predicted.select(pl.lit(vintage).alias("vintage"), "artist_id", "ds", "plays", "plays_lo", "plays_hi"),
        vintage=vintage,
        data_through=cast(date, seen["ds"].max()),
        history_days=seen["ds"].n_unique(),
        refit=refit,
        in_sample=served.trained_through >= vintage,
    )


@dataclass(frozen=True)
class Selection:
    """A champion selection, as its registered version's tags record it: which version, trained through
    which day, selected on which history (days, backtest origins, horizon, backtest score) and why."""

    model_version: int
    data_through: date  # the last day the version was trained on
    history_days: int
    horizon: int = DEFAULT_HORIZON  # versions registered before the horizon was a setting: 60 days
    model: str = ""
    origins: tuple[date, ...] = ()  # the backtest origins it was selected on
    backtest_f_norm: float | None = None
    backtest_coverage: float | None = None
    reason: str = ""


def horizon_changed(selection: Selection | None, horizon: int) -> str | None:
    """The reason to retrain when the horizon setting is not the one the champion was chosen for, or None."""
    if selection is None or selection.horizon == horizon:
        return None
    return (
        f"horizon: v{selection.model_version} was backtested and trained for {selection.horizon} days ahead, "
        f"the setting is now {horizon}"
    )


def retrain_reasons(
    selection: Selection | None,
    data_through: date,
    history_days: int,
    degraded: str | None = None,
    every_days: int = RETRAIN_EVERY_DAYS,
    growth: float = RETRAIN_GROWTH,
    horizon: int | None = None,
) -> list[str]:
    """Why the champion should be re-chosen now (empty: not due).

    `degraded` is monitoring's verdict on the current champion, as a sentence, or None.
    `every_days` 0 turns the cadence off. `horizon`, the setting, retrains a champion chosen for another.
    """
    if selection is None:
        return ["first run: no champion registered yet"]
    reasons = []
    if horizon is not None and (changed := horizon_changed(selection, horizon)):
        reasons.append(changed)
    new_days = (data_through - selection.data_through).days
    if every_days and new_days >= every_days:
        reasons.append(
            f"cadence: {new_days} new days of data since the last selection (through "
            f"{selection.data_through}; retrain every {every_days})"
        )
    if history_days >= (1 + growth) * selection.history_days:
        reasons.append(
            f"growth: the history grew from {selection.history_days} to {history_days} days "
            f"(+{history_days / selection.history_days - 1:.0%}, threshold +{growth:.0%})"
        )
    if degraded:
        reasons.append(f"degraded: {degraded}")
    return reasons
