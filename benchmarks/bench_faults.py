"""Kill-and-rerun and concurrent-run reliability, repeated N times; prints a markdown table.

kill-and-rerun (one fresh home per round): `musictrend run` (one-epoch training) SIGKILLed at a
random moment after its log shows the ingest, the artist_daily rebuild and the global_direct
backtest starting (the Dagster event log tells whether the kill landed inside that step), each
kill followed by a check that the submission is byte-identical and the warehouse consistent,
then a complete rerun that must succeed and reproduce the first complete run's submission.
lake (one fresh home per round): `musictrend ingest` SIGKILLed at a random moment while the bulk
file's Parquet is written, then while a rewritten drop's rows are replaced and while a deleted
drop's rows are removed; after each kill the warehouse and the lake must be consistent (the manifest's
files exist with their row counts, every source's rows match its bookkeeping) and show the file's old
or its new rows, never a mix; a complete `musictrend ingest` then must leave no stray file.
concurrent: two `musictrend run`s started together on a fresh home plus a `dagster job execute
refresh_all` while they train; all must succeed and leave a consistent warehouse.

    .venv/bin/python benchmarks/bench_faults.py [--n 10] [--rows 1000000] [--scenarios kill-and-rerun lake concurrent]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_concurrency import lock_errors, scheduled_run
from test_faults import Run, Sandbox, digest, make_sandbox, read_only, submission_problems, warehouse_problems

# (name, log line after which the step is running or next, step key, max random delay in s)
KILLS = [
    ("ingest", "raw_songs - mars_tianchi_songs.csv:", "raw_user_actions", 2.0),
    ("sql rebuild", "stg_user_actions - stg_user_actions:", "artist_daily", 1.0),
    ("training", "backtest__global_direct", "backtest__global_direct", 3.0),
]


def step_state(box: Sandbox, step: str) -> str:
    """'inside' when the newest Dagster run started `step` and did not finish it."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(box.paths.dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        kinds = {
            e.dagster_event.event_type_value
            for e in instance.all_logs(run.run_id)
            if e.dagster_event and e.dagster_event.step_key == step
        }
    if "STEP_START" not in kinds:
        return "before"
    return "after" if kinds & {"STEP_SUCCESS", "STEP_FAILURE"} else "inside"


def kill_after(box: Sandbox, line: str, delay: float, verb: str = "run") -> None:
    run = Run(box, verb=verb)
    deadline = time.monotonic() + 300
    while line not in run.stderr() and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    run.kill()


def complete(box: Sandbox, verb: str = "run") -> str | None:
    """None when a full run (or `musictrend ingest`) succeeds, else why not."""
    try:
        code = Run(box, verb=verb).wait()
    except pytest.fail.Exception as exc:
        return str(exc).splitlines()[0]
    return None if code == 0 else f"exit {code}"


def kill_and_rerun_round(root: Path, rows: int, rng: random.Random) -> tuple[bool, str, dict[str, str]]:
    box = make_sandbox(root, rows=rows)
    landed: dict[str, str] = {}
    name, line, step, max_delay = KILLS[0]
    kill_after(box, line, rng.uniform(0, max_delay))
    landed[name] = step_state(box, step)
    if problems := warehouse_problems(box.paths, complete=False):
        return False, f"after {name} kill: {problems}", landed
    if why := complete(box):
        return False, f"rerun after {name} kill: {why}", landed
    first = digest(box.paths.submission)
    for name, line, step, max_delay in KILLS[1:]:
        kill_after(box, line, rng.uniform(0, max_delay))
        landed[name] = step_state(box, step)
        if digest(box.paths.submission) != first:
            return False, f"submission changed by the {name} kill", landed
        if problems := warehouse_problems(box.paths):
            return False, f"after {name} kill: {problems}", landed
    if why := complete(box):
        return False, f"final rerun: {why}", landed
    problems = warehouse_problems(box.paths) + submission_problems(box.paths)
    if digest(box.paths.submission) != first:
        problems.append("final submission differs from the first complete run's")
    return not problems, "; ".join(problems), landed


def visible_rows(box: Sandbox, name: str) -> int:
    con = read_only(box.paths)
    try:
        return con.execute("SELECT count(*) FROM raw_user_actions WHERE source_file = $f", {"f": name}).fetchone()[0]
    finally:
        con.close()


