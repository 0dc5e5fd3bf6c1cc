"""Sample raw logs in the official Tianchi format: the real season-1 data, synthetic logs, next-day drops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musictrend_dagster.core.sample.next_day import write_next_day
from musictrend_dagster.core.sample.synthetic import SampleSummary, generate_synthetic
from musictrend_dagster.core.sample.tianchi import expand_tianchi_s1, packaged_history

SOURCES = ("tianchi-s1", "synthetic")

__all__ = [
    "SOURCES",
    "SampleSummary",
    "expand_tianchi_s1",
    "generate_synthetic",
    "packaged_history",
    "write_next_day",
    "write_sample",
]


def write_sample(
    source: str,
    out_dir: Path,
    seed: int = 0,
    artists: int | None = None,
    days: int | None = None,
    rows: int | None = None,
    progress: bool = True,
) -> SampleSummary:
    """One entry point for the CLI: the real data ignores size knobs, so passing them is an error."""
    sizes: dict[str, Any] = {k: v for k, v in (("artists", artists), ("days", days), ("rows", rows)) if v is not None}
    if source == "tianchi-s1":
        if sizes:
            raise ValueError(f"tianchi-s1 is the real season-1 data with a fixed size; drop {', '.join(sizes)}")
        return expand_tianchi_s1(Path(out_dir), seed=seed, progress=progress)
    if source == "synthetic":
        return generate_synthetic(Path(out_dir), seed=seed, progress=progress, **sizes)
    raise ValueError(f"unknown sample source {source!r}; choose one of {', '.join(SOURCES)}")
