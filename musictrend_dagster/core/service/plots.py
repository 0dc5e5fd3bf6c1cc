"""Small, deterministic PNG charts for Dagster metadata and MLflow artifacts.

Figures are built with matplotlib's object API (no pyplot): no global backend or figure
state, so concurrent assets cannot step on each other. PNGs are saved at 80 dpi without the
matplotlib version stamp, so the same input gives the same bytes and stays well under
~150 KB for base64 embedding in markdown.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import cast

import polars as pl
from matplotlib.dates import MO, DateFormatter, WeekdayLocator, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

DPI = 80
HISTORY_TAIL_DAYS = 90
# Backtest chart: models whose mean f_norm is within this of the best set the x range; _PAD around it.
COMPETITIVE_RANGE = 0.15
_PAD = 0.02
_PNG_METADATA = {"Software": None}


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata=_PNG_METADATA)
    return path


def _largest(frame: pl.DataFrame, top_n: int) -> list[str]:
    """Artist ids by total plays, largest first; ties broken by id so the choice is stable."""
    return (
        frame.group_by("artist_id")
        .agg(total=pl.col("plays").cast(pl.Float64).sum())
        .sort(["total", "artist_id"], descending=[True, False])
        .head(top_n)["artist_id"]
        .to_list()
    )


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n == 1 else 2 if n <= 6 else 3
    return -(-n // cols), cols


def _short(artist_id: str) -> str:
    return artist_id[:8]


def forecast_figure(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    actual: pl.DataFrame | None = None,
    artists: list[str] | None = None,
    top_n: int = 6,
) -> Figure:
    """One panel per artist (the largest `top_n` unless `artists` is given, largest first): the last
    90 days of history, the actuals if known, the forecast and its 80% interval band if the
    forecast carries one (plays_lo, plays_hi)."""
    if not forecast.height:
        raise ValueError("forecast is empty: nothing to plot")
    start = cast(date, forecast["ds"].min())
    tail = history.filter((pl.col("ds") < start) & (pl.col("ds") >= start - timedelta(days=HISTORY_TAIL_DAYS)))
    chosen = artists or _largest(history if history.height else forecast, top_n)
    has_band = {"plays_lo", "plays_hi"} <= set(forecast.columns)
    rows, cols = _grid(len(chosen))
    fig = Figure(figsize=(5 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, artist in zip(axes, chosen, strict=False):
        h = tail.filter(pl.col("artist_id") == artist).sort("ds")
        f = forecast.filter(pl.col("artist_id") == artist).sort("ds")
        ax.plot(h["ds"].to_list(), h["plays"].to_list(), color="0.45", lw=1, label="history")
        if actual is not None:
            a = actual.filter(pl.col("artist_id") == artist).sort("ds")
            ax.plot(a["ds"].to_list(), a["plays"].to_list(), color="tab:blue", lw=1, label="actual")
        if has_band:
            ax.fill_between(
                f["ds"].to_list(),
                f["plays_lo"].to_list(),
                f["plays_hi"].to_list(),
                color="tab:red",
                alpha=0.15,
                lw=0,
                label="80% interval",
            )
        ax.plot(f["ds"].to_list(), f["plays"].to_list(), color="tab:red", lw=1.5, label="forecast")
        ax.axvline(start, color="0.7", lw=0.8, ls="--")
        ax.set_title(_short(artist), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Daily plays: forecast from {start.isoformat()}", fontsize=10)
    return fig


def plot_forecast_vs_actual(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    actual: pl.DataFrame | None = None,
    artists: list[str] | None = None,
    top_n: int = 6,
    *,
    path: Path,
) -> Path:
    """`forecast_figure` as a PNG at `path`."""
    return _save(forecast_figure(history, forecast, actual, artists, top_n), path)


def series_figure(history: pl.DataFrame, forecast: pl.DataFrame, title: str) -> Figure:
    """One series: its history (ds, plays), the forecast (ds, forecast, lo80, hi80) with its 80% band, and
    the actuals that have arrived since (`actual`, null until they do), dots on the forecast's days."""
    if forecast.is_empty():
        raise ValueError("forecast is empty: nothing to plot")
    start = cast(date, forecast["ds"].min())
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.subplots()
    ax.grid(axis="y", color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    ax.plot(history["ds"].to_list(), history["plays"].to_list(), color="0.35", lw=1.2, label="actual plays")
    banded = forecast.drop_nulls(["lo80", "hi80"])
    if banded.height:
        ax.fill_between(
            banded["ds"].to_list(),
            banded["lo80"].to_list(),
            banded["hi80"].to_list(),
            color="tab:red",
            alpha=0.15,
            lw=0,
            label="80% interval",
        )
    ax.plot(forecast["ds"].to_list(), forecast["forecast"].to_list(), color="tab:red", lw=1.8, label="forecast")
    arrived = forecast.drop_nulls("actual")
    if arrived.height:
        ax.plot(
            arrived["ds"].to_list(),
            arrived["actual"].to_list(),
            "o-",
            color="tab:blue",
            ms=3,
            lw=1,
            label="actual since the forecast",
        )
    x0 = float(date2num(start))  # matplotlib's day numbers: what its axes take
    ax.axvline(x0, color="0.6", lw=0.8, ls="--")
    ax.text(x0, 1.0, f" forecast from {start}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.4")
    first = min(cast(date | None, history["ds"].min()) or start, start)
    last = cast(date, forecast["ds"].max())
    # Mondays, few enough to read: the weekly rhythm of plays lines up with the grid
    ax.xaxis.set_major_locator(WeekdayLocator(byweekday=MO, interval=max(1, -(-(last - first).days // 70))))
    ax.xaxis.set_major_formatter(DateFormatter("%b %d"))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(axis="x", color="0.95", lw=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlim(float(date2num(first)) - 0.5, float(date2num(last)) + 0.5)  # the end days' points clear of the axes
    ax.set_ylabel("plays per day")
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, loc="left")
    return fig


def plot_series(history: pl.DataFrame, forecast: pl.DataFrame, title: str, *, path: Path) -> Path:
    """`series_figure` as a PNG at `path`."""
    return _save(series_figure(history, forecast, title), path)


def plot_artist_daily(daily: pl.DataFrame, top_n: int = 8, *, path: Path) -> Path:
    """`artist_daily_figure` as a PNG at `path`."""
    return _save(artist_daily_figure(daily, top_n), path)


def artist_daily_figure(daily: pl.DataFrame, top_n: int = 8) -> Figure:
    """Plays per day of the largest artists on one chart (largest first): the shape of the data at a glance."""
    if not daily.height:
        raise ValueError("daily frame is empty: nothing to plot")
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    for artist in _largest(daily, top_n):
        d = daily.filter(pl.col("artist_id") == artist).sort("ds")
        ax.plot(d["ds"].to_list(), d["plays"].to_list(), lw=1, label=_short(artist))
    ax.set_ylabel("plays per day")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_title(f"Daily plays, {min(top_n, daily['artist_id'].n_unique())} largest artists", fontsize=10)
    return fig


def plot_backtest_table(scores: pl.DataFrame, path: Path) -> Path:
    """`backtest_figure` as a PNG at `path`."""
    return _save(backtest_figure(scores), path)


def backtest_figure(scores: pl.DataFrame) -> Figure:
    """Mean f_norm per model as bars (best on top, the mean written in its label), each origin's score as a dot.

    The x axis spans the competitive range: the models whose mean is within `COMPETITIVE_RANGE` of the
    best. A model far below (the 2016 LSTM at 0.19 next to 0.70-0.76) would squash every other bar into
    the same length, so what falls left of the axis is drawn at its edge as a triangle with its value
    written. The legend sits below the chart, clear of the data.

    `scores` has one row per model and origin: model, origin, f_norm (the `backtest_scores` table).
    """
    if scores.is_empty():
        raise ValueError("no backtest results to plot")
    means = scores.group_by("model").agg(mean=pl.col("f_norm").mean()).sort(["mean", "model"])
    ordered = means["model"].to_list()
    origins = sorted(scores["origin"].unique().to_list())
    colors = {o: f"C{i % 10}" for i, o in enumerate(origins)}
    best = cast(float, means["mean"].max())
    competitive = means.filter(pl.col("mean") >= best - COMPETITIVE_RANGE)
    left = (
        min(
            cast(float, scores.filter(pl.col("model").is_in(competitive["model"]))["f_norm"].min()),
            cast(float, competitive["mean"].min()),
        )
        - _PAD
    )
    right = max(cast(float, scores["f_norm"].max()), best) + _PAD

    fig = Figure(figsize=(8, 0.45 * len(ordered) + 1.9), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(left, right)
    y = list(range(len(ordered)))
    ax.barh(y, [max(m, left) - left for m in means["mean"]], left=left, color="0.85", label="mean over origins")
    for i, (model, mean) in enumerate(means.iter_rows()):
        rows = scores.filter(pl.col("model") == model).sort("origin")
        off = []
        for k, (origin, value) in enumerate(zip(rows["origin"], rows["f_norm"], strict=False)):
            if value < left:  # stacked a little apart at the edge, so each origin's colour shows
                ax.plot(left, i + 0.2 * (k - (rows.height - 1) / 2), "<", ms=6, color=colors[origin], clip_on=False)
                off.append(value)
            else:
                ax.plot(value, i, "o", ms=5, color=colors[origin])
        if mean < left or off:
            written = ([f"mean {mean:.4f}"] if mean < left else []) + (
                [f"origins {', '.join(f'{v:.4f}' for v in off)}"] if off else []
            )
            ax.text(
                left + 0.015 * (right - left),
                i,
                "off-axis: " + "; ".join(written),
                va="center",
                fontsize=7,
                color="0.25",
            )
    for origin in origins:
        ax.plot([], [], "o", color=colors[origin], label=f"origin {origin.isoformat()}")
    ax.set_yticks(y, [f"{m}  {v:.4f}" for m, v in means.iter_rows()], fontsize=8)
    ax.set_xlabel("f_norm (1.0 = perfect)")
    ax.set_title("Backtest: mean f_norm per model (bars), each origin's score (dots)", fontsize=10)
    fig.legend(loc="outside lower center", ncol=min(len(origins) + 1, 4), fontsize=7, frameon=False)
    return fig


# ---- live monitoring --------------------------------------------------------------------------


def monitoring_figure(
    scores: pl.DataFrame, live: pl.DataFrame, selections: pl.DataFrame, tolerance: float, horizon: int = 60
) -> Figure:
    """The service's live scores against what the backtests promised, over the calendar.

    `scores` (vintage, model_version, days_scored, f_norm): each vintage's f_norm as a dot at its first
    forecast day, paler the fewer of its `horizon` days are scored yet. `live` (as_of, f_norm, judged):
    the champion's live score over its last scored days, by newest actual day (dotted while too few
    days are scored to judge). `selections` (model_version, model, data_through, backtest_f_norm): each
    registered version's backtest score as a dashed step from its first forecast day, the warning
    threshold (backtest - tolerance) dotted beneath, and a labelled line where it took over.
    """
    if scores.is_empty() and live.is_empty():
        raise ValueError("nothing scored yet: no vintage has an actual day")
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    versions = sorted(selections["model_version"].to_list())
    color = {v: f"C{i % 10}" for i, v in enumerate(versions)}
    days = scores["vintage"].to_list() + live["as_of"].to_list()
    end = max(days) + timedelta(days=1)
    values = scores["f_norm"].drop_nulls().to_list() + live["f_norm"].drop_nulls().to_list()
    rows = selections.sort("model_version").iter_rows(named=True)
    starts = [(r, r["data_through"] + timedelta(days=1)) for r in rows]
    for i, (row, start) in enumerate(starts):
        stop = starts[i + 1][1] if i + 1 < len(starts) else end
        if stop <= min(days):
            continue
        start = max(start, min(days))
        c = color[row["model_version"]]
        ax.plot([start, stop], [row["backtest_f_norm"]] * 2, ls="--", lw=1.2, color=c)
        ax.plot([start, stop], [row["backtest_f_norm"] - tolerance] * 2, ls=":", lw=1, color=c)
        ax.axvline(start, color=c, lw=0.6, alpha=0.6)
        ax.text(
            start,
            1.0,
            f" v{row['model_version']} {row['model']}",
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize=7,
            color=c,
            rotation=90,
        )
        values += [row["backtest_f_norm"], row["backtest_f_norm"] - tolerance]
    for row in scores.drop_nulls("f_norm").iter_rows(named=True):
        alpha = 0.2 + 0.8 * min(row["days_scored"], horizon) / horizon
        ax.plot(row["vintage"], row["f_norm"], "o", ms=4, alpha=alpha, color=color.get(row["model_version"], "0.4"))
    judged = live.filter(pl.col("judged"))
    ax.plot(live["as_of"].to_list(), live["f_norm"].to_list(), ls=":", lw=1, color="k")
    ax.plot(judged["as_of"].to_list(), judged["f_norm"].to_list(), "-", lw=2, color="k")
    ax.plot([], [], "o", color="0.4", ms=4, label="f_norm of each vintage (paler: fewer days scored)")
    ax.plot(
        [], [], "-", lw=2, color="k", label="champion's live f_norm, last 14 scored days (dotted: too few to judge)"
    )
    ax.plot([], [], "--", color="0.3", label="its backtest f_norm")
    ax.plot([], [], ":", color="0.3", label=f"warning threshold (backtest - {tolerance:.2f})")
    low, high = min(values), max(values)
    ax.set_ylim(low - 0.04 if low < 0 else max(0.0, low - 0.04), high + 0.04)
    ax.set_ylabel("f_norm (1.0 = perfect)")
    ax.set_xlabel("vintage (first forecast day) / newest actual day")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Live monitoring: forecasts scored against what happened", fontsize=10)
    ax.tick_params(labelsize=7)
    return fig


def plot_monitoring(
    scores: pl.DataFrame, live: pl.DataFrame, selections: pl.DataFrame, tolerance: float, *, path: Path
) -> Path:
    """`monitoring_figure` as a PNG at `path`."""
    return _save(monitoring_figure(scores, live, selections, tolerance), path)


def worst_artists_figure(artists: pl.DataFrame, top_n: int = 10) -> Figure:
    """The artists that cost the live score most: bars of loss (sigma * phi / sum phi, what each takes off
    f_norm), labelled with sigma and the bias sum(S - T) / sum(T) (negative: under-forecast)."""
    if artists.is_empty():
        raise ValueError("no artist scored yet")
    worst = artists.drop_nulls("loss").sort(["loss", "artist_id"], descending=[True, False]).head(top_n).reverse()
    fig = Figure(figsize=(7, 0.35 * worst.height + 1.4), layout="constrained")
    ax = fig.subplots()
    y = list(range(worst.height))
    ax.barh(y, worst["loss"].to_list(), color="tab:red", alpha=0.6)
    ax.set_yticks(y, [_short(a) for a in worst["artist_id"].to_list()], fontsize=8)
    for i, row in enumerate(worst.iter_rows(named=True)):
        ax.text(row["loss"], i, f" sigma {row['sigma']:.2f}, bias {row['bias']:+.0%}", va="center", fontsize=7)
    ax.set_xlim(0, max(worst["loss"].to_list()) * 1.6)
    ax.set_xlabel("f_norm lost to this artist (sigma x phi / sum phi)")
    ax.set_title(f"Worst {worst.height} artists of the champion's live window", fontsize=10)
    return fig


def plot_worst_artists(artists: pl.DataFrame, top_n: int = 10, *, path: Path) -> Path:
    """`worst_artists_figure` as a PNG at `path`."""
    return _save(worst_artists_figure(artists, top_n), path)
