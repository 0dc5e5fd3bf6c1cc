"""Steps a person takes in the Dagster UI, shared by the session's materialisation and the tests."""

from __future__ import annotations

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


def choose_partitions(page, keys: list[str]) -> None:
    """In Dagster's partition dialog, select exactly `keys` (vintage days), never the whole range it offers."""
    dialog = _partition_dialog(page)
    expect(dialog).to_be_visible(timeout=30_000)
    # the dialog first offers the last 90 (wall-clock) days only: the sample's days are older
    dialog.get_by_role("button", name="Show all partitions").click()
    expect(dialog.get_by_text("Showing the last 90 days")).to_be_hidden()
    field = dialog.locator("input:not([type=checkbox])").first
    field.fill(", ".join(keys))  # the field takes keys separated by commas
    field.press("Enter")
    label = "1 partition" if len(keys) == 1 else f"{len(keys)} partitions"
    expect(dialog.get_by_text(label, exact=True)).to_be_visible(timeout=10_000)


def launch_materialize_all(page, partition: str) -> str:
    """Click "Materialize all": the vintages are daily partitions, so Dagster opens its partition dialog; choose
    the one `partition` and launch the one run (the data and model assets and that vintage); its run id."""
    page.get_by_role("button", name="Materialize all").click()
    choose_partitions(page, [partition])
    _partition_dialog(page).get_by_role("button", name="Launch 1 run").click()
    view = page.get_by_role("link", name="View").and_(page.locator("a[href^='/runs/']"))
    href = view.first.get_attribute("href", timeout=30_000)
    return href.rsplit("/", 1)[1]


def launch_backfill(page) -> str:
    """Click "Launch backfill" in the open partition dialog; the backfill id from the toast's View link."""
    _partition_dialog(page).get_by_role("button", name="Launch backfill").click()
    view = page.get_by_role("link", name="View").and_(page.locator("a[href*='/runs/b/']"))
    href = view.first.get_attribute("href", timeout=30_000)
    return href.split("/runs/b/", 1)[1].split("?", 1)[0].split("/", 1)[0]


def _partition_dialog(page):
    return page.get_by_role("dialog").filter(has_text="Partition selection")


BACKFILL_QUERY = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status runs(limit: 50) { runId status startTime } } } }"""


def wait_for_backfill(dagster_ui, backfill_id: str, shot) -> list[tuple[str, str]]:
    """Poll the backfill until Dagster calls it finished; its runs as (run id, status), oldest first."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    backfill: dict = {}
    while time.monotonic() < deadline:
        data = dagster_ui.post_json("/graphql", {"query": BACKFILL_QUERY, "variables": {"id": backfill_id}})
        backfill = data["data"]["partitionBackfillOrError"]
        if backfill.get("status") not in (None, "REQUESTED", "CANCELING"):
            runs = sorted(backfill["runs"], key=lambda r: r["startTime"] or 0)
            return [(r["runId"], r["status"]) for r in runs]
        time.sleep(10)
    shot("backfill-timeout")
    pytest.fail(f"backfill {backfill_id} not finished after {RUN_TIMEOUT_S}s: {backfill}")


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
