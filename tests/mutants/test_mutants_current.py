"""The mutants stay current: each one's `find` occurs exactly once in the file it names, so a move or a
reformat cannot silently turn a mutant into a no-op (run_mutants.py would call it stale only when run)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = tomllib.loads((ROOT / "tests" / "mutants" / "mutants.toml").read_text())["mutant"]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m["id"] for m in MUTANTS])
def test_mutant_applies_once(mutant):
    source = (ROOT / mutant["file"]).read_text()
    assert source.count(mutant["find"]) == 1, f"{mutant['id']}: `find` must occur once in {mutant['file']}"
    assert all((ROOT / t.split("::")[0]).exists() for t in mutant["tests"]), (
        f"{mutant['id']}: a listed test file is missing"
    )
