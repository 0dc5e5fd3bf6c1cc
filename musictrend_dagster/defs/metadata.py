"""Metadata a user wants in the Dagster UI without opening a terminal: previews and plots."""

import base64
from pathlib import Path

import dagster as dg
import polars as pl


def preview(df: pl.DataFrame, rows: int = 10) -> dg.MarkdownMetadataValue:
    """The first rows as a markdown table."""
    head = df.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def png(path: Path, title: str) -> dg.MarkdownMetadataValue:
    """A PNG inlined as a markdown image, so the asset page shows the picture itself."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)
