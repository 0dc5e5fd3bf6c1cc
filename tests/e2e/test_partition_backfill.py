"""A person backfills two earlier vintages of the forecast from its asset page: Dagster's partition dialog, one
run per partition, and the asset's partitions then count them materialized beside the session's vintage."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import expect

from .conftest import newest_vintage
from .ui_steps import choose_partitions, launch_backfill, skip_community_dialog, wait_for_backfill

STATS_QUERY = """{ assetNodeOrError(assetKey: {path: ["forecast"]}) { ... on AssetNode {
  partitionStats { numMaterialized numFailed } } } }"""


@pytest.mark.e2e
def test_a_two_day_backfill_from_the_ui_fills_two_more_forecast_partitions(dagster_ui, ui_run, page, shot):
    newest = date.fromisoformat(newest_vintage(ui_run.raw))
    earlier = [(newest - timedelta(days=d)).isoformat() for d in (2, 1)]
    page.goto(f"{dagster_ui.url}/assets/forecast")
    skip_community_dialog(page)
    page.get_by_role("button", name="Materialize").first.click()  # "Materialize…": a dialog follows
    choose_partitions(page, earlier)
    shot("backfill-dialog")
    backfill_id = launch_backfill(page)
    runs = wait_for_backfill(dagster_ui, backfill_id, shot)
    assert len(runs) == 2 and all(status == "SUCCESS" for _, status in runs), runs
    stats = dagster_ui.post_json("/graphql", {"query": STATS_QUERY})["data"]["assetNodeOrError"]["partitionStats"]
    assert stats == {"numMaterialized": 3, "numFailed": 0}, stats
    page.goto(f"{dagster_ui.url}/assets/forecast?view=partitions")
    expect(page.get_by_text("Partitions", exact=True).first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(2_000)  # the partition bar's health loads after the page: picture the settled one
    shot("partition-bar")
    # the bar spans 2015 to today: narrow it to the sample's last weeks, where the three vintages are
    field = page.locator("input[value^='[2015-01-01']").first.element_handle()  # its value changes as we type
    field.fill(f"[{(newest - timedelta(days=20)).isoformat()}...{(newest + timedelta(days=5)).isoformat()}]")
    field.press("Enter")
    expect(page.get_by_text("26 Partitions Selected")).to_be_visible(timeout=10_000)
    page.get_by_text(newest.isoformat(), exact=True).first.click()  # its latest materialization beside the bar
    page.wait_for_timeout(2_000)
    shot.readme("partition_bar")  # docs/daily-service-dagster.md shows it
    page.goto(f"{dagster_ui.url}/assets/forecast?view=automation")
    evaluation = page.get_by_text(re.compile(r"^[A-Z][a-z]{2} \d+, \d+:\d\d:\d\d [AP]M$")).first  # newest first
    expect(evaluation).to_be_visible(timeout=60_000)
    evaluation.click()  # one evaluation: its condition tree, each part true or false, with the custom ones' labels
    expect(page.get_by_text("vintage_partition").first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1_000)
    shot.readme("automation_evaluations")  # docs/daily-service-dagster.md shows it
