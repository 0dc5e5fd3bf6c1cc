"""What a vintage is published as: output/forecasts.csv and .parquet (exact columns, one row per series
and day, joinable back to the input on unique_id/ds, written atomically), the warehouse view `forecasts`,
the submission only for the tianchi source, and `musictrend show SERIES_ID` (table and PNG)."""

from __future__ import annotations

import math
import os
from datetime import date, timedelta

import duckdb
import polars as pl
import pytest
from matplotlib.collections import PolyCollection

from musictrend_dagster import cli
from musictrend_dagster.core.data.warehouse import connect
from musictrend_dagster.core.service.outputs import (
    FORECASTS_COLUMNS,
    read_forecasts,
    write_forecasts,
    write_submission,
)
from musictrend_dagster.core.service.plots import series_figure
from musictrend_dagster.core.service.show import load_series, resolve_series
from musictrend_dagster.core.service.store import load_forecasts, query, save_forecast
from musictrend_dagster.core.settings import FORECASTS_CSV, FORECASTS_PARQUET, Paths

SERIES = ["artist_a1", "artist_a2", "band_b"]
FIRST, THROUGH = date(2015, 6, 1), date(2015, 8, 9)  # 70 days of history
VINTAGE, HORIZON, ARRIVED = date(2015, 8, 10), 14, 5  # the actuals of the vintage's first 5 days are in


def plays(series: int, day: date) -> int:
    """Series k plays about 1000 * (k + 1) a day, higher at weekends."""
    return 1000 * (series + 1) + 150 * (day.weekday() >= 5) + (day.toordinal() * 37 + series * 11) % 90


def actual_frame() -> pl.DataFrame:
    last = VINTAGE + timedelta(days=ARRIVED - 1)
    days = [FIRST + timedelta(days=k) for k in range((last - FIRST).days + 1)]
    rows = [(s, d, plays(k, d)) for k, s in enumerate(SERIES) for d in days]
    return pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Int64}, orient="row")


