"""Your own data, end to end: a daily-counts CSV the project has never seen runs the whole graph from a
musictrend.toml of a few lines and publishes output/forecasts.csv; per-song series too."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest

from musictrend_dagster.core.data.source import CONFIG_ENV
from musictrend_dagster.core.forecast.models.registry import candidates
from musictrend_dagster.core.sample import packaged_history
from musictrend_dagster.core.service.outputs import FORECASTS_COLUMNS, read_forecasts
from musictrend_dagster.core.settings import FORECASTS_CSV, HORIZON_VAR, MODELS_VAR, Paths
from musictrend_dagster.defs.partitions import vintage_key

pytestmark = pytest.mark.slow  # whole runs of the graph

ARTISTS, DAYS = 4, 120


def _tiny_training() -> dict:
    ops = {}
    for s in candidates():
        if s.uses_tensorflow:
            sizes = {k: 1 for k in ("members", "seeds") if k in s.defaults}
            ops[f"backtest__{s.name}"] = {"config": {**s.defaults, **sizes, "epochs": 1}}
    return {"ops": ops}


def _real_counts() -> pl.DataFrame:
    """Four real artists' daily plays over 120 days (packaged tianchi-s1)."""
    history, _ = packaged_history()
    artists = sorted(history["artist_id"].unique())[:ARTISTS]
    first = history["ds"].min()
    return history.filter(pl.col("artist_id").is_in(artists) & (pl.col("ds") < first + timedelta(days=DAYS))).select(
        "artist_id", "ds", "plays"
    )


def _run(project, toml: str, monkeypatch, last_day: date) -> tuple[Paths, dg.ExecuteInProcessResult]:
    """The full path in one run, for the vintage partition after `last_day` (the data's last day)."""
    from musictrend_dagster.definitions import build_defs

    (project / "musictrend.toml").write_text(toml)
    monkeypatch.setenv(CONFIG_ENV, str(project / "musictrend.toml"))
    for var in (HORIZON_VAR, MODELS_VAR):  # set from the file by the resources of an earlier definitions
        monkeypatch.delenv(var, raising=False)
    paths = Paths.from_env(home=project / "home", raw_dir=project / "home" / "raw")
    defs = build_defs(paths)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("refresh_all").execute_in_process(
            run_config=_tiny_training(), instance=instance, partition_key=vintage_key(last_day)
        )
    return paths, result


def test_a_long_format_csv_runs_from_a_two_line_description(tmp_path, monkeypatch):
    counts = _real_counts()
    counts.select(unique_id="artist_id", ds="ds", y=pl.col("plays").cast(pl.Int64)).write_csv(tmp_path / "plays.csv")
    paths, result = _run(tmp_path, '[source]\nkind = "daily"\npath = "plays.csv"\n', monkeypatch, counts["ds"].max())
    assert result.success
    keys = {k.to_user_string() for k in result.dagster_run.asset_selection or []} | {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    assert "submission" not in keys  # the competition file belongs to the tianchi source only
    assert not paths.submission.exists()
    files = read_forecasts(paths.output_dir / FORECASTS_CSV)
    assert files.columns == FORECASTS_COLUMNS
    assert sorted(files["unique_id"].unique()) == sorted(counts["artist_id"].unique())
    last = counts["ds"].max()
    assert files["data_through"].unique().to_list() == [last]
    assert files.group_by("unique_id").agg(n=pl.len())["n"].to_list() == [60] * ARTISTS
    assert files["ds"].min() == last + timedelta(days=1)
    # it joins straight back to the input's long format on (unique_id, ds) for the days it forecast
    back = files.join(counts.rename({"artist_id": "unique_id"}), on=["unique_id", "ds"], how="inner")
    assert back.height == 0  # forecast days are after the input's last day


def test_only_the_candidates_the_description_names_are_backtested_and_served(tmp_path, monkeypatch):
    """A catalogue too large for per-series statistical fits names its candidates: only those are backtested,
    ranked and registered, and the forecasts are published as usual."""
    counts = _real_counts()
    counts.select(unique_id="artist_id", ds="ds", y=pl.col("plays").cast(pl.Int64)).write_csv(tmp_path / "plays.csv")
    toml = '[source]\nkind = "daily"\npath = "plays.csv"\n[forecast]\nmodels = ["best_constant", "median14"]\n'
    paths, result = _run(tmp_path, toml, monkeypatch, counts["ds"].max())
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {k for k in done if k.startswith("backtest/")} == {"backtest/median14", "backtest/best_constant"}
    chosen = result.asset_materializations_for_node("champion")[0].metadata
    assert chosen["runner_up"].value in {"median14", "best_constant"} - {chosen["champion"].value}
    assert "skipped" not in chosen  # the models left out are not candidates, not skipped ones
    registered = result.asset_materializations_for_node("registered_champion")[0].metadata
    assert registered["champion"].value == chosen["champion"].value
    files = read_forecasts(paths.output_dir / FORECASTS_CSV)
    assert files["unique_id"].n_unique() == ARTISTS and files.height == ARTISTS * 60


def test_own_column_names_and_a_28_day_horizon(tmp_path, monkeypatch):
    counts = _real_counts()
    counts.select(
        artist_id="artist_id",
        gmt_date=pl.col("ds").dt.strftime("%Y%m%d"),
        artist_moving=pl.col("plays").cast(pl.Int64),
    ).write_csv(tmp_path / "moving.csv")
    toml = (
        '[source]\nkind = "daily"\npath = "moving.csv"\nseries = "artist_id"\nday = "gmt_date"\n'
        'day_format = "%Y%m%d"\nplays = "artist_moving"\n[forecast]\nhorizon = 28\n'
    )
    paths, result = _run(tmp_path, toml, monkeypatch, counts["ds"].max())
    assert result.success
    files = read_forecasts(paths.output_dir / FORECASTS_CSV)
    assert files.group_by("unique_id").agg(n=pl.len())["n"].to_list() == [28] * ARTISTS
    assert ((files["lo80"] <= files["forecast"]) & (files["forecast"] <= files["hi80"])).all()


def test_per_song_series_run_end_to_end(tmp_path, monkeypatch):
    """daily counts per song plus a catalogue, forecast per song (series_level = "song")."""
    songs = pl.DataFrame({"song": ["s1", "s2", "s3"], "singer": ["x", "x", "y"]})
    songs.write_csv(tmp_path / "catalogue.csv")
    first = date(2015, 3, 1)
    rows = [
        {"song": s, "day": (first + timedelta(days=d)).isoformat(), "n": int(10 + 5 * k + (d * (k + 1)) % 7)}
        for k, s in enumerate(["s1", "s2", "s3"])
        for d in range(DAYS)
    ]
    pl.DataFrame(rows).write_csv(tmp_path / "song_plays.csv")
    toml = (
        '[source]\nkind = "daily"\npath = "song_plays.csv"\nseries = "song"\nday = "day"\nplays = "n"\n'
        '[catalogue]\npath = "catalogue.csv"\nsong = "song"\nartist = "singer"\n'
        '[forecast]\nhorizon = 14\nseries_level = "song"\n'
    )
    paths, result = _run(tmp_path, toml, monkeypatch, first + timedelta(days=DAYS - 1))
    assert result.success
    files = read_forecasts(paths.output_dir / FORECASTS_CSV)
    assert sorted(files["unique_id"].unique()) == ["s1", "s2", "s3"]
    assert files.height == 3 * 14
