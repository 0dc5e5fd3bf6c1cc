"""The daily path against the full path, in one run, on tianchi-s1 plus one drop file.

On a fresh MUSICTREND_HOME: `musictrend sample --source tianchi-s1`, the first `musictrend run` (the
full path: ingest, SQL models, features, every model's backtest, champion selection, registration,
the first vintage), then `musictrend sample --next-day` and the second `musictrend run` (the daily
path: ingest of the drop, incremental SQL, features, a vintage from the registered champion,
submission, monitoring), then the same command again on unchanged data. Prints each command's wall
time, the Dagster run's own duration and its steps, and the ratio daily / full (target: the daily
path under 10 s wall on an idle machine and at most a tenth of the full path, under 600 MB peak RSS).

    nice .venv/bin/python benchmarks/bench_daily.py [--home DIR] [--epochs N]

--epochs N caps the neural models' epochs in the full path (default: their real defaults), to
measure the daily path quickly; the full path's time is then not the real one and is printed so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = """
import sys, json
import dagster as dg
epochs = int(sys.argv.pop(1))
if epochs:
    _execute = dg.JobDefinition.execute_in_process
    def execute_in_process(self, run_config=None, **kwargs):
        from musictrend_dagster.core.forecast.models.registry import SPECS
        run_config = dict(run_config or {})
        if self.name == "refresh_all":
            ops = dict(run_config.get("ops", {}))
            ops |= {
                f"backtest__{s.name}": {"config": {**s.defaults, "epochs": epochs}} for s in SPECS if s.uses_tensorflow
            }
            run_config["ops"] = ops
        return _execute(self, run_config=run_config, **kwargs)
    dg.JobDefinition.execute_in_process = execute_in_process
from musictrend_dagster.cli import main
sys.exit(main(sys.argv[1:]))
"""


CPU = []  # CPU seconds (user + system) of each command, in order: steadier than wall on a shared machine
RSS = []  # peak resident set (MB) of each command's process tree, in order


def musictrend(env: dict, epochs: int, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, str(epochs), *args], env=env, stdout=out, stderr=err, text=True
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this command's own rusage (its children included once reaped)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    elapsed = time.perf_counter() - started
    CPU.append(usage.ru_utime + usage.ru_stime)
    RSS.append(usage.ru_maxrss / 1024)  # Linux: KB
    if proc.returncode:
        raise SystemExit(f"musictrend {' '.join(args)} failed after {elapsed:.1f} s:\n{stderr[-4000:]}")
    return elapsed, stdout


def runs(home: Path) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """(job, run seconds, [(step, seconds)]) of every successful run, oldest first."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        found = []
        for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), ascending=True):
            stats = instance.get_run_stats(record.dagster_run.run_id)
            steps = [
                (s.step_key, s.end_time - s.start_time)
                for s in instance.get_run_step_stats(record.dagster_run.run_id)
                if s.end_time and s.start_time
            ]
            found.append((record.dagster_run.job_name, stats.end_time - stats.start_time, steps))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="a new or empty MUSICTREND_HOME (default: a temporary one)")
    parser.add_argument(
        "--epochs", type=int, default=0, help="cap the neural models' epochs in the full path (0 = real)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="musictrend-bench-daily-") as tmp:
        home = Path(args.home or Path(tmp) / "home").resolve()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTREND_", "DAGSTER_", "MLFLOW_"))}
        env |= {"MUSICTREND_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        raw = str(home / "raw")
        sample, _ = musictrend(env, 0, "sample", "--source", "tianchi-s1", "--out", raw)
        full, full_out = musictrend(env, args.epochs, "run", "--home", str(home))
        musictrend(env, 0, "sample", "--next-day", "--out", raw)
        daily, daily_out = musictrend(env, args.epochs, "run", "--home", str(home))
        again, _ = musictrend(env, args.epochs, "run", "--home", str(home))
        # each `musictrend run` is two Dagster runs: data (and models), then the vintage partition
        found = runs(home)
        history = [
            (found[i][0], found[i][1] + found[i + 1][1], found[i][2] + found[i + 1][2])
            for i in range(0, len(found) - 1, 2)
        ]
    print(
        f"load average {os.getloadavg()[0]:.1f} at the end; {os.cpu_count()} cores; "
        "full-path epochs: "
        f"{'real defaults' if not args.epochs else f'capped at {args.epochs} (not the real full path)'}"
    )
    print(f"sample tianchi-s1 {sample:.1f} s")
    print("| run | job | command wall | command CPU (user + sys) | peak RSS | Dagster runs (wall, both) |")
    print("|---|---|---:|---:|---:|---:|")
    cpu = dict(zip(("full", "daily", "again"), (CPU[1], CPU[3], CPU[4]), strict=False))
    rss = dict(zip(("full", "daily", "again"), (RSS[1], RSS[3], RSS[4]), strict=False))
    for label, wall, key, (job, seconds, _) in zip(
        ("first `musictrend run`", "second, after `sample --next-day`", "third, same data"),
        (full, daily, again),
        cpu,
        history,
        strict=False,
    ):
        print(f"| {label} | `{job}` | {wall:.1f} s | {cpu[key]:.1f} s | {rss[key]:.0f} MB | {seconds:.1f} s |")
    print(
        f"\nsecond / first: {daily / full:.1%} wall, {cpu['daily'] / cpu['full']:.1%} CPU (target <= 10%); "
        f"daily path {daily:.1f} s wall, {cpu['daily']:.1f} s CPU (target < 10 s wall on an idle machine), "
        f"peak RSS {rss['daily']:.0f} MB (target < 600 MB)"
    )
    print("\nsteps of the daily run (seconds):")
    for step, seconds in history[1][2]:
        print(f"  {step:<40} {seconds:6.2f}")
    print("\n" + "\n".join(line for line in daily_out.splitlines() if line.strip()))
    print("\n(first run)\n" + "\n".join(line for line in full_out.splitlines() if line.startswith("musictrend run")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
