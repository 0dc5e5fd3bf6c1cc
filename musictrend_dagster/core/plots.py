"""Small, deterministic PNG charts for Dagster metadata and MLflow artifacts.

Figures are built with matplotlib's object API (no pyplot): no global backend or figure
state, so concurrent assets cannot step on each other. PNGs are saved at 80 dpi without the
matplotlib version stamp, so the same input gives the same bytes and stays well under
~150 KB for base64 embedding in markdown.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
from matplotlib.figure import Figure


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
    start = forecast["ds"].min()
    tail = history.filter((pl.col("ds") < start) & (pl.col("ds") >= start - timedelta(days=HISTORY_TAIL_DAYS)))
    chosen = artists or _largest(history if history.height else forecast, top_n)
    has_band = {"plays_lo", "plays_hi"} <= set(forecast.columns)
    rows, cols = _grid(len(chosen))
    fig = Figure(figsize=(5 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, artist in zip(axes, chosen):
        h = tail.filter(pl.col("artist_id") == artist).sort("ds")
        f = forecast.filter(pl.col("artist_id") == artist).sort("ds")
        ax.plot(h["ds"].to_list(), h["plays"].to_list(), color="0.45", lw=1, label="history")
        if actual is not None:
            a = actual.filter(pl.col("artist_id") == artist).sort("ds")
            ax.plot(a["ds"].to_list(), a["plays"].to_list(), color="tab:blue", lw=1, label="actual")
        if has_band:
            ax.fill_between(f["ds"].to_list(), f["plays_lo"].to_list(), f["plays_hi"].to_list(), color="tab:red",
                            alpha=0.15, lw=0, label="80% interval")
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
    best = means["mean"].max()
    competitive = means.filter(pl.col("mean") >= best - COMPETITIVE_RANGE)
    left = min(scores.filter(pl.col("model").is_in(competitive["model"]))["f_norm"].min(), competitive["mean"].min()) - _PAD
    right = max(scores["f_norm"].max(), best) + _PAD

    fig = Figure(figsize=(8, 0.45 * len(ordered) + 1.9), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(left, right)
    y = list(range(len(ordered)))
    ax.barh(y, [max(m, left) - left for m in means["mean"]], left=left, color="0.85", label="mean over origins")
    for i, (model, mean) in enumerate(means.iter_rows()):
        rows = scores.filter(pl.col("model") == model).sort("origin")
        off = []
        for k, (origin, value) in enumerate(zip(rows["origin"], rows["f_norm"])):
            if value < left:  # stacked a little apart at the edge, so each origin's colour shows
                ax.plot(left, i + 0.2 * (k - (rows.height - 1) / 2), "<", ms=6, color=colors[origin], clip_on=False)
                off.append(value)
            else:
                ax.plot(value, i, "o", ms=5, color=colors[origin])
        if mean < left or off:
            written = ([f"mean {mean:.4f}"] if mean < left else []) + ([f"origins {', '.join(f'{v:.4f}' for v in off)}"] if off else [])
            ax.text(left + 0.015 * (right - left), i, "off-axis: " + "; ".join(written), va="center",
                    fontsize=7, color="0.25")
    for origin in origins:
        ax.plot([], [], "o", color=colors[origin], label=f"origin {origin.isoformat()}")
    ax.set_yticks(y, [f"{m}  {v:.4f}" for m, v in means.iter_rows()], fontsize=8)
    ax.set_xlabel("f_norm (1.0 = perfect)")
    ax.set_title("Backtest: mean f_norm per model (bars), each origin's score (dots)", fontsize=10)
    fig.legend(loc="outside lower center", ncol=min(len(origins) + 1, 4), fontsize=7, frameon=False)
    return fig