def vintage_frame(vintage: date = VINTAGE, horizon: int = HORIZON) -> pl.DataFrame:
    """A forecast as the service saves it: artist_id, ds, plays with its interval."""
    rows = [
        (s, vintage + timedelta(days=h), 1000.0 * (k + 1) + 10 * h)
        for k, s in enumerate(SERIES)
        for h in range(horizon)
    ]
    frame = pl.DataFrame(rows, schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Float64}, orient="row")
    return frame.with_columns(plays_lo=pl.col("plays") * 0.8, plays_hi=pl.col("plays") * 1.3)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home whose warehouse holds artist_daily and two vintages (newest: VINTAGE) by v3 of a model."""
    for var in ("MUSICTREND_HOME", "MUSICTREND_RAW_DIR", "DAGSTER_HOME"):  # the CLI points these at --home
        monkeypatch.setenv(var, os.environ.get(var, ""))
    paths = Paths.from_env(home=tmp_path / "home")
    paths.home.mkdir(parents=True)
    con = connect(paths.warehouse)
    try:
        con.register("actual_frame", actual_frame().to_arrow())
        con.execute("CREATE TABLE artist_daily AS SELECT * FROM actual_frame")
        save_forecast(con, vintage_frame(VINTAGE - timedelta(days=7)), "global_direct", 2, THROUGH - timedelta(days=7))
        save_forecast(con, vintage_frame(), "global_ensemble", 3, THROUGH)
    finally:
        con.close()
    return paths


def published(paths: Paths) -> pl.DataFrame:
    con = connect(paths.warehouse)
    try:
        return load_forecasts(con)
    finally:
        con.close()


# ---- forecasts.csv / forecasts.parquet ------------------------------------------------------------


def test_the_files_have_exactly_the_columns_one_row_per_series_and_day(home, tmp_path):
    frame = published(home)
    csv, parquet = tmp_path / "out" / FORECASTS_CSV, tmp_path / "out" / FORECASTS_PARQUET
    assert write_forecasts(frame, csv, parquet) == len(SERIES) * HORIZON
    lines = csv.read_text().splitlines()
    assert lines[0] == "unique_id,ds,forecast,lo80,hi80,model,model_version,data_through"
    assert lines[1].split(",")[:2] == ["artist_a1", "2015-08-10"] and lines[1].endswith(",global_ensemble,3,2015-08-09")
    assert len(lines) == 1 + len(SERIES) * HORIZON
    from_csv, from_parquet = read_forecasts(csv), read_forecasts(parquet)
    assert from_csv.columns == from_parquet.columns == FORECASTS_COLUMNS
    assert from_csv.equals(from_parquet)
    assert from_csv.equals(frame.sort("unique_id", "ds"))  # the warehouse view, row for row
    assert from_csv.group_by("unique_id").len().sort("unique_id").rows() == [(s, HORIZON) for s in SERIES]
    assert from_csv.select(pl.struct("unique_id", "ds").is_unique().all()).item()
    assert sorted(p.name for p in csv.parent.iterdir()) == [FORECASTS_CSV, FORECASTS_PARQUET]  # no temp file left


def test_the_files_join_back_to_the_input_on_unique_id_and_ds(home, tmp_path):
    """The input's long format (unique_id, ds, y) and the forecasts join on their keys with no casts: the
    days whose actuals have arrived match, one row each."""
    write_forecasts(published(home), tmp_path / FORECASTS_CSV, tmp_path / FORECASTS_PARQUET)
    long = actual_frame().rename({"artist_id": "unique_id", "plays": "y"})
    for path in (tmp_path / FORECASTS_CSV, tmp_path / FORECASTS_PARQUET):
        joined = read_forecasts(path).join(long, on=["unique_id", "ds"], how="inner")
        assert joined.height == len(SERIES) * ARRIVED
        assert joined["ds"].min() == VINTAGE and joined["ds"].max() == VINTAGE + timedelta(days=ARRIVED - 1)
        row = joined.filter((pl.col("unique_id") == "band_b") & (pl.col("ds") == VINTAGE)).row(0, named=True)
        assert row["y"] == plays(2, VINTAGE) and row["forecast"] == 3000.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("lo80"), "exactly the columns"),
        (lambda f: f.with_columns(extra=pl.lit(1)), "exactly the columns"),
        (lambda f: pl.concat([f, f.head(1)]), "forecast twice"),
        (lambda f: f.with_columns(lo80=pl.col("forecast") + 1), "lo80 <= forecast <= hi80"),
        (lambda f: f.with_columns(forecast=pl.lit(math.nan)), "not finite"),
        (lambda f: f.with_columns(forecast=pl.lit(None, pl.Float64)), "not finite"),
        (lambda f: f.head(0), "no forecast rows"),
    ],
)
def test_a_broken_forecast_is_refused_and_the_published_files_stay(home, tmp_path, change, message):
    good = published(home)
    csv, parquet = tmp_path / FORECASTS_CSV, tmp_path / FORECASTS_PARQUET
    write_forecasts(good, csv, parquet)
    before = (csv.read_bytes(), parquet.read_bytes())
    with pytest.raises(ValueError, match=message):
        write_forecasts(change(good), csv, parquet)
    assert (csv.read_bytes(), parquet.read_bytes()) == before


def test_a_failed_write_leaves_the_previous_file_whole(home, tmp_path, monkeypatch):
    csv, parquet = tmp_path / FORECASTS_CSV, tmp_path / FORECASTS_PARQUET
    write_forecasts(published(home), csv, parquet)
    before = csv.read_bytes()

    def crash(self, file, **kwargs):
        with open(file, "w") as fh:
            fh.write("unique_id,ds\nhalf a li")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_csv", crash)
    with pytest.raises(OSError, match="disk full"):
        write_forecasts(published(home).with_columns(forecast=pl.col("forecast") + 1), csv, parquet)
    assert csv.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


# ---- the warehouse view ---------------------------------------------------------------------------


def test_the_view_is_the_newest_vintage_with_what_it_read(home):
    frame = published(home)
    assert frame.columns == FORECASTS_COLUMNS
    assert frame["ds"].min() == VINTAGE and frame.height == len(SERIES) * HORIZON
    assert frame["data_through"].unique().to_list() == [THROUGH]
    assert frame["model"].unique().to_list() == ["global_ensemble"] and frame["model_version"].unique().to_list() == [3]
    assert dict(zip(frame.columns, frame.dtypes, strict=True)) == {
        "unique_id": pl.String,
        "ds": pl.Date,
        "forecast": pl.Float64,
        "lo80": pl.Float64,
        "hi80": pl.Float64,
        "model": pl.String,
        "model_version": pl.Int32,
        "data_through": pl.Date,
    }


def test_a_warehouse_of_an_earlier_release_gains_data_through(tmp_path):
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute(
        "CREATE TABLE forecast_vintages (vintage DATE, artist_id VARCHAR, ds DATE, plays DOUBLE, plays_lo DOUBLE, "
        "plays_hi DOUBLE, model VARCHAR, model_version INTEGER)"
    )
    con.execute("INSERT INTO forecast_vintages VALUES ('2015-09-01', 'a', '2015-09-01', 5, 4, 6, 'median14', 1)")
    frame = load_forecasts(con)
    assert frame.rows() == [("a", date(2015, 9, 1), 5.0, 4.0, 6.0, "median14", 1, date(2015, 8, 31))]
    save_forecast(con, vintage_frame(date(2015, 9, 2), 2), "median14", 2, date(2015, 9, 1))  # and takes new ones
    assert query(con, "SELECT count(*) AS n FROM forecasts")["n"].item() == len(SERIES) * 2
    con.close()


def test_without_the_tianchi_source_there_is_no_submission_asset(tmp_path, monkeypatch):
    from musictrend_dagster import definitions

    keys = lambda defs: {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}  # noqa: E731
    checks = lambda defs: {k.name for k in defs.resolve_asset_graph().asset_check_keys}  # noqa: E731
    paths = Paths.from_env(home=tmp_path)
    tianchi = definitions.build_defs(paths)
    assert {"forecast_files", "submission"} <= keys(tianchi) and "submission_complete" in checks(tianchi)
    monkeypatch.setattr(definitions, "writes_submission", lambda: False)
    other = definitions.build_defs(paths)
    assert "forecast_files" in keys(other) and "submission" not in keys(other)
    assert "submission_complete" not in checks(other) and "forecast_files_match" in checks(other)
    daily = other.resolve_job_def("daily_forecast")
    assert "forecast_files" in {n.name for n in daily.nodes}


def test_the_submission_is_still_the_competition_file(home, tmp_path):
    frame = vintage_frame()
    path = tmp_path / "sub.csv"
    assert write_submission(frame, path) == len(SERIES) * HORIZON
    assert path.read_text().splitlines()[0] == "artist_a1,1000,20150810"
    assert not list(tmp_path.glob("*.tmp"))


# ---- musictrend show ------------------------------------------------------------------------------


def test_show_prints_four_weeks_the_forecast_and_its_interval_and_writes_a_png(home, capsys):
    assert cli.main(["show", "artist_a2", "--home", str(home.home)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "artist_a2: global_ensemble v3, data through 2015-08-09"
    assert lines[1] == "last 4 weeks, actual plays"
    header = lines[2].split()
    assert header == ["week", "of", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    # 28 days through Sunday 2015-08-09: four full calendar weeks from Monday 2015-07-13
    weeks = [line for line in lines[3:7] if "actual" in line]
    assert [w.split()[0] for w in weeks] == ["2015-07-13", "2015-07-20", "2015-07-27", "2015-08-03"]
    assert weeks[-1].split()[2:] == [f"{plays(1, THROUGH - timedelta(days=6 - k)):,}" for k in range(7)]
    assert "forecast from 2015-08-10, 14 days, 80% interval; actuals arrived for 5 of its days" in out
    at = lines.index(next(line for line in lines if line.startswith("forecast from")))
    week1 = lines[at + 2 : at + 6]
    assert [w.split()[1 if i == 0 else 0] for i, w in enumerate(week1)] == ["forecast", "lo80", "hi80", "actual"]
    assert week1[0].split()[2:] == [f"{2000 + 10 * h:,}" for h in range(7)]
    assert week1[1].split()[1:] == [f"{(2000 + 10 * h) * 0.8:,.0f}" for h in range(7)]
    assert week1[3].split()[1:] == [f"{plays(1, VINTAGE + timedelta(days=h)):,}" for h in range(ARRIVED)]
    week2 = lines[at + 6 : -2]  # then a blank line and the chart's path
    assert [w.split()[1 if i == 0 else 0] for i, w in enumerate(week2[:3])] == ["forecast", "lo80", "hi80"]
    assert not any(w.split()[0] == "actual" for w in week2)  # nothing has arrived for the second week
    chart = home.output_dir / "series" / "artist_a2_20150810.png"
    assert lines[-1] == f"chart: {chart}"
    first = chart.read_bytes()
    assert first.startswith(b"\x89PNG") and 5_000 < len(first) < 150_000
    assert cli.main(["show", "artist_a2", "--home", str(home.home)]) == 0
    assert chart.read_bytes() == first  # same input, same bytes


def test_show_takes_a_unique_start_of_an_id_and_an_older_vintage(home, capsys):
    assert cli.main(["show", "band", "--home", str(home.home), "--vintage", "2015-08-03"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("band_b: global_direct v2, data through 2015-08-02")
    assert "actuals arrived for 12 of its days" in out  # 2015-08-03..14 of its 14 days
    assert (home.output_dir / "series" / "band_b_20150803.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["artst_a1"], "no series 'artst_a1' in the forecast of vintage 2015-08-10 (3 series); close ids: artist_a1"),
        (["artist_a"], "series 'artist_a' is the start of 2 ids: artist_a1, artist_a2"),
        (["zzz"], "no series 'zzz' in the forecast of vintage 2015-08-10 (3 series); close ids: artist_a1, artist_a2"),
        (["band_b", "--vintage", "2015-08-11"], "no vintage 2015-08-11; the newest: 2015-08-03, 2015-08-10"),
        (["band_b", "--vintage", "tomorrow"], "--vintage must be a day, YYYY-MM-DD; got 'tomorrow'"),
    ],
)
def test_show_an_unknown_id_or_vintage_is_a_clear_error(home, capsys, argv, message):
    assert cli.main(["show", *argv, "--home", str(home.home)]) == 2
    assert message in capsys.readouterr().err
    assert not (home.output_dir / "series").exists()


def test_show_before_any_forecast_says_so(tmp_path, capsys, monkeypatch):
    for var in ("MUSICTREND_HOME", "MUSICTREND_RAW_DIR", "DAGSTER_HOME"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    assert cli.main(["show", "a", "--home", str(tmp_path / "empty")]) == 2
    assert "make a forecast first with `musictrend run`" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "warehouse.duckdb").exists()


def test_close_ids_fall_back_to_the_first_known_ones():
    with pytest.raises(ValueError, match=r"close ids: a, b, c, d, e$"):
        resolve_series("zzzzzz", list("gfedcba"), VINTAGE)


def test_the_chart_draws_history_forecast_band_and_the_arrived_actuals(home):
    con = connect(home.warehouse)
    try:
        view = load_series(con, "artist_a1")
    finally:
        con.close()
    ax = series_figure(view.history, view.forecast, view.title).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"actual plays", "forecast", "actual since the forecast"}
    history = actual_frame().filter((pl.col("artist_id") == "artist_a1") & (pl.col("ds") <= THROUGH))
    assert list(lines["actual plays"].get_ydata()) == history.tail(28)["plays"].to_list()  # 2 x 14 days, >= 28
    assert list(lines["forecast"].get_ydata()) == [1000.0 + 10 * h for h in range(HORIZON)]
    arrived = actual_frame().filter((pl.col("artist_id") == "artist_a1") & (pl.col("ds") >= VINTAGE))
    assert list(lines["actual since the forecast"].get_ydata()) == arrived["plays"].to_list()
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_label() == "80% interval"]
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(800.0) and max(ys) == pytest.approx((1000 + 10 * (HORIZON - 1)) * 1.3)
    assert ax.get_title(loc="left") == "artist_a1: global_ensemble v3, data through 2015-08-09"


def test_show_a_series_new_in_the_vintage_has_no_history_to_print(home, capsys):
    """A series that appeared on the vintage's day (plays only from then on): its forecast, no history."""
    con = connect(home.warehouse)
    try:
        con.execute("INSERT INTO artist_daily VALUES ('newcomer', ?, 40)", [VINTAGE])
        fresh = vintage_frame().filter(pl.col("artist_id") == "band_b").with_columns(artist_id=pl.lit("newcomer"))
        save_forecast(con, pl.concat([vintage_frame(), fresh]), "global_ensemble", 3, THROUGH)
    finally:
        con.close()
    assert cli.main(["show", "newcomer", "--home", str(home.home)]) == 0
    out = capsys.readouterr().out
    assert "(no plays recorded in these weeks)" in out and "actuals arrived for 1 of its days" in out
    assert (home.output_dir / "series" / "newcomer_20150810.png").exists()


def test_the_files_check_passes_on_the_files_as_written_and_fails_on_a_tampered_one(home):
    """forecast_files_match runs in the forecast_files step, on the files it just wrote: the same rows as the
    vintage passes; a file that differs (edited, or a column lost) fails and is named."""
    from musictrend_dagster.defs.checks import forecast_files_match
    from musictrend_dagster.defs.resources import OutputResource

    output = OutputResource(submission_path=str(home.submission), output_dir=str(home.output_dir))
    csv, parquet = output.forecasts_paths()
    expected = published(home)
    write_forecasts(expected, csv, parquet)
    result = forecast_files_match(expected, (csv, parquet))
    assert result.passed and {m.value for m in result.metadata.values()} >= {"same rows"}

    read_forecasts(csv).with_columns(forecast=pl.col("forecast") * 2).write_csv(csv)
    result = forecast_files_match(expected, (csv, parquet))
    assert not result.passed
    assert result.metadata[str(csv)].value == "differs" and result.metadata[str(parquet)].value == "same rows"
