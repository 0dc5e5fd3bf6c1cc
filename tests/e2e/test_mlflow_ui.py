"""After "Materialize all", a person opens the MLflow UI and finds the `musictrend` experiment in the
model-training view with one run per model and its f_norm, the champion's run linked to the registered
model (one click from the registry), and Compare showing two models' plots side by side."""

from __future__ import annotations

import json
import math
import re

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect

from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES
from musictrend_dagster.core.service.tracking import runs_page
from musictrend_dagster.core.settings import MLFLOW_EXPERIMENT, REGISTERED_MODEL, Paths


def stored_runs(home) -> tuple[str, dict[str, tuple[str, float]], str]:
    """(experiment id, {run id: (model tag, f_norm)}, champion run id) read straight from the store."""
    uri = Paths.from_env(home=home).mlflow_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    assert experiment is not None, f"no {MLFLOW_EXPERIMENT!r} experiment in {uri}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    failed = [(r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"]
    assert not failed, f"runs not FINISHED: {failed}"
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion").run_id
    by_id = {r.info.run_id: (r.data.tags.get("model"), r.data.metrics.get("f_norm")) for r in runs}
    return experiment.experiment_id, by_id, champion


def show_column(page, name: str) -> None:
    """Tick one entry of the runs table's "Columns" menu (metrics are hidden by default)."""
    page.get_by_role("button", name="Columns", exact=True).click()
    page.locator("[class*=tree-treenode]").filter(has_text=re.compile(rf"^{re.escape(name)}$")).first.click()
    page.keyboard.press("Escape")


@pytest.mark.e2e
def test_experiment_opens_on_the_model_runs_with_the_registry_one_click_away(mlflow_ui, ui_run, page, shot):
    experiment_id, runs, champion = stored_runs(ui_run.home)
    assert sorted(tag for tag, _ in runs.values()) == sorted(MODEL_NAMES), "one tracked run per model"

    page.goto(runs_page(mlflow_ui.url, experiment_id))  # the link the champion page and `musictrend run` give
    for name in MODEL_NAMES:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"{len(MODEL_NAMES)} matching runs")).to_be_visible()
    # the model-training view: the registry in the sidebar, no GenAI overview
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()
    expect(page.get_by_text("Token Usage")).to_have_count(0)
    # best f_norm first: the champion's run heads the list
    first_row = page.locator("[role=row][row-id]").first
    expect(first_row).to_have_attribute("row-id", champion)
    shot("runs")

    # Make room for the metric: close the assistant side panel if it is open, drop wide default columns.
    close_assistant(page)
    for column in ("Dataset", "Source", "Models", "f_norm"):
        show_column(page, column)
    expect(page.get_by_role("columnheader", name="f_norm").first).to_be_visible()
    shot("runs-with-f_norm")

    for run_id, (model, f_norm) in runs.items():
        # The grid renders a pinned part (name) and a scrolling part (metrics) per row, both keyed by run id.
        cells = page.locator(f"[role=row][row-id='{run_id}']").all_inner_texts()
        text = " ".join(cells)
        assert model in text, f"row of run {run_id} shows {text!r}"
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)]
        assert any(abs(x - f_norm) <= 1e-6 * max(1.0, abs(f_norm)) for x in numbers), (model, f_norm, text)
        # f_norm is 1 for a perfect forecast and unbounded below (worse than forecasting nothing is negative)
        assert math.isfinite(f_norm) and f_norm <= 1, (model, f_norm)

    champion_model, champion_f_norm = runs[champion]
    page.get_by_role("link", name=champion_model, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/runs/{champion}"))
    # the description leads with the score, to 4 decimals
    expect(page.get_by_text(f"f_norm {champion_f_norm:.4f}", exact=True).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Finished", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(REGISTERED_MODEL)).first).to_be_visible()
    shot("champion-run")

    page.goto(runs_page(mlflow_ui.url, experiment_id))
    page.get_by_role("link", name="Model registry").click()  # the registry: one click from the runs
    expect(page.get_by_role("link", name=REGISTERED_MODEL, exact=True)).to_be_visible(timeout=30_000)
    shot("registry")


@pytest.mark.e2e
def test_compare_two_model_runs_shows_their_plots_side_by_side(mlflow_ui, ui_run, page, shot):
    experiment_id, runs, _ = stored_runs(ui_run.home)
    by_model = {model: run_id for run_id, (model, _) in runs.items()}
    pair = [by_model["global_direct"], by_model["median14"]]
    page.goto(
        f"{mlflow_ui.url}/#/compare-runs?runs={json.dumps(pair)}&experiments={json.dumps([experiment_id])}"
        "&workflowType=machine_learning"
    )
    expect(page.get_by_role("link", name="f_norm", exact=True).first).to_be_visible(timeout=60_000)
    close_assistant(page)
    expect(page.get_by_text("No common artifacts to display")).to_have_count(0)
    plot = page.get_by_text("forecast_vs_actual.png", exact=True).first
    expect(plot).to_be_visible()
    plot.click()
    images = page.get_by_role("img", name="forecast_vs_actual.png")  # each run's copy, side by side
    expect(images).to_have_count(2, timeout=30_000)
    expect(images.nth(1)).to_be_visible()
    images.first.scroll_into_view_if_needed()
    shot.readme("mlflow_compare")


def close_assistant(page) -> None:
    """MLflow 3.17 opens an assistant panel over a third of the page; close it if it is there."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
