"""Deliberate code changes ("mutants") that the test suite must notice; reports the survivors.

    .venv/bin/python tests/mutants/run_mutants.py [--only ID[,ID]] [--list]

Each mutant in ``mutants.toml`` replaces one exact piece of code (``find`` must occur exactly
once, so a mutant whose code moved fails loudly instead of silently testing nothing) and names
the test files that should catch it. Mutants are applied one at a time to a throwaway git
worktree of HEAD, never to the working tree, and the named tests run there with
``PYTHONPATH`` pointing at it. Exit status 1 when any mutant survives (its tests pass) or is
stale. Hand-written mutants rather than a generator (mutmut, cosmic-ray): each one encodes a
claim the docs make, and a handful run in minutes instead of hours on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = Path(__file__).with_name("mutants.toml")


def load() -> list[dict]:
    mutants = tomllib.loads(MUTANTS.read_text())["mutant"]
    for m in mutants:
        missing = {"id", "file", "find", "replace", "tests", "why"} - m.keys()
        if missing:
            raise SystemExit(f"{MUTANTS}: mutant {m.get('id', '?')} lacks {sorted(missing)}")
    return mutants


def run(mutant: dict, tree: Path) -> tuple[str, float]:
    """'killed', 'SURVIVED' or 'STALE: ...' for one mutant, and the seconds its tests took."""
    path = tree / mutant["file"]
    original = path.read_text()
    found = original.count(mutant["find"])
    if found != 1:
        return f"STALE: `find` occurs {found} times in {mutant['file']}", 0.0
    path.write_text(original.replace(mutant["find"], mutant["replace"]))
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant["tests"]],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
    finally:
        path.write_text(original)
    if result.returncode == 1:
        return "killed", seconds
    if result.returncode == 0:
        return "SURVIVED", seconds
    return f"STALE: pytest exit {result.returncode}: {result.stdout.strip().splitlines()[-1:]}", seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    mutants = load()
    if args.only:
        wanted = set(args.only.split(","))
        mutants = [m for m in mutants if m["id"] in wanted]
        if unknown := wanted - {m["id"] for m in mutants}:
            raise SystemExit(f"unknown mutant ids: {sorted(unknown)}")
    if args.list:
        for m in mutants:
            print(f"{m['id']:<28} {m['file']}: {m['why']}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), "HEAD"], cwd=ROOT, check=True)
        try:
            rows = []
            for m in mutants:
                outcome, seconds = run(m, tree)
                print(f"{m['id']:<28} {outcome:<10} {seconds:6.1f}s  {m['why']}", flush=True)
                rows.append(outcome)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
    bad = [o for o in rows if o != "killed"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutants killed" + (f"; {len(bad)} not" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
