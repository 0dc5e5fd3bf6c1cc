"""Full rolling-origin backtest of every registered model on the packaged tianchi-s1 data.

Prints a markdown table (f_norm per origin, mean, fit/predict seconds per origin) and, with
--e2e, the wall time of `musictrend sample` + `musictrend run` on a fresh MUSICTREND_HOME.

    .venv/bin/python benchmarks/bench_models.py [--models median14,best_constant] [--e2e]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path

from musictrend_dagster.core.backtest import BacktestResult, backtest, rolling_origins
from musictrend_dagster.core.models.registry import MODEL_NAMES, make_model
from musictrend_dagster.core.sample import packaged_history

LAST_DAY = date(2015, 8, 30)
MODELS = {name: partial(make_model, name) for name in MODEL_NAMES}


def table(results: list[BacktestResult]) -> str:
    origins = [o.origin for o in results[0].origins]
    head = ["model", *(o.strftime("%Y%m%d") for o in origins), "mean", "fit s/origin", "predict s/origin"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: -r.mean_f_norm):
        n = len(r.origins)
        cells = [
            r.model,
            *(f"{o.f_norm:.4f}" for o in r.origins),
            f"**{r.mean_f_norm:.4f}**",
            f"{sum(o.fit_seconds for o in r.origins) / n:.2f}",
            f"{sum(o.predict_seconds for o in r.origins) / n:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def end_to_end() -> str:
    """Time the user's path on a fresh home: make the raw sample, then materialise everything."""
    cli = Path(sys.executable).with_name("musictrend")
    if not cli.exists():
        raise SystemExit(f"{cli} not found: install the project (pip install -e .) first")
    env = {k: v for k, v in os.environ.items() if k not in {"MLFLOW_TRACKING_URI", "DAGSTER_HOME", "MUSICTREND_RAW_DIR"}}
    with tempfile.TemporaryDirectory(prefix="musictrend-bench-") as tmp:
        home = Path(tmp) / "home"
        env["MUSICTREND_HOME"] = str(home)
        times = {}
        for step, cmd in (
            ("sample", [str(cli), "sample", "--source", "tianchi-s1", "--out", str(home / "raw")]),
            ("run", [str(cli), "run", "--home", str(home)]),
        ):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            times[step] = time.perf_counter() - t0
            if done.returncode:
                raise SystemExit(
                    f"`{' '.join(cmd)}` failed ({done.returncode}) after {times[step]:.1f} s:\n{done.stderr[-4000:]}"
                )
    total = sum(times.values())
    return f"end-to-end on a fresh home: sample {times['sample']:.1f} s + run {times['run']:.1f} s = {total:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--e2e", action="store_true", help="also time `musictrend sample` + `musictrend run`")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")

    history, songs = packaged_history()
    origins = rolling_origins(LAST_DAY)
    results = []
    t0 = time.perf_counter()
    for name in names:
        started = time.perf_counter()
        results.append(backtest(MODELS[name], history, songs, origins))
        print(f"{name}: {results[-1].mean_f_norm:.4f} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(f"## Backtest on tianchi-s1 ({history['artist_id'].n_unique()} artists, 60-day windows)\n")
    print(table(results))
    print(f"\nbacktest wall time: {time.perf_counter() - t0:.1f} s")
    if args.e2e:
        print(end_to_end())
    return 0


if __name__ == "__main__":
    sys.exit(main())
