"""`musictrend ingest` as a data team uses it, and the errors a wrong configuration gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from musictrend_dagster import cli
from musictrend_dagster.core.sample import generate_synthetic, write_next_day
from musictrend_dagster.core.settings import ACTIONS_PREFIX, ConfigError
from musictrend_dagster.defs.resources import WarehouseResource

BIN = Path(sys.executable).with_name("musictrend")


def musictrend(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTREND_", "DAGSTER_", "MLFLOW_"))}
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=clean | (env or {})
    )


def file_lines(stdout: str) -> dict[str, list[str]]:
    """The per-file table: file -> [status, lines, loaded, quarantined, removed]."""
    return {
        parts[0]: parts[1:] for line in stdout.splitlines() if (parts := line.split()) and parts[0].startswith("mars_")
    }


def test_ingest_reports_each_file_loaded_removed_and_refreshed(tmp_path):
    home = tmp_path / "home"
    raw = home / "raw"
    generate_synthetic(raw, artists=3, days=20, rows=3000, seed=1, progress=False)
    drop = write_next_day(raw, seed=0)
    held_back = drop.read_bytes()
    drop.unlink()
    with open(raw / f"{ACTIONS_PREFIX}.csv", "a") as f:
        f.write("not,a,valid,line\n")
    first = musictrend("ingest", "--home", str(home), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert file_lines(first.stdout)[f"{ACTIONS_PREFIX}.csv"] == ["loaded", "3,001", "3,000", "1", "0"]
    assert (home / "lake" / "user_actions").is_dir() and "backtest" not in first.stderr, "no models are run"
    drop.write_bytes(held_back)
    second = musictrend("ingest", "--home", str(home), cwd=tmp_path)
    table = file_lines(second.stdout)
    assert table[f"{ACTIONS_PREFIX}.csv"][0] == "unchanged" and table[drop.name][0] == "loaded"
    assert "artist_day_actions: " in second.stderr and "incremental build (1 days" in second.stderr
    rows = table[drop.name][2]
    drop.unlink()
    third = musictrend("ingest", "--home", str(home), cwd=tmp_path)
    assert file_lines(third.stdout)[drop.name] == ["removed", "0", "0", "0", rows]
    full = musictrend("ingest", "--home", str(home), "--full-refresh", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert file_lines(full.stdout)[f"{ACTIONS_PREFIX}.csv"][0] == "replaced"
    assert "artist_day_actions: " in full.stderr and "full build" in full.stderr


def test_ingest_fails_with_the_files_problem_and_a_nonzero_exit(tmp_path):
    home = tmp_path / "home"
    generate_synthetic(home / "raw", artists=2, days=10, rows=500, seed=1, progress=False)
    (home / "raw" / f"{ACTIONS_PREFIX}_20151399.csv").write_text("")
    done = musictrend("ingest", "--home", str(home), cwd=tmp_path)
    assert done.returncode == 1
    assert "musictrend ingest FAILED" in done.stderr
    assert f"{ACTIONS_PREFIX}_20151399.csv: the date in the name is not a real day" in done.stderr


def test_a_wrong_configuration_value_names_its_variable(tmp_path):
    """Case 8: MUSICTREND_MAX_QUARANTINE_SHARE=abc is one line naming the variable, not a float() error."""
    generate_synthetic(tmp_path / "home" / "raw", artists=2, days=10, rows=500, seed=1, progress=False)
    for verb in ("ingest", "run"):
        done = musictrend(
            verb, "--home", str(tmp_path / "home"), cwd=tmp_path, env={"MUSICTREND_MAX_QUARANTINE_SHARE": "abc"}
        )
        assert done.returncode == 2
        assert done.stderr.strip() == (
            f"musictrend {verb}: MUSICTREND_MAX_QUARANTINE_SHARE must be a number between 0 and 1, got 'abc'"
        )


def test_an_unreadable_raw_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """Case 8 (as root chmod cannot deny a read, so the listing is made to fail as it would)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    real = os.listdir

    def denied(path="."):
        if Path(path) == raw:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", denied)
    monkeypatch.delenv("MUSICTREND_MAX_QUARANTINE_SHARE", raising=False)
    assert cli.main(["ingest", "--home", str(tmp_path / "home"), "--raw-dir", str(raw)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"musictrend ingest: {raw}: cannot list the raw folder (permission denied)")
    assert "Traceback" not in err


def test_a_read_only_home_is_one_line_naming_the_path(tmp_path, monkeypatch):
    home = tmp_path / "home"
    real = Path.mkdir

    def denied(self, *args, **kwargs):
        if self == home:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    resource = WarehouseResource(
        database=str(home / "warehouse.duckdb"), raw_dir=str(tmp_path), lake_dir=str(home / "lake")
    )
    with pytest.raises(ConfigError) as err, resource.connect():
        pass
    assert str(err.value).startswith(f"{home}: cannot write there (permission denied)")
