"""Shared fixtures: the real tianchi-s1 log is expanded once per test session (~10 s, 500 MB)."""
from __future__ import annotations

import pytest

from musictrend_dagster.core.sample import SampleSummary, expand_tianchi_s1


@pytest.fixture(scope="session")
def tianchi(tmp_path_factory) -> SampleSummary:
    """The real season-1 expansion, seed 0 (5,652,232 rows), written once per session."""
    return expand_tianchi_s1(tmp_path_factory.mktemp("tianchi"), seed=0, progress=False)
