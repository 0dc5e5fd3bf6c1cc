"""Metadata a user wants in the Dagster UI without opening a terminal: previews, plots and numbers
written the way a person reads them (4 decimals for scores, whole counts, dates as dates)."""

import base64
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import polars as pl

DIGITS = 4

# Dagster's table column types for polars dtypes (anything else is shown as a string).
_TYPES = {pl.Boolean: "bool", pl.Date: "date", pl.Datetime: "datetime", pl.String: "string"}


def score(value: float, digits: int = DIGITS) -> float:
    """A score or ratio as the UI should show it: rounded, not 0.7562418789392967."""
    return round(float(value), digits)


def seconds(value: float) -> float:
    """A duration in seconds to 0.1 s."""
    return round(float(value), 1)


def preview(df: pl.DataFrame, rows: int = 10) -> dg.TableMetadataValue:
    """The first rows as a Dagster table with a schema: typed columns, floats rounded, dates unwrapped."""
    head = df.head(rows)
    columns = [dg.TableColumn(name, _type(dtype)) for name, dtype in head.schema.items()]
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in head.iter_rows(named=True)]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def png(path: Path, title: str) -> dg.MarkdownMetadataValue:
    """A PNG inlined as a markdown image, so the asset page shows the picture itself."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def _type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    return _TYPES.get(dtype.base_type(), "string")


def _cell(value):
    """A value Dagster's table accepts (str, int, float, bool, None), as a person reads it."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (int, bool, str)):
        return value
    return str(value)
