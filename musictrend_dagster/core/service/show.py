"""`musictrend show SERIES_ID`: how one series did lately and what the vintage forecasts for it.

Reads the warehouse: the vintage's rows of `forecast_vintages` (the newest unless asked) and the
series' actual plays from `artist_daily`, before the vintage (history) and from it on (the actuals
that have arrived since). Prints a compact weekly table and draws the same as a PNG.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import cast

import duckdb
import polars as pl

from musictrend_dagster.core.data.warehouse import VINTAGES_SQL
from musictrend_dagster.core.service.store import query

TABLE_WEEKS = 4
CHART_HISTORY_DAYS = (28, 90)  # the chart shows twice the horizon of history, within these bounds
_CLOSE = 5
_WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@dataclass(frozen=True)
class SeriesView:
    """One series in one vintage: `history` (ds, plays) up to data_through, `forecast` (ds, forecast,
    lo80, hi80, actual: null until that day's plays arrive)."""

    series_id: str
    vintage: date
    data_through: date
    model: str
    model_version: int | None
    history: pl.DataFrame
    forecast: pl.DataFrame

    @property
    def horizon(self) -> int:
        return self.forecast.height

    @property
    def title(self) -> str:
        version = f" v{self.model_version}" if self.model_version is not None else ""
        return f"{self.series_id}: {self.model}{version}, data through {self.data_through}"


def resolve_series(requested: str, known: list[str], vintage: date) -> str:
    """The id asked for: itself, or the one known id it is a prefix of; else an error naming close ids."""
    if requested in known:
        return requested
    prefixed = sorted(k for k in known if k.startswith(requested)) if requested else []
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        shown = ", ".join(prefixed[:_CLOSE]) + (", ..." if len(prefixed) > _CLOSE else "")
        raise ValueError(f"series {requested!r} is the start of {len(prefixed)} ids: {shown}")
    close = difflib.get_close_matches(requested, known, n=_CLOSE, cutoff=0.5) or sorted(known)[:_CLOSE]
    raise ValueError(
        f"no series {requested!r} in the forecast of vintage {vintage} ({len(known)} series); "
        f"close ids: {', '.join(close)}"
    )


def load_series(con: duckdb.DuckDBPyConnection, series_id: str, vintage: date | None = None) -> SeriesView:
    """The series' view in `vintage` (default: the newest); unknown ids and vintages are clear errors."""
    con.execute(VINTAGES_SQL)  # also brings a warehouse of an earlier release up to date
    made = [r[0] for r in con.execute("SELECT DISTINCT vintage FROM forecast_vintages ORDER BY vintage").fetchall()]
    if not made:
        raise ValueError("no forecast yet: make one with `musictrend run`")
    chosen = vintage or made[-1]
    if chosen not in made:
        raise ValueError(f"no vintage {chosen}; the newest: {', '.join(str(v) for v in made[-_CLOSE:])}")
    known = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT artist_id FROM forecast_vintages WHERE vintage = ? ORDER BY artist_id", [chosen]
        ).fetchall()
    ]
    series_id = resolve_series(series_id, known, chosen)
    rows = query(
        con,
        "SELECT * FROM forecast_vintages WHERE vintage = ? AND artist_id = ? ORDER BY ds",
        [chosen, series_id],
    )
    first = rows.row(0, named=True)
    data_through = first["data_through"]
    days = min(max(2 * rows.height, CHART_HISTORY_DAYS[0]), CHART_HISTORY_DAYS[1])
    actual = query(
        con,
        "SELECT ds, plays FROM artist_daily WHERE artist_id = ? AND ds > ? AND ds <= ? ORDER BY ds",
        [series_id, data_through - timedelta(days=max(days, TABLE_WEEKS * 7)), rows["ds"].max()],
    ).with_columns(pl.col("plays").cast(pl.Int64))
    forecast = rows.select("ds", forecast="plays", lo80="plays_lo", hi80="plays_hi").join(
        actual.rename({"plays": "actual"}), on="ds", how="left"
    )
    return SeriesView(
        series_id=series_id,
        vintage=chosen,
        data_through=data_through,
        model=first["model"],
        model_version=first["model_version"],
        history=actual.filter(pl.col("ds") <= data_through),
        forecast=forecast,
    )


def _week_rows(frame: pl.DataFrame, columns: list[tuple[str, str]], width: int) -> list[str]:
    """Calendar weeks (Monday first) of `frame`, one line per (label, column), blanks outside its days."""
    if frame.is_empty():
        return []
    lines = []
    by_day = {row["ds"]: row for row in frame.iter_rows(named=True)}
    first, last = cast(date, frame["ds"].min()), cast(date, frame["ds"].max())
    monday = first - timedelta(days=first.weekday())
    while monday <= last:
        week = [monday + timedelta(days=k) for k in range(7)]
        for i, (label, column) in enumerate(columns):
            values = [by_day.get(d, {}).get(column) for d in week]
            if i and all(v is None for v in values):
                continue  # no actual has arrived this week yet
            cells = "".join(f"{'' if v is None else f'{v:,.0f}':>{width}}" for v in values)
            lines.append(f"  {str(monday) if i == 0 else '':<10}  {label:<8}{cells}".rstrip())
        monday += timedelta(days=7)
    return lines


def series_table(view: SeriesView) -> str:
    """The last four weeks of actual plays, then the forecast, its 80% interval and the actuals that
    have arrived since, by calendar week."""
    recent = view.history.filter(pl.col("ds") > view.data_through - timedelta(days=TABLE_WEEKS * 7))
    values = [*recent["plays"].to_list(), *view.forecast["hi80"].drop_nulls().to_list(), 0]
    width = max(len(f"{max(values):,.0f}"), 5) + 2
    header = f"  {'week of':<10}  {'':<8}" + "".join(f"{d:>{width}}" for d in _WEEKDAYS)
    lines = [view.title, f"last {TABLE_WEEKS} weeks, actual plays", header]
    lines += _week_rows(recent, [("actual", "plays")], width) or ["  (no plays recorded in these weeks)"]
    arrived = view.forecast["actual"].drop_nulls().len()
    lines += [
        "",
        f"forecast from {view.vintage}, {view.horizon} days, 80% interval"
        + (f"; actuals arrived for {arrived} of its days" if arrived else ""),
        header,
    ]
    lines += _week_rows(
        view.forecast, [("forecast", "forecast"), ("lo80", "lo80"), ("hi80", "hi80"), ("actual", "actual")], width
    )
    return "\n".join(lines)


def chart_path(output_dir: Path, view: SeriesView) -> Path:
    """output/series/<id>_<vintage>.png, the id made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", view.series_id)
    return Path(output_dir) / "series" / f"{safe}_{view.vintage:%Y%m%d}.png"
