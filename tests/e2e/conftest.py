"""Fixtures for the browser tests: a small synthetic home, `dagster dev` and `mlflow server`
started through the real CLI, and Debian's Chromium driven by Playwright.

Servers run in their own process group and are stopped with killpg: `dagster dev` ignores
signals to its own pid and would otherwise leave its webserver, daemon and code servers behind.
Every page step saves a screenshot; a failing test also gets a last screenshot and the tail
of each server log in its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"  # the docs screenshots, rewritten by the tests that take them
SAMPLE_ARGS = ["--source", "synthetic", "--artists", "6", "--days", "150", "--rows", "60000", "--seed", "1"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def musictrend_cmd(*args: str) -> list[str]:
    """The installed `musictrend` script next to this interpreter, or the module when it is missing."""
    script = Path(sys.executable).with_name("musictrend")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "musictrend_dagster.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would point the servers at another state folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MUSICTREND_") and k not in {"DAGSTER_HOME", "MLFLOW_TRACKING_URI"}
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, log: Path, timeout: float) -> None:
    """Run one `musictrend` command to completion, failing the test with its output if it fails."""
    with log.open("w") as out:
        proc = subprocess.run(
            musictrend_cmd(*args), cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if proc.returncode != 0:
        pytest.fail(f"`musictrend {' '.join(args)}` exited {proc.returncode}; log {log}:\n{tail(log)}", pytrace=False)


def tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class Server:
    """One server started through the CLI, in its own session (pgid == pid)."""

    name: str
    url: str
    log: Path
    proc: subprocess.Popen = field(repr=False)

    @classmethod
    def start(cls, name: str, args: list[str], port: int, log: Path, **env: str) -> Server:
        out = log.open("w")
        proc = subprocess.Popen(
            musictrend_cmd(*args),
            cwd=REPO,
            env=clean_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        out.close()
        server = cls(name, f"http://127.0.0.1:{port}", log, proc)
        print(f"\n[e2e] {name}: {server.url} (pid {proc.pid}), log {log}")
        return server

    def get(self, path: str, timeout: float = 5) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def post_json(self, path: str, payload: dict, timeout: float = 10) -> dict:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def wait_until(self, ready, what: str, timeout: float) -> None:
        """Poll ready() (True when done; exceptions mean not yet) until timeout or the server dies."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited {self.proc.returncode} before {what}; log {self.log}:\n{tail(self.log)}",
                    pytrace=False,
                )
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = exc
            time.sleep(1)
        pytest.fail(
            f"{self.name} not {what} after {timeout:.0f}s (last error {last!r}); log {self.log}:\n{tail(self.log)}",
            pytrace=False,
        )

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `grace` seconds."""
        pgid = self.proc.pid  # start_new_session: the leader's pid names the group, even once it is gone
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            self.proc.poll()
            time.sleep(0.5)
        if _group_alive(pgid):
            _killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _default_sigint() -> None:
    """Undo an inherited SIG_IGN (pytest started in the background): `dagster dev` shuts its children
    down by interrupting them, and with SIGINT ignored they would only go at the SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running (zombies waiting to be reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def dagster_location_loaded(server: Server) -> bool:
    """True once every code location is loaded; fails the test at once on a load error."""
    data = server.post_json("/graphql", {"query": LOCATION_QUERY})["data"]["workspaceOrError"]
    entries = data.get("locationEntries") or []
    for entry in entries:
        error = entry.get("locationOrLoadError") or {}
        if error.get("__typename") == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load:\n{error['message']}", pytrace=False)
    return bool(entries) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory) -> tuple[Path, Path]:
    """(MUSICTREND_HOME, raw dir) with a small synthetic log: 6 artists, 150 days (the backtest needs > 120)."""
    home = tmp_path_factory.mktemp("e2e_home")
    raw = home / "raw"
    run_cli("sample", "--out", str(raw), *SAMPLE_ARGS, log=home / "sample.log", timeout=120)
    return home, raw


@pytest.fixture(scope="session")
def mlflow_ui_url() -> str:
    """MUSICTREND_MLFLOW_UI_URL of the session: a free port, never MLflow's default 5000, so a link that
    ignores the setting lands nowhere."""
    port = free_port()
    assert port != 5000
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def dagster_ui(sample_home, mlflow_ui_url) -> Iterator[Server]:
    """`musictrend ui` (dagster dev) on a free port, ready once the code location is loaded; its MLflow
    links follow MUSICTREND_MLFLOW_UI_URL."""
    home, raw = sample_home
    port = free_port()
    server = Server.start(
        "dagster dev",
        [
            "ui",
            "--home",
            str(home),
            "--raw-dir",
            str(raw),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workspace",
            str(REPO / "workspace.yaml"),
        ],
        port,
        home / "dagster_dev.log",
        MUSICTREND_MLFLOW_UI_URL=mlflow_ui_url,
    )
    try:
        server.wait_until(lambda: server.get("/server_info") is not None, "answering /server_info", 180)
        server.wait_until(lambda: dagster_location_loaded(server), "done loading the code location", 240)
        yield server
    finally:
        server.stop()


