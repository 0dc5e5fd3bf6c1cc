"""Charts are valid, small, deterministic PNGs."""
from datetime import date, timedelta

import polars as pl
import pytest

from musictrend_dagster.core.plots import plot_artist_daily, plot_backtest_table, plot_forecast_vs_actual

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 150_000


def daily(n_artists: int = 9, days: int = 120, first: date = date(2015, 3, 1)) -> pl.DataFrame:
    rows = [
        (f"artist{a:02d}", first + timedelta(days=k), (a + 1) * 100 + (k * 37 + a * 11) % 50)
        for a in range(n_artists)
        for k in range(days)
    ]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")


def check_png(path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert 5_000 < len(data) < MAX_BYTES
    return data


def test_forecast_vs_actual(tmp_path):
    full = daily()
    start = date(2015, 6, 1)
    history, actual = full.filter(pl.col("ds") < start), full.filter(pl.col("ds") >= start)
    forecast = actual.with_columns(pl.col("plays").cast(pl.Float64) * 0.9)
    out = plot_forecast_vs_actual(history, forecast, actual, path=tmp_path / "sub" / "f.png")
    first = check_png(out)
    again = plot_forecast_vs_actual(history, forecast, actual, path=tmp_path / "f2.png")
    assert again.read_bytes() == first  # deterministic
    # without actuals (production forecast) and for chosen artists
    check_png(plot_forecast_vs_actual(history, forecast, None, artists=["artist00"], path=tmp_path / "one.png"))


def test_artist_daily(tmp_path):
    check_png(plot_artist_daily(daily(), top_n=8, path=tmp_path / "d.png"))


def test_backtest_table(tmp_path):
    origins = [date(2015, 5, 3) + timedelta(days=30 * i) for i in range(3)]
    scores = pl.DataFrame(
        {
            "model": ["median14"] * 3 + ["lstm"] * 3,
            "origin": origins * 2,
            "f_norm": [0.72, 0.74, 0.69, 0.75, 0.70, -0.2],
        }
    )
    check_png(plot_backtest_table(scores, tmp_path / "t.png"))


def test_empty_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no backtest results"):
        plot_backtest_table(pl.DataFrame(schema={"model": pl.String, "origin": pl.Date, "f_norm": pl.Float64}), tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_artist_daily(daily().head(0), path=tmp_path / "x.png")
