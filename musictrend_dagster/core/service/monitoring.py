"""Live monitoring: every forecast vintage scored with the official metric on the days that have since
become actual, and the champion's live score against its backtest score.

Per vintage (`score_vintages`): the days from the vintage to the newest actual day (at most its
horizon), for the artists it forecast (an artist that appears later is no fault of the vintage);
f_norm = 1 - sum_j sigma_j phi_j / sum_j phi_j, so each artist's `loss` = sigma_j phi_j / sum phi is
what it takes off the score.

The champion's live score (`live_score`): the forecasts of the current champion version (its
vintages, hindcasts left out) for the last `window` days that have actuals, pooled: each artist's
sigma over every forecast of those days (a day forecast by 5 vintages counts 5 times, at 5
horizons), phi over the days' actual plays. It is judged once the version has `min_days` scored
days (a version that has served less is not judged yet), so a retrain is never triggered again by
the same bad days that triggered it. Live forecasts are mostly short-horizon ones (a version of
k days has forecast no day further than k days ahead), so with nothing changed they sit at or
above the 60-day backtest score: a drop of `tolerance` below it is a real change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import cast

import polars as pl

from musictrend_dagster.core.forecast.metric import artist_scores
from musictrend_dagster.core.service.serving import Selection

LIVE_WINDOW_DAYS = 14
MIN_SCORED_DAYS = 7
TOLERANCE = 0.05

VINTAGE_SCORE_SCHEMA = {
    "vintage": pl.Date,
    "model": pl.String,
    "model_version": pl.Int64,
    "days_scored": pl.Int64,
    "first_day": pl.Date,
    "last_day": pl.Date,
    "artists": pl.Int64,
    "f_norm": pl.Float64,
}
ARTIST_SCORE_SCHEMA = {
    "vintage": pl.Date,
    "artist_id": pl.String,
    "days_scored": pl.Int64,
    "sigma": pl.Float64,
    "phi": pl.Float64,
    "loss": pl.Float64,
    "bias": pl.Float64,
}


SELECTION_SCHEMA = {
    "model_version": pl.Int64,
    "model": pl.String,
    "data_through": pl.Date,
    "history_days": pl.Int64,
    "backtest_f_norm": pl.Float64,
}


def selections_frame(selections: list[Selection]) -> pl.DataFrame:
    """The registry's champion selections (core.service.tracking.registered_versions) as one row per
    version, oldest first: what monitoring joins its vintages to and charts."""
    rows = [
        (s.model_version, s.model, s.data_through, s.history_days, s.backtest_f_norm)
        for s in sorted(selections, key=lambda s: s.model_version)
    ]
    return pl.DataFrame(rows, schema=SELECTION_SCHEMA, orient="row")


def _scored(forecasts: pl.DataFrame, actuals: pl.DataFrame) -> pl.DataFrame:
    """Forecast rows (any extra columns kept) joined to the actual plays `t` of their artist and day."""
    return forecasts.join(
        actuals.select("artist_id", "ds", pl.col("plays").cast(pl.Float64).alias("t")), on=["artist_id", "ds"]
    )


def _artist_errors(joined: pl.DataFrame) -> pl.DataFrame:
    """Per artist of `_scored` rows: days scored, the metric's sigma (metric.artist_scores: with several
    forecasts of one day, each counts), phi over the distinct days' actual plays, loss = sigma * phi /
    sum(phi) and bias = sum(S - T) / sum(T)."""
    days = joined.select("artist_id", "ds", plays="t").unique(["artist_id", "ds"])
    sigma = artist_scores(joined.select("artist_id", "ds", "plays"), days)
    phi = days.group_by("artist_id").agg(phi=pl.col("plays").sum().sqrt(), days_scored=pl.len())
    bias = joined.group_by("artist_id").agg(
        bias=pl.when(pl.col("t").sum() > 0).then((pl.col("plays") - pl.col("t")).sum() / pl.col("t").sum())
    )
    total = phi["phi"].sum()
    return (
        phi.join(sigma.select("artist_id", "sigma"), on="artist_id")
        .join(bias, on="artist_id")
        .with_columns(loss=pl.col("sigma") * pl.col("phi") / total if total else pl.lit(None, pl.Float64))
        .select("artist_id", "days_scored", "sigma", "phi", "loss", "bias")
        .sort("artist_id")
    )


def score_vintages(vintages: pl.DataFrame, actuals: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one row per vintage with any actual day, one row per vintage and artist).

    `vintages`: vintage, artist_id, ds, plays, model, model_version; `actuals`: artist_id, ds, plays.
    A vintage whose scored days hold no plays at all has f_norm null (the metric is undefined).
    """
    per_vintage, per_artist = [], []
    last_actual = actuals["ds"].max()
    for (vintage,), frame in vintages.filter(pl.col("ds") <= last_actual).group_by("vintage", maintain_order=True):
        joined = _scored(frame, actuals)
        if joined.is_empty():
            continue
        artists = _artist_errors(joined)
        total = artists["phi"].sum()
        per_vintage.append(
            {
                "vintage": vintage,
                "model": frame["model"][0],
                "model_version": frame["model_version"][0],
                "days_scored": joined["ds"].n_unique(),
                "first_day": joined["ds"].min(),
                "last_day": joined["ds"].max(),
                "artists": artists.height,
                "f_norm": 1 - float(artists["loss"].sum()) if total else None,
            }
        )
        per_artist.append(artists.with_columns(vintage=pl.lit(vintage)))
    scores = pl.DataFrame(per_vintage, schema=VINTAGE_SCORE_SCHEMA).sort("vintage")
    errors = (
        # polars types a schema's keys invariantly (str | Selector | ...): a plain dict[str, ...] never matches
        pl.concat(per_artist).select(list(ARTIST_SCORE_SCHEMA)).cast(ARTIST_SCORE_SCHEMA)  # type: ignore[arg-type]
        if per_artist
        else pl.DataFrame(schema=ARTIST_SCORE_SCHEMA)
    ).sort("vintage", "artist_id")
    return scores, errors