def newest_vintage(raw: Path) -> str:
    """The vintage partition of the sample: the day after its last day of log."""
    with open(raw / "mars_tianchi_user_actions.csv", newline="") as fh:
        last = max(row[4] for row in csv.reader(fh))
    return (datetime.strptime(last, "%Y%m%d").date() + timedelta(days=1)).isoformat()


@dataclass
class UiRun:
    """The session's one pipeline materialisation: "Materialize all" clicked in the Dagster UI."""

    run_id: str
    status: str
    home: Path
    raw: Path


@pytest.fixture(scope="session")
def ui_run(dagster_ui, sample_home, tmp_path_factory) -> UiRun:
    """Every asset materialised once through the UI; the Dagster and MLflow tests all read this run."""
    home, raw = sample_home
    with chromium() as browser:
        return _materialize_all(dagster_ui, home, raw, browser, tmp_path_factory)


def _materialize_all(dagster_ui, home: Path, raw: Path, browser, tmp_path_factory) -> UiRun:
    from .ui_steps import launch_materialize_all, skip_community_dialog, wait_for_run_in_list

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    shot = Shots(page, tmp_path_factory.mktemp("ui_run") / "screenshots")
    try:
        page.goto(f"{dagster_ui.url}/asset-groups")
        skip_community_dialog(page)
        shot("asset-lineage")
        run_id = launch_materialize_all(page, newest_vintage(raw))
        shot("run-launched")
        status = wait_for_run_in_list(page, dagster_ui, run_id, shot)
        shot("run-list")
    finally:
        context.close()
    return UiRun(run_id, status, home, raw)


@pytest.fixture(scope="session")
def mlflow_ui(ui_run, mlflow_ui_url) -> Iterator[Server]:
    """`musictrend mlflow-ui` over the UI run's store, started with MUSICTREND_MLFLOW_UI_URL only: it serves
    where the Dagster links point."""
    port = int(mlflow_ui_url.rsplit(":", 1)[1])
    server = Server.start(
        "mlflow server",
        ["mlflow-ui", "--home", str(ui_run.home)],
        port,
        ui_run.home / "mlflow_server.log",
        MUSICTREND_MLFLOW_UI_URL=mlflow_ui_url,
    )
    try:
        server.wait_until(lambda: server.get("/health") is not None, "answering /health", 120)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's Chromium (never a Playwright browser download), headless, for one use.

    Playwright's sync API keeps an event loop running in this thread while it is open, and every later test
    on this worker that calls `asyncio.run` (Dagster's automation evaluation does) would fail: so it is
    opened per test, never for the session.
    """
    executable = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
    if executable is None:
        pytest.fail("Chromium not installed: `make browser` (apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser():
    with chromium() as opened:
        yield opened
    assert asyncio._get_running_loop() is None, "Playwright left an event loop running in this thread"


class Shots:
    """Numbered screenshots of one test's page under tmp_path/screenshots."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.count = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"[e2e] screenshot {path}")
        return path

    def readme(self, name: str) -> Path:
        """The page as the docs show it: docs/<name>.png, the viewport only (what a person first sees)."""
        path = DOCS / f"{name}.png"
        self.page.screenshot(path=str(path))
        print(f"[e2e] docs screenshot {path}")
        return path


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh 1440x900 page; a failing test leaves tmp_path/screenshots/FAILED.png."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        path = tmp_path / "screenshots" / "FAILED.png"
        try:
            path.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
            print(f"[e2e] failure screenshot {path}")
        except Exception as exc:  # a crashed page must not hide the test's own failure
            print(f"[e2e] no failure screenshot: {exc!r}")
    context.close()


@pytest.fixture
def shot(page, tmp_path) -> Shots:
    """shot("step") saves a numbered full-page screenshot of `page` under tmp_path/screenshots."""
    shots = Shots(page, tmp_path / "screenshots")
    print(f"\n[e2e] screenshots in {shots.folder}")
    return shots


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (for the failure screenshot) and attach server logs to failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    if report.failed:
        servers = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Server)]
        for server in servers:
            report.sections.append((f"{server.name} log {server.log} (tail)", tail(server.log, 120)))
    return report
