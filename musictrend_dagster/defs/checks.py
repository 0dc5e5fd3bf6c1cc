"""Blocking asset checks that stop bad data from flowing downstream."""

from datetime import date, timedelta
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl

from musictrend_dagster.core.service.outputs import FORECASTS_COLUMNS, read_forecasts, read_submission
from musictrend_dagster.core.service.store import load_forecasts, query
from musictrend_dagster.core.settings import MAX_QUARANTINE_SHARE_VAR
from musictrend_dagster.defs.metadata import preview
from musictrend_dagster.defs.resources import OutputResource, ServiceResource, WarehouseResource
from musictrend_dagster.instance import DUCKDB_POOL

OUTAGE_DAYS_SHOWN = 10


@dg.asset_check(
    asset="raw_user_actions",
    blocking=True,
    pool=DUCKDB_POOL,
    description=f"At most 1% of all action lines quarantined (or the share in the service resource's "
    f"max_quarantine_share, env {MAX_QUARANTINE_SHARE_VAR}).",
)
def quarantine_share(warehouse: WarehouseResource, service: ServiceResource) -> dg.AssetCheckResult:
    limit = service.quarantine_limit
    with warehouse.connect() as con:
        loaded = cast(
            tuple,
            con.execute(  # the play data's rows whatever the source (tianchi, events, daily)
                "SELECT (SELECT count(*) FROM raw_user_actions) + (SELECT count(*) FROM raw_events) "
                "+ (SELECT count(*) FROM raw_daily_plays)"
            ).fetchone(),
        )[0]
        quarantined = cast(tuple, con.execute("SELECT count(*) FROM quarantine_user_actions").fetchone())[0]
        reasons = query(
            con, "SELECT reason, count(*) AS lines FROM quarantine_user_actions GROUP BY reason ORDER BY lines DESC"
        )
    share = quarantined / max(loaded + quarantined, 1)
    return dg.AssetCheckResult(
        passed=share <= limit,
        metadata={
            "share": share,
            "limit": limit,
            "quarantined": quarantined,
            "loaded": loaded,
            "reasons": preview(reasons, rows=20),
        },
    )


