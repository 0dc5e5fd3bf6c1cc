"""Steps a person takes in the Dagster UI, shared by the session's materialisation and the tests."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

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
        "button", name=re.compile(r"^(Materialize|Launch run|Launch \d+ runs?|Confirm)$")
    )
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
    row = page.locator(
        f"xpath=//a[@href='/runs/{run_id}']/ancestor::div[count(.//a[@href='/runs/{run_id}'])=2][1]"
    ).first
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
    pytest.fail(
        f"run {run_id} not finished after {RUN_TIMEOUT_S}s in the UI\n{run_failure_details(dagster_ui, run_id)}"
    )
