"""Charts: what each one draws (panels, series, values, the interval band) and byte-identical PNGs per input."""

from datetime import date, timedelta

import polars as pl
import pytest
from matplotlib.collections import PolyCollection

from musictrend_dagster.core.service.plots import (
    artist_daily_figure,
    backtest_figure,
    forecast_figure,
    plot_artist_daily,
    plot_backtest_table,
    plot_forecast_vs_actual,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 150_000
START = date(2015, 6, 1)


def daily(n_artists: int = 9, days: int = 120, first: date = date(2015, 3, 1)) -> pl.DataFrame:
    """artistNN plays about (NN + 1) * 100 a day: artist08 is the largest, then artist07, ..."""
    rows = [
        (f"artist{a:02d}", first + timedelta(days=k), (a + 1) * 100 + (k * 37 + a * 11) % 50)
        for a in range(n_artists)
        for k in range(days)
    ]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")


def split():
    full = daily()
    history, actual = full.filter(pl.col("ds") < START), full.filter(pl.col("ds") >= START)
    forecast = actual.with_columns(pl.col("plays").cast(pl.Float64) * 0.9)
    banded = forecast.with_columns(plays_lo=pl.col("plays") * 0.5, plays_hi=pl.col("plays") * 1.5)
    return history, actual, forecast, banded


def lines(ax) -> dict[str, list]:
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines() if not line.get_label().startswith("_")}


def check_png(path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert 5_000 < len(data) < MAX_BYTES
    return data


def test_forecast_panels_show_the_largest_artists_with_their_series_and_band():
    history, actual, forecast, banded = split()
    fig = forecast_figure(history, banded, actual, top_n=6)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["artist08", "artist07", "artist06", "artist05", "artist04", "artist03"]
    first = panels[0]
    series = lines(first)
    one = lambda frame: frame.filter(pl.col("artist_id") == "artist08").sort("ds")  # noqa: E731
    assert series["history"] == one(history).filter(pl.col("ds") >= START - timedelta(days=90))["plays"].to_list()
    assert series["actual"] == one(actual)["plays"].to_list()
    assert series["forecast"] == one(banded)["plays"].to_list()
    bands = [c for c in first.collections if isinstance(c, PolyCollection) and c.get_label() == "80% interval"]
    assert len(bands) == 1
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(min(one(banded)["plays_lo"])) and max(ys) == pytest.approx(
        max(one(banded)["plays_hi"])
    )
    assert fig.get_suptitle() == "Daily plays: forecast from 2015-06-01"
    # no actuals (the production forecast), no band, one chosen artist
    alone = forecast_figure(history, forecast, None, artists=["artist00"])
    (ax,) = [a for a in alone.axes if a.get_visible()]
    assert ax.get_title() == "artist00" and set(lines(ax)) == {"history", "forecast"}
    assert not [c for c in ax.collections if c.get_label() == "80% interval"]


def test_artist_daily_draws_the_largest_artists_largest_first():
    frame = daily()
    fig = artist_daily_figure(frame, top_n=3)
    series = lines(fig.axes[0])
    assert list(series) == ["artist08", "artist07", "artist06"]
    assert series["artist07"] == frame.filter(pl.col("artist_id") == "artist07").sort("ds")["plays"].to_list()


def test_backtest_bars_are_the_means_best_on_top_and_show_close_negative_scores():
    origins = [date(2015, 5, 3) + timedelta(days=30 * i) for i in range(3)]
    scores = pl.DataFrame(
        {
            "model": ["median14"] * 3 + ["lstm"] * 3,
            "origin": origins * 2,
            "f_norm": [-0.02, 0.04, -0.03, 0.05, 0.0, -0.2],
        }
    )
    ax = backtest_figure(scores).axes[0]
    # bars end at the means (-0.05/3 and -0.15/3), written in the labels; best on top
    ends = {t.get_text(): p.get_x() + p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches, strict=False)}
    assert ends == pytest.approx({"lstm  -0.0500": -0.05, "median14  -0.0033": -0.01 / 3})
    dots = sorted(x for line in ax.get_lines() for x in line.get_xdata())
    assert dots == pytest.approx(sorted(scores["f_norm"].to_list()))
    assert ax.get_xlim()[0] == pytest.approx(-0.22)  # both models compete: the negative score is inside the chart
    assert not ax.texts  # nothing off-axis


# One tianchi-s1-like backtest: six models within 0.06 of each other and the 2016 LSTM far below.
BOARD = {
    "global_ensemble": [0.7601, 0.7488, 0.7600],
    "global_direct": [0.7512, 0.7401, 0.7524],
    "median14": [0.7211, 0.7100, 0.7265],
    "best_constant": [0.7081, 0.6990, 0.7097],
    "seed_lstm": [0.3121, -0.2950, 0.5517],
}


def board_scores() -> pl.DataFrame:
    origins = [date(2015, 5, 3), date(2015, 6, 2), date(2015, 7, 2)]
    rows = [(m, o, v) for m, vs in BOARD.items() for o, v in zip(origins, vs, strict=False)]
    return pl.DataFrame(rows, schema={"model": pl.String, "origin": pl.Date, "f_norm": pl.Float64}, orient="row")


def test_backtest_chart_zooms_on_the_competitive_models_and_writes_the_outlier():
    fig = backtest_figure(board_scores())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [  # means by hand, best on top
        "seed_lstm  0.1896",
        "best_constant  0.7056",
        "median14  0.7192",
        "global_direct  0.7479",
        "global_ensemble  0.7563",
    ]
    # the axis spans the competitive scores (0.6990..0.7601) with 0.02 to spare, not -0.295..0.76
    assert ax.get_xlim() == pytest.approx((0.6790, 0.7801))
    assert [t.get_text() for t in ax.texts] == ["off-axis: mean 0.1896; origins 0.3121, -0.2950, 0.5517"]
    edge = [line for line in ax.get_lines() if line.get_marker() == "<"]
    assert len(edge) == 3 and all(line.get_xdata()[0] == pytest.approx(0.6790) for line in edge)
    assert len({line.get_color() for line in edge}) == 3 and len({line.get_ydata()[0] for line in edge}) == 3
    fig.draw_without_rendering()  # the legend sits below the chart: it covers no bar, dot or label
    legend, plot_area = fig.legends[0].get_window_extent(), ax.get_tightbbox()
    assert legend.y1 <= plot_area.y0


@pytest.mark.parametrize("chart", ["forecast", "artist_daily", "backtest"])
def test_every_chart_is_a_small_png_with_the_same_bytes_for_the_same_input(chart, tmp_path):
    history, actual, _, banded = split()
    scores = pl.DataFrame({"model": ["a", "b"], "origin": [START, START], "f_norm": [0.7, 0.6]})
    draw = {
        "forecast": lambda path: plot_forecast_vs_actual(history, banded, actual, path=path),
        "artist_daily": lambda path: plot_artist_daily(daily(), top_n=8, path=path),
        "backtest": lambda path: plot_backtest_table(scores, path),
    }[chart]
    first = check_png(draw(tmp_path / "sub" / "one.png"))
    assert draw(tmp_path / "two.png").read_bytes() == first


def test_empty_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no backtest results"):
        plot_backtest_table(
            pl.DataFrame(schema={"model": pl.String, "origin": pl.Date, "f_norm": pl.Float64}), tmp_path / "x.png"
        )
    with pytest.raises(ValueError, match="empty"):
        plot_artist_daily(daily().head(0), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_forecast_vs_actual(daily(), daily().head(0), path=tmp_path / "x.png")
