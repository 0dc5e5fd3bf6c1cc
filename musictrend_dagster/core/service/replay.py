"""Replaying a log: hold back its last days, then feed them one drop file a day through the daily
path, so the service's monitoring history is made by the real thing (`musictrend replay`)."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from musictrend_dagster.core.data.rawdir import is_gzip, list_raw_dir, open_bytes
from musictrend_dagster.core.settings import ACTIONS_PREFIX

_DAY = re.compile(rb"^\d{8}$")


def hold_back(source: Path, raw_dir: Path, holdback_dir: Path, days: int) -> list[Path]:
    """Copy `source`'s raw folder into `raw_dir` without the last `days` days of its log; each of those
    becomes `holdback_dir/mars_tianchi_user_actions_YYYYMMDD.csv`, oldest first (returned).

    Every line is copied byte for byte: the bulk file gets the kept days and every line without a
    readable day (ingest quarantines those as before); the songs file is copied whole (the features
    read a song only from its publish day on).
    """
    listing = list_raw_dir(source)
    if listing.errors:
        raise ValueError(f"{source}: {'; '.join(listing.errors)}")
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    raw_dir.mkdir(parents=True)
    holdback_dir.mkdir(parents=True)
    songs = listing.songs
    assert songs is not None, "list_raw_dir raises when the songs file is missing"
    shutil.copyfile(songs.real, raw_dir / songs.path.name)
    with tempfile.TemporaryDirectory(dir=holdback_dir) as tmp:
        buckets: dict[bytes, BinaryIO] = {}
        with contextlib.ExitStack() as open_buckets:  # every day's file stays open until the log is read
            for raw in listing.actions:
                with open_bytes(raw.real, is_gzip(raw.real)) as lines:
                    for line in lines:
                        day = line.rstrip(b"\r\n").rsplit(b",", 1)[-1]
                        key = day if _DAY.match(day) else b"undated"
                        if key not in buckets:
                            buckets[key] = open_buckets.enter_context(open(Path(tmp) / key.decode(), "wb"))
                        buckets[key].write(line if line.endswith(b"\n") else line + b"\n")
        dated = sorted(k for k in buckets if k != b"undated")
        if len(dated) <= days:
            raise ValueError(f"{source}: the log has {len(dated)} days; holding back {days} leaves nothing to train on")
        kept, held = dated[:-days] + [b"undated"] * (b"undated" in buckets), dated[-days:]
        with open(raw_dir / f"{ACTIONS_PREFIX}.csv", "wb") as bulk:
            for key in kept:
                with open(Path(tmp) / key.decode(), "rb") as part:
                    shutil.copyfileobj(part, bulk, 1 << 20)
        drops = []
        for key in held:
            drops.append(holdback_dir / f"{ACTIONS_PREFIX}_{key.decode()}.csv")
            shutil.move(Path(tmp) / key.decode(), drops[-1])
    return drops
