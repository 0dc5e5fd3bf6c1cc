"""Each blocking guard fails on the bad data it exists for, and the asset downstream of it does not run.

Runs only the assets around the guard, in-process on a small synthetic log. Where the bad data
cannot come from a raw file (a gap in artist_daily, a broken forecast), a stand-in asset with the
real asset's key writes the doctored table, and the real checks and downstream assets run after it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from musictrend_dagster.core.data import sql_models
from musictrend_dagster.core.sample import generate_synthetic
from musictrend_dagster.core.service.outputs import read_submission, write_submission
from musictrend_dagster.core.service.store import save_forecast
from musictrend_dagster.core.settings import ACTIONS_PREFIX, Paths
from musictrend_dagster.defs.assets.features import model_features
from musictrend_dagster.defs.assets.forecast import submission
from musictrend_dagster.defs.assets.ingest import raw_songs, raw_user_actions
from musictrend_dagster.defs.assets.transform import transform_assets
from musictrend_dagster.defs.checks import (
    FORECAST_CHECK,
    SUBMISSION_CHECK,
    forecast_complete_and_valid,
    guard_checks,
    no_outage_day,
    quarantine_share,
    submission_complete,
)
from musictrend_dagster.defs.partitions import VINTAGES
from musictrend_dagster.defs.resources import OutputResource, WarehouseResource, default_resources

ARTISTS, DAYS, ROWS, SEED = 4, 40, 8_000, 5
UPSTREAM = [raw_songs, raw_user_actions, *transform_assets, *guard_checks]


def new_home(root: Path) -> Paths:
    paths = Paths.from_env(home=root, raw_dir=root / "raw")
    generate_synthetic(paths.raw_dir, artists=ARTISTS, days=DAYS, rows=ROWS, seed=SEED, progress=False)
    return paths


def materialize(paths: Paths, assets: list, partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            assets,
            resources=default_resources(paths),
            instance=instance,
            raise_on_error=False,
            partition_key=partition_key,
        )


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def evaluation(result: dg.ExecuteInProcessResult, check: str):
    found = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == check
    ]
    assert len(found) == 1, f"check {check} did not run exactly once"
    return found[0]


def actions_file(paths: Paths) -> Path:
    return paths.raw_dir / f"{ACTIONS_PREFIX}.csv"


# ---------------------------------------------------------------------------- raw data guards


@pytest.mark.parametrize(
    ("bad_share", "limit", "passes"),
    [
        (0.009, None, True),
        (0.011, None, False),  # the default limit is 1%, not anything near it
        (0.02, "0.03", True),
        (0.02, "0.015", False),  # MUSICTREND_MAX_QUARANTINE_SHARE moves it
    ],
)
def test_quarantine_share_above_the_limit_stops_the_sql_models(tmp_path, monkeypatch, bad_share, limit, passes):
    if limit is None:
        monkeypatch.delenv("MUSICTREND_MAX_QUARANTINE_SHARE", raising=False)
    else:
        monkeypatch.setenv("MUSICTREND_MAX_QUARANTINE_SHARE", limit)
    paths = new_home(tmp_path)
    bad = round(ROWS * bad_share / (1 - bad_share))
    with open(actions_file(paths), "a") as f:
        f.writelines(f"u{i},not-a-song,x,9,2015\n" for i in range(bad))
    result = materialize(paths, UPSTREAM)
    check = evaluation(result, quarantine_share.check_key.name)
    assert check.passed is passes
    assert check.metadata["quarantined"].value == bad
    assert check.metadata["limit"].value == float(limit or 0.01)
    assert "raw_user_actions" in materialized(result)
    assert ("artist_daily" in materialized(result)) is passes
    assert ("stg_user_actions" in materialized(result)) is passes
    assert result.success is passes


def test_a_day_without_any_action_stops_the_features(tmp_path):
    paths = new_home(tmp_path)
    outage = "20150315"
    lines = actions_file(paths).read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.rstrip().endswith(outage)]
    assert 0 < len(kept) < len(lines)
    actions_file(paths).write_text("".join(kept))
    result = materialize(paths, [*UPSTREAM, model_features])
    check = evaluation(result, no_outage_day.check_key.name)
    assert not check.passed
    assert check.metadata["outage_days"].value == ["2015-03-15"]
    assert "artist_daily" in materialized(result)
    assert not {"artist_rolling_stats", "model_features"} & materialized(result)
    assert not result.success


def test_a_calendar_gap_in_artist_daily_stops_what_reads_it(tmp_path, monkeypatch):
    """The SQL model's own test, run in its step on the table it just built, blocks what reads it."""
    paths = new_home(tmp_path)
    build = sql_models.build_model

    def gapped(con, model, **kwargs):
        built = build(con, model, **kwargs)
        if model.name == "artist_daily":  # a view over the lake: a table with one artist-day fewer takes its place
            con.execute(
                "CREATE TABLE gapped AS SELECT * FROM artist_daily WHERE NOT (artist_id = "
                "(SELECT min(artist_id) FROM artist_daily) AND ds = (SELECT min(ds) + 10 FROM artist_daily))"
            )
            con.execute("DROP VIEW artist_daily")
            con.execute("ALTER TABLE gapped RENAME TO artist_daily")
        return built

    monkeypatch.setattr(sql_models, "build_model", gapped)
    result = materialize(paths, [*UPSTREAM, model_features])
    check = evaluation(result, "artist_daily__no_calendar_gaps")
    assert not check.passed and check.metadata["failing_rows"].value == 1
    assert not {"artist_rolling_stats", "model_features"} & materialized(result)
    assert not result.success