def lake_round(root: Path, rows: int, rng: random.Random) -> tuple[bool, str, dict[str, str]]:
    from musictrend_dagster.core.sample import write_next_day

    box = make_sandbox(root, rows=rows)
    landed: dict[str, str] = {}
    kill_after(box, "raw_songs - mars_tianchi_songs.csv:", rng.uniform(0, 2.0), verb="ingest")
    landed["bulk write"] = step_state(box, "raw_user_actions")
    if problems := warehouse_problems(box.paths, complete=False):
        return False, f"after the bulk-write kill: {problems}", landed
    if why := complete(box, "ingest"):
        return False, f"ingest after the bulk-write kill: {why}", landed
    drop = write_next_day(box.paths.raw_dir, seed=0)
    if why := complete(box, "ingest"):
        return False, f"ingest of the drop: {why}", landed
    old = visible_rows(box, drop.name)
    lines = drop.read_bytes().splitlines(keepends=True)
    drop.write_bytes(b"".join(lines[: len(lines) // 2]))
    # A replaced drop is published after the bulk file's progress line; a removal happens first thing
    # in the raw_user_actions step, right after raw_songs.
    for what, new, change, line in (
        ("replace", len(lines) // 2, None, "raw_user_actions - ingest:"),
        ("remove", 0, drop.unlink, "raw_songs - mars_tianchi_songs.csv:"),
    ):
        if change:
            change()
        kill_after(box, line, rng.uniform(0, 0.5), verb="ingest")
        landed[what] = step_state(box, "raw_user_actions")
        if problems := warehouse_problems(box.paths, complete=False):
            return False, f"after the {what} kill: {problems}", landed
        seen = visible_rows(box, drop.name)
        if seen not in (old, new):
            return False, f"after the {what} kill the drop shows {seen} rows, neither {old} nor {new}", landed
        if why := complete(box, "ingest"):
            return False, f"ingest after the {what} kill: {why}", landed
        if problems := warehouse_problems(box.paths):
            return False, f"after the ingest that followed the {what} kill: {problems}", landed
        old = new
    return True, "", landed


def concurrent_round(root: Path, rows: int) -> tuple[bool, str]:
    box = make_sandbox(root, rows=rows)
    twins = [Run(box), Run(box)]
    while not any("backtest_" in r.stderr() for r in twins) and any(r.proc.poll() is None for r in twins):
        time.sleep(0.5)
    runs = [*twins, scheduled_run(box)]
    try:
        codes = [r.wait() for r in runs]
    except pytest.fail.Exception as exc:
        return False, str(exc).splitlines()[0]
    errors = [e for r in runs for e in lock_errors(r.stderr())]
    problems = [f"exit codes {codes}"] if any(codes) else []
    problems += errors[:3] + warehouse_problems(box.paths) + submission_problems(box.paths)
    return not problems, "; ".join(problems)


SCENARIOS = ("kill-and-rerun", "lake", "concurrent")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="rounds per scenario")
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic action rows (bigger = longer ingest)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="which scenarios to run"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        for i in range(args.n if "kill-and-rerun" in args.scenarios else 0):
            started = time.perf_counter()
            ok, why, landed = kill_and_rerun_round(Path(tmp) / f"kill{i}", args.rows, rng)
            rows.append(
                (
                    "kill-and-rerun",
                    i,
                    ok,
                    ", ".join(f"{k}: {v}" for k, v in landed.items()),
                    why,
                    time.perf_counter() - started,
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
        for i in range(args.n if "lake" in args.scenarios else 0):
            started = time.perf_counter()
            ok, why, landed = lake_round(Path(tmp) / f"lake{i}", args.rows, rng)
            rows.append(
                ("lake", i, ok, ", ".join(f"{k}: {v}" for k, v in landed.items()), why, time.perf_counter() - started)
            )
            print(rows[-1], file=sys.stderr, flush=True)
        for i in range(args.n if "concurrent" in args.scenarios else 0):
            started = time.perf_counter()
            ok, why = concurrent_round(Path(tmp) / f"conc{i}", args.rows)
            rows.append(("concurrent", i, ok, "2 CLI + 1 scheduled", why, time.perf_counter() - started))
            print(rows[-1], file=sys.stderr, flush=True)
    print("| scenario | round | consistent | kills landed | problem | seconds |\n|---|---|---|---|---|---|")
    for scenario, i, ok, landed, why, seconds in rows:
        print(f"| {scenario} | {i} | {'yes' if ok else 'NO'} | {landed} | {why or '-'} | {seconds:.0f} |")
    for scenario in args.scenarios:
        mine = [r for r in rows if r[0] == scenario]
        print(f"\n{scenario}: {sum(r[2] for r in mine)}/{len(mine)} consistent")
    return 0 if all(r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
