"""A person opens the Dagster UI, sees the six asset groups, clicks "Materialize all" and
watches the run succeed; the submission file then holds 60 days for every artist."""
from __future__ import annotations

import csv
import re
import time
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect

from musictrend_dagster.settings import Paths

GROUPS = ["ingest", "transform", "features", "models", "forecast", "monitoring"]
HORIZON = 60
RUN_TIMEOUT_S = 8 * 60
TERMINAL = ("Success", "Failure", "Canceled")

RUN_ERRORS_QUERY = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status
  eventConnection { events { __typename ... on ExecutionStepFailureEvent { stepKey
    error { message cause { message } } } } } } } }"""


def skip_community_dialog(page) -> None:
    """First visits may show "Join the Dagster community" over the page (unless nux is off)."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=3_000)
    except Exception:  # playwright's TimeoutError: no dialog this time
        return
    skip.click()
    expect(skip).to_be_hidden()


def launch_materialize_all(page) -> str:
    """Click "Materialize all", confirm a launchpad/confirmation dialog if one opens, return the run id."""
    page.get_by_role("button", name="Materialize all").click()
    view = page.get_by_role("link", name="View").and_(page.locator("a[href^='/runs/']"))
    confirm = page.get_by_role("dialog").get_by_role(
        "button", name=re.compile(r"^(Materialize|Launch run|Launch \d+ runs?|Confirm)$"))
    view.or_(confirm).first.wait_for(timeout=30_000)
    if confirm.count() and confirm.first.is_visible():
        confirm.first.click()
    href = view.first.get_attribute("href", timeout=30_000)
    return href.rsplit("/", 1)[1]


def run_failure_details(dagster_ui, run_id: str) -> str:
    data = dagster_ui.post_json("/graphql", {"query": RUN_ERRORS_QUERY, "variables": {"id": run_id}})
    run = data["data"]["runOrError"]
    lines = [f"run {run_id}: {run.get('status')}"]
    for event in (run.get("eventConnection") or {}).get("events", []):
        if event.get("stepKey"):
            error = event["error"] or {}
            cause = (error.get("cause") or {}).get("message", "")
            message = f"{error.get('message', '').strip()} {cause.strip()}"
            lines.append(f"  step {event['stepKey']}: {message[:800]}")
    return "\n".join(lines)


def wait_for_run_in_list(page, dagster_ui, run_id: str, shot) -> str:
    """Reload /runs until the run's row shows a terminal status; return that status."""
    # Rows are plain divs: the run's row is the nearest one holding both its id link and its View link.
    row = page.locator(f"xpath=//a[@href='/runs/{run_id}']/ancestor::div[count(.//a[@href='/runs/{run_id}'])=2][1]").first
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        page.goto(f"{dagster_ui.url}/runs")
        row.wait_for(timeout=30_000)
        text = row.inner_text()
        status = next((s for s in TERMINAL if s in text), "")
        if status:
            return status
        time.sleep(10)
    shot("run-timeout")
    pytest.fail(f"run {run_id} not finished after {RUN_TIMEOUT_S}s in the UI\n{run_failure_details(dagster_ui, run_id)}")


def read_column(path, column: int) -> list[str]:
    with open(path, newline="") as fh:
        return [row[column] for row in csv.reader(fh)]


@pytest.mark.e2e
def test_materialize_all_from_the_ui_writes_the_submission(dagster_ui, sample_home, page, shot):
    home, raw = sample_home
    page.goto(f"{dagster_ui.url}/asset-groups")
    skip_community_dialog(page)
    expect(page.get_by_role("button", name="Materialize all")).to_be_visible(timeout=60_000)
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    shot("asset-lineage")

    run_id = launch_materialize_all(page)
    shot("run-launched")

    status = wait_for_run_in_list(page, dagster_ui, run_id, shot)
    shot("run-list")
    page.goto(f"{dagster_ui.url}/runs/{run_id}")
    expect(page.get_by_text(status, exact=True).first).to_be_visible()
    expect(page.get_by_text("Loading run logs")).to_be_hidden(timeout=60_000)
    shot("run-page")
    assert status == "Success", run_failure_details(dagster_ui, run_id)

    submission = Paths.from_env(home=home, raw_dir=raw).submission
    assert submission.is_file(), f"no submission at {submission}"
    with open(submission, newline="") as fh:
        rows = [tuple(r) for r in csv.reader(fh)]
    artists = set(read_column(raw / "mars_tianchi_songs.csv", 1))
    last_day = max(datetime.strptime(d, "%Y%m%d").date() for d in read_column(raw / "mars_tianchi_user_actions.csv", 4))
    days = [(last_day + timedelta(days=i + 1)).strftime("%Y%m%d") for i in range(HORIZON)]
    assert all(len(r) == 3 and r[1].isdigit() for r in rows), rows[:3]
    assert len(rows) == len(artists) * HORIZON
    assert {(artist, ds) for artist, _, ds in rows} == {(a, d) for a in artists for d in days}