# ---------------------------------------------------------------------------- forecast guards


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Paths:
    """A home with artist_daily built (the forecast checks compare against its artists)."""
    paths = new_home(tmp_path_factory.mktemp("guards"))
    assert materialize(paths, UPSTREAM).success
    return paths


def good_forecast(paths: Paths, horizon: int = 60) -> pl.DataFrame:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        artists = sorted(r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall())
        (last,) = con.execute("SELECT max(ds) FROM artist_daily").fetchone()
    finally:
        con.close()
    days = [last + timedelta(days=h) for h in range(1, horizon + 1)]
    return pl.DataFrame(
        {
            "artist_id": [a for a in artists for _ in days],
            "ds": days * len(artists),
            "plays": [100.0] * (len(artists) * horizon),
        },
        schema={"artist_id": pl.String, "ds": pl.Date, "plays": pl.Float64},
    )


def doctor(frame: pl.DataFrame, fault: str) -> pl.DataFrame:
    first_artist, mid_day = frame["artist_id"].min(), frame["ds"].min() + timedelta(days=30)
    one_row = (pl.col("artist_id") == first_artist) & (pl.col("ds") == mid_day)
    return {
        "missing_artist": lambda: frame.filter(pl.col("artist_id") != first_artist),
        "missing_day_of_one_artist": lambda: frame.filter(~one_row),
        "missing_day_of_every_artist": lambda: frame.filter(pl.col("ds") != mid_day),
        "duplicate_row": lambda: pl.concat([frame, frame.filter(one_row)]),
        "negative": lambda: frame.with_columns(plays=pl.when(one_row).then(-5.0).otherwise("plays")),
        "nan": lambda: frame.with_columns(plays=pl.when(one_row).then(float("nan")).otherwise("plays")),
        "inf": lambda: frame.with_columns(plays=pl.when(one_row).then(float("inf")).otherwise("plays")),
    }[fault]()


FORECAST_FAULTS = [
    "missing_artist",
    "missing_day_of_one_artist",
    "missing_day_of_every_artist",
    "duplicate_row",
    "negative",
    "nan",
    "inf",
]


def vintage_of(predicted: pl.DataFrame) -> str:
    """The vintage partition of a forecast frame: its first day."""
    return predicted["ds"].min().isoformat()


def stand_in_forecast(predicted: pl.DataFrame) -> dg.AssetsDefinition:
    """An asset with the forecast's key that saves `predicted` and runs the forecast's own check in its step,
    as the real forecast asset does on the vintage it made."""

    @dg.asset(name="forecast", deps=["champion"], check_specs=[FORECAST_CHECK], partitions_def=VINTAGES)
    def stand_in(warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            save_forecast(con, predicted, "stand-in")
            artists = [r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall()]
        return dg.MaterializeResult(check_results=[forecast_complete_and_valid(predicted, artists)])

    return stand_in


@pytest.mark.parametrize("fault", FORECAST_FAULTS)
def test_a_broken_forecast_stops_the_submission(built, fault):
    predicted = doctor(good_forecast(built), fault)
    built.submission.unlink(missing_ok=True)

    result = materialize(built, [stand_in_forecast(predicted), submission], vintage_of(predicted))
    assert not evaluation(result, FORECAST_CHECK.name).passed, fault
    assert "submission" not in materialized(result)
    assert not built.submission.exists()
    assert not result.success


def test_a_good_forecast_passes_both_guards(built):
    """The guards above fail because of the doctoring, not always."""
    predicted = good_forecast(built)

    result = materialize(built, [stand_in_forecast(predicted), submission], vintage_of(predicted))
    assert result.success
    assert evaluation(result, FORECAST_CHECK.name).passed
    assert evaluation(result, SUBMISSION_CHECK.name).passed
    assert read_submission(built.submission).height == predicted.height, "the newest vintage's file"


@pytest.mark.parametrize("fault", ["missing_artist", "missing_day_of_one_artist", "missing_day_of_every_artist"])
def test_an_incomplete_submission_file_fails_its_guard(built, fault):
    predicted = doctor(good_forecast(built), fault)

    @dg.asset(name="submission", deps=["forecast"], check_specs=[SUBMISSION_CHECK])
    def doctored_submission(warehouse: WarehouseResource, output: OutputResource) -> dg.MaterializeResult:
        write_submission(predicted, Path(output.submission_path))
        with warehouse.connect() as con:
            artists = [r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall()]
        written = read_submission(Path(output.submission_path))
        return dg.MaterializeResult(check_results=[submission_complete(written, artists)])

    result = materialize(built, [doctored_submission])
    assert "submission" in materialized(result)
    assert not evaluation(result, SUBMISSION_CHECK.name).passed, fault
    assert not result.success
