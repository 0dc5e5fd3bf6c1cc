"""The `musictrend` command as a user types it: clear messages and honest exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).with_name("musictrend")


def musictrend(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_sample_synthetic_then_next_day(tmp_path):
    raw = tmp_path / "raw"
    done = musictrend(
        "sample",
        "--source",
        "synthetic",
        "--artists",
        "3",
        "--days",
        "20",
        "--rows",
        "2000",
        "--out",
        str(raw),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "2,000 actions of 3 artists" in done.stdout
    lines = (raw / "mars_tianchi_user_actions.csv").read_text().splitlines()
    assert len(lines) == 2000 and lines[0].count(",") == 4
    nxt = musictrend("sample", "--next-day", "--out", str(raw), cwd=tmp_path)
    assert nxt.returncode == 0, nxt.stderr
    assert (raw / "mars_tianchi_user_actions_20150321.csv").is_file()


def test_sample_rejects_sizes_for_the_real_data(tmp_path):
    done = musictrend("sample", "--source", "tianchi-s1", "--rows", "10", "--out", str(tmp_path / "raw"), cwd=tmp_path)
    assert done.returncode == 2
    assert "rows" in done.stderr and "Traceback" not in done.stderr


def test_run_without_data_says_what_to_do(tmp_path):
    done = musictrend("run", "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert done.returncode == 2
    assert "mars_tianchi_user_actions.csv" in done.stderr
    assert "musictrend sample" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_names_the_failing_step_and_file(tmp_path):
    home = tmp_path / "home"
    raw = home / "raw"
    assert (
        musictrend(
            "sample",
            "--source",
            "synthetic",
            "--artists",
            "2",
            "--days",
            "10",
            "--rows",
            "500",
            "--out",
            str(raw),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    (raw / "mars_tianchi_user_actions.csv").write_text("a;b;1;1;20150301\n")
    done = musictrend("run", "--home", str(home), cwd=tmp_path)
    assert done.returncode == 1
    assert "FAILED" in done.stderr
    assert "raw_user_actions" in done.stderr and "mars_tianchi_user_actions.csv" in done.stderr
    assert "delimited by ';'" in done.stderr


def test_replay_refuses_what_it_cannot_replay(tmp_path):
    raw = tmp_path / "raw"
    assert (
        musictrend(
            "sample",
            "--source",
            "synthetic",
            "--artists",
            "2",
            "--days",
            "10",
            "--rows",
            "500",
            "--out",
            str(raw),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    home = tmp_path / "home"
    for days, message in (
        ("0", "--days must be at least 1, got 0"),
        ("10", "the log has 10 days; holding back 10 leaves nothing to train on"),
    ):
        done = musictrend("replay", "--days", days, "--raw-dir", str(raw), "--home", str(home), cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
        assert not home.exists() or not any(home.iterdir()), "a refused replay leaves its home empty"
    (home / "something").mkdir(parents=True)
    done = musictrend("replay", "--days", "3", "--raw-dir", str(raw), "--home", str(home), cwd=tmp_path)
    assert done.returncode == 2 and "is not empty: a replay starts from a new home" in done.stderr
    done = musictrend(
        "replay", "--days", "3", "--raw-dir", str(tmp_path / "nowhere"), "--home", str(tmp_path / "h2"), cwd=tmp_path
    )
    assert done.returncode == 2 and "nowhere" in done.stderr and "Traceback" not in done.stderr
