"""New and returning artists: forecast from their own recent level.

A model fitted on months of other artists' histories knows nothing useful about an artist
whose plays began ten days ago (the zero-filled days before its first play look like a
collapse to every window-based input), nor about one back from a long silence. For those
artists every forecaster's output is replaced by a flat level of their own current stretch:
the metric-optimal constant c* = sum(1/x) / sum(1/x^2) of its last (up to) 14 days with
plays. Days without plays are left out of c*, as the official score leaves them out of sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, cast

import numpy as np
import polars as pl

from musictrend_dagster.core.forecast.features import plays_matrix
from musictrend_dagster.core.forecast.metric import c_star
from musictrend_dagster.core.forecast.models.base import FitInfo, Forecaster
from musictrend_dagster.core.forecast.sampling import row_batches

RECENT_DAYS = 28  # a stretch of plays that began within this many days of the end is "recent"
SILENCE_DAYS = 28  # this many days in a row without plays end a stretch
LEVEL_DAYS = 14  # the recent level reads at most this many of the stretch's last days
# The days that decide whether an artist is recent: its stretch began in the last RECENT_DAYS, and no day
# with plays lies within SILENCE_DAYS before that start.
READ_DAYS = RECENT_DAYS + SILENCE_DAYS


def stretch_starts(plays: np.ndarray, silence: int = SILENCE_DAYS) -> np.ndarray:
    """Per row, the index of the first day with plays after the last run of >= `silence` days
    without any (the log's start counts as such a run); len(row) for a row that never played.

    Array operations over batches of rows: a day starts a stretch when it has plays and the
    previous day with plays is more than `silence` days before it (or there is none)."""
    n_days = plays.shape[1]
    starts = np.full(plays.shape[0], n_days)
    for rows in row_batches(plays.shape[0]):
        active = plays[rows] > 0
        day = np.arange(n_days)
        last_active = np.maximum.accumulate(np.where(active, day, -1), axis=1)
        previous = np.concatenate([np.full((active.shape[0], 1), -1), last_active[:, :-1]], axis=1)
        begins = active & ((previous < 0) | (day - previous > silence))
        found = begins.any(axis=1)
        starts[rows] = np.where(found, n_days - 1 - np.argmax(begins[:, ::-1], axis=1), n_days)
    return starts


def recent_levels(
    plays: np.ndarray, recent: int = RECENT_DAYS, silence: int = SILENCE_DAYS
) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows whose current stretch began in the last `recent` days, their levels).

    A row with plays on the log's first day is never "recent": the log cannot tell how long it
    has been playing. The level is c* of the days with plays among the stretch's last LEVEL_DAYS (1 when
    there are none: c* floors 0-play days at 1);
    rows with the same number of such days go through c* together (a loop over at most
    LEVEL_DAYS counts, never over rows), each row's days in their order."""
    n_days = plays.shape[1]
    starts = stretch_starts(plays, silence)
    mask = (starts < n_days) & (starts > 0) & (starts >= n_days - recent)
    levels = np.zeros(plays.shape[0])
    picked = np.flatnonzero(mask)
    if not picked.size:
        return mask, levels
    tail = plays[picked, -LEVEL_DAYS:]
    first_col = n_days - tail.shape[1]
    counted = (tail > 0) & (np.arange(first_col, n_days) >= starts[picked][:, None])
    order = np.argsort(~counted, axis=1, kind="stable")  # counted days first, in day order
    packed = np.take_along_axis(tail, order, axis=1)
    counts = counted.sum(axis=1)
    for k in np.unique(counts):
        same = counts == k
        # k == 0: no plays in the last LEVEL_DAYS days of a stretch that has not yet ended; c* of those
        # silent days floors them at 1, as it does any 0-play day (never 0/0)
        levels[picked[same]] = c_star(packed[same, :k] if k else tail[same])
    return mask, levels


@dataclass(eq=False)
class RecentLevel:
    """Wraps any forecaster: its forecast, with new and returning artists at their own recent level.

    Everything else (name, keras_model, model_input, ...) is the wrapped model's.
    """

    model: Forecaster
    _levels: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "model":  # pickling looks these up before __dict__ exists
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def name(self) -> str:
        return self.model.name

    def params(self) -> dict[str, Any]:
        return {**self.model.params(), "recent_artists": f"c_star_of_own_last_{LEVEL_DAYS}_days"}

    def fit(self, history: pl.DataFrame, songs: pl.DataFrame) -> FitInfo:
        info = self.model.fit(history, songs)
        self._read(history)
        return info

    def observe(self, history: pl.DataFrame, songs: pl.DataFrame) -> None:
        self.model.observe(history, songs)
        self._read(history)

    def _read(self, history: pl.DataFrame) -> None:
        """Which artists are new or returning at the end of `history`, and their own levels, from its last
        READ_DAYS days: what every day would give (a day with plays before them is more than SILENCE_DAYS
        before any stretch start that counts as recent), at a cost that does not grow with the history."""
        frame = history.select("artist_id", pl.col("ds").cast(pl.Date), "plays")
        last = cast(date, frame["ds"].max())
        since = max(cast(date, frame["ds"].min()), last - timedelta(days=READ_DAYS - 1))
        artists, _, matrix = plays_matrix(frame.filter(pl.col("ds") >= since), since)
        mask, levels = recent_levels(matrix)
        self._levels = {a: float(v) for a, v, m in zip(artists, levels, mask, strict=False) if m}

    def recent_artists(self) -> dict[str, float]:
        """Artists forecast from their own level, and that level (after fit)."""
        return dict(self._levels)

    def predict(self, start: date, horizon: int) -> pl.DataFrame:
        forecast = self.model.predict(start, horizon)
        if not self._levels:
            return forecast
        levels = pl.DataFrame({"artist_id": list(self._levels), "recent": list(self._levels.values())})
        return (
            forecast.join(levels, on="artist_id", how="left")
            .with_columns(plays=pl.coalesce("recent", "plays"))
            .drop("recent")
        )