@dg.asset_check(
    asset="artist_daily",
    blocking=True,
    pool=DUCKDB_POOL,
    description="No day inside the calendar on which no artist had any action (an outage or a lost file); "
    "names the files of the days around each gap.",
)
def no_outage_day(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        dead = [
            d
            for (d,) in con.execute(
                "SELECT ds FROM artist_daily GROUP BY ds HAVING sum(plays + downloads + collects) = 0 ORDER BY ds"
            ).fetchall()
        ]
        gaps = _gaps(dead)
        edges = sorted(
            {d for lo, hi in gaps[:OUTAGE_DAYS_SHOWN] for d in (lo - timedelta(days=1), hi + timedelta(days=1))}
        )
        sources = (
            con.execute(
                "SELECT ds, string_agg(DISTINCT source_file, ', ' ORDER BY source_file) FROM raw_user_actions "
                "WHERE ds IN (SELECT unnest($d)) GROUP BY ds ORDER BY ds",
                {"d": edges},
            ).fetchall()
            if edges
            else []
        )
    by_day = {str(d): files for d, files in sources}
    metadata: dict[str, Any] = {
        "outage_day_count": len(dead),
        "outage_days": dg.MetadataValue.json([str(d) for d in dead[:OUTAGE_DAYS_SHOWN]]),
        "gaps": dg.MetadataValue.json(
            [
                {
                    "from": str(lo),
                    "to": str(hi),
                    "days": (hi - lo).days + 1,
                    "before_from": by_day.get(str(lo - timedelta(days=1)), ""),
                    "after_from": by_day.get(str(hi + timedelta(days=1)), ""),
                }
                for lo, hi in gaps[:OUTAGE_DAYS_SHOWN]
            ]
        ),
    }
    return dg.AssetCheckResult(passed=not dead, metadata=metadata)


def _gaps(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive runs of days, as (first, last)."""
    gaps: list[tuple[date, date]] = []
    for d in days:
        if gaps and gaps[-1][1] + timedelta(days=1) == d:
            gaps[-1] = (gaps[-1][0], d)
        else:
            gaps.append((d, d))
    return gaps


def _forecast_problems(predicted: pl.DataFrame, artists: list[str]) -> dict[str, int]:
    """Counts of what is wrong with a forecast: missing artists or days, negative or non-finite plays."""
    days = predicted["ds"].n_unique()
    span = (cast(date, predicted["ds"].max()) - cast(date, predicted["ds"].min())).days + 1 if days else 0
    per_artist = predicted.group_by("artist_id").agg(pl.col("ds").n_unique().alias("days"))
    return {
        "missing_days": span - days,
        "missing_artists": len(set(artists) - set(per_artist["artist_id"].to_list())),
        "artists_missing_days": per_artist.filter(pl.col("days") < days).height,
        "duplicate_rows": predicted.height - predicted.select("artist_id", "ds").unique().height,
        "negative": predicted.filter(pl.col("plays") < 0).height,
        "non_finite": predicted.filter(~pl.col("plays").cast(pl.Float64).is_finite()).height,
    }


def _interval_problems(predicted: pl.DataFrame) -> dict[str, int]:
    """Rows without an 80% interval, and rows whose interval does not hold the forecast (0 <= lo <= plays <= hi)."""
    lo, hi, plays = pl.col("plays_lo"), pl.col("plays_hi"), pl.col("plays")
    return {
        "interval_missing": predicted.filter(lo.is_null() | hi.is_null()).height,
        "interval_not_around_forecast": predicted.filter(
            ~((lo >= 0) & (lo <= plays) & (plays <= hi) & hi.is_finite())
        ).height,
    }


FORECAST_CHECK = dg.AssetCheckSpec(
    "forecast_complete_and_valid",
    asset="forecast",
    blocking=True,
    description="Every artist, every forecast day, once; plays finite and >= 0; where an 80% interval "
    "is given, 0 <= plays_lo <= plays <= plays_hi (rows without one are counted). Runs in the forecast's step.",
)


def forecast_complete_and_valid(predicted: pl.DataFrame, artists: list[str]) -> dg.AssetCheckResult:
    """The forecast asset's own check, on the vintage it just made (no second read of the warehouse)."""
    predicted = predicted.with_columns(
        pl.lit(None, pl.Float64).alias(c) for c in ("plays_lo", "plays_hi") if c not in predicted.columns
    )
    problems = _forecast_problems(predicted, artists)
    intervals = _interval_problems(predicted)
    # a forecast written without an interval is reported, not blocked; a wrong interval is blocked
    passed = not any(problems.values()) and not intervals["interval_not_around_forecast"]
    return dg.AssetCheckResult(check_name=FORECAST_CHECK.name, passed=passed, metadata={**problems, **intervals})


@dg.asset_check(
    asset="submission",
    blocking=True,
    pool=DUCKDB_POOL,
    description="The file parses as artist_id,Plays,Ds with no header and covers every artist and day.",
)
def submission_complete(warehouse: WarehouseResource, output: OutputResource) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        artists = [r[0] for r in con.execute("SELECT DISTINCT artist_id FROM artist_daily").fetchall()]
    frame = read_submission(Path(output.submission_path))
    problems = _forecast_problems(frame, artists)
    return dg.AssetCheckResult(passed=not any(problems.values()), metadata={**problems, "rows": frame.height})


@dg.asset_check(
    asset="forecast_files",
    blocking=True,
    pool=DUCKDB_POOL,
    description="forecasts.csv and forecasts.parquet read back with exactly their columns, hold the same rows, "
    "and equal the warehouse's `forecasts` view row for row (unless a later run has already replaced the "
    "vintage: its own files follow).",
)
def forecast_files_match(warehouse: WarehouseResource, output: OutputResource) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        expected = load_forecasts(con)
    csv_path, parquet_path = output.forecasts_paths()
    csv, parquet = read_forecasts(csv_path), read_forecasts(parquet_path)
    metadata: dict[str, Any] = {
        "columns": "as specified" if csv.columns == parquet.columns == FORECASTS_COLUMNS else "differ",
        "csv_vs_parquet": "same rows" if csv.equals(parquet) else "differs",
        "rows": csv.height,
    }
    # `forecast` and this check are separate steps: a concurrent run may replace the vintage in between
    written = csv.select("model_version", "data_through").unique().rows()
    newest = expected.select("model_version", "data_through").unique().rows()
    if written != newest:
        metadata["vs_warehouse"] = f"superseded: the warehouse now holds {newest}, these files {written}"
        passed = metadata["columns"] == "as specified" and metadata["csv_vs_parquet"] == "same rows"
    else:
        metadata["vs_warehouse"] = "same rows" if csv.equals(expected) else "differs"
        passed = all(
            metadata[k] in ("as specified", "same rows") for k in ("columns", "csv_vs_parquet", "vs_warehouse")
        )
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


guard_checks = [quarantine_share, no_outage_day, submission_complete, forecast_files_match]
