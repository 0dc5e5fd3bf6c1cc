"""Forecast vintages as Dagster's daily partitions: the key is the vintage's day, the first forecast day,
the day after the data it reads. The asset page's partition bar shows which days have a vintage, which
are missing and which failed; a backfill of a range forecasts each day from the days before it."""

from datetime import date, timedelta

import dagster as dg

# The log's days are in the past (tianchi: 2015); the last key is today, the vintage of data through yesterday.
FIRST_VINTAGE = "2015-01-01"
VINTAGES = dg.DailyPartitionsDefinition(start_date=FIRST_VINTAGE, end_offset=1)


def vintage_key(data_through: date) -> str:
    """The partition of the vintage that reads the days through `data_through`."""
    return (data_through + timedelta(days=1)).isoformat()


def vintage_of(context: dg.AssetExecutionContext) -> date:
    """The vintage day of the partition being materialised."""
    return date.fromisoformat(context.partition_key)