@dataclass(frozen=True)
class LiveScore:
    """The current champion version's live score, and whether it is judged degraded."""

    model_version: int
    model: str
    backtest_f_norm: float
    as_of: date  # the newest actual day
    scored_days: int  # days of the window the version has forecasts and actuals for
    first_day: date | None
    last_day: date | None
    forecasts: int  # (vintage, artist, day) forecasts pooled
    f_norm: float | None  # None: no scored day yet
    artists: pl.DataFrame  # per artist: days_scored, sigma, phi, loss, bias over the window
    window: int = LIVE_WINDOW_DAYS
    min_days: int = MIN_SCORED_DAYS
    tolerance: float = TOLERANCE

    @property
    def judged(self) -> bool:
        return self.f_norm is not None and self.scored_days >= self.min_days

    @property
    def degraded(self) -> bool:
        # judged: f_norm is set (mypy does not see through the property; this line is a mutant's anchor)
        return self.judged and self.f_norm < self.backtest_f_norm - self.tolerance  # type: ignore[operator]

    def verdict(self) -> str:
        """One sentence for logs, check metadata and run tags."""
        who = f"{self.model} v{self.model_version}"
        if not self.judged:
            return (
                f"{who}: {self.scored_days} scored day(s) so far; judged from {self.min_days} "
                f"(backtest f_norm {self.backtest_f_norm:.4f})"
            )
        gap = cast(float, self.f_norm) - self.backtest_f_norm  # judged: f_norm is set
        return (
            f"{who}: live f_norm {self.f_norm:.4f} over the last {self.scored_days} scored days "
            f"({self.first_day}..{self.last_day}) vs backtest {self.backtest_f_norm:.4f} ({gap:+.4f}; "
            f"degraded below {-self.tolerance:+.2f})"
        )


def live_score(
    vintages: pl.DataFrame,
    actuals: pl.DataFrame,
    model_version: int,
    model: str,
    backtest_f_norm: float,
    trained_through: date,
    window: int = LIVE_WINDOW_DAYS,
    min_days: int = MIN_SCORED_DAYS,
    tolerance: float = TOLERANCE,
) -> LiveScore:
    """The version's pooled score over the last `window` days it has forecasts and actuals for.

    Vintages on or before `trained_through` are hindcasts (the model was fitted on their days) and
    do not count.
    """
    as_of = cast(date, actuals["ds"].max())
    own = vintages.filter((pl.col("model_version") == model_version) & (pl.col("vintage") > trained_through))
    joined = _scored(own.filter(pl.col("ds") <= as_of), actuals)
    days = sorted(joined["ds"].unique().to_list())[-window:]
    joined = joined.filter(pl.col("ds").is_in(days))
    empty = pl.DataFrame(schema={k: v for k, v in ARTIST_SCORE_SCHEMA.items() if k != "vintage"})
    artists = _artist_errors(joined) if days else empty
    total = artists["phi"].sum() if days else 0
    return LiveScore(
        model_version=model_version,
        model=model,
        backtest_f_norm=backtest_f_norm,
        as_of=as_of,
        scored_days=len(days),
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        forecasts=joined.height,
        f_norm=1 - float(artists["loss"].sum()) if total else None,
        artists=artists.sort("loss", descending=True, nulls_last=True),
        window=window,
        min_days=min_days,
        tolerance=tolerance,
    )
