"""After `musictrend run`, a person opens the MLflow UI and finds one run per model in the
`musictrend` experiment with its f_norm, and the champion's run linked to the registered model."""
from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect

from musictrend_dagster.core.models.registry import MODEL_NAMES
from musictrend_dagster.settings import MLFLOW_EXPERIMENT, REGISTERED_MODEL, Paths


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
def test_experiment_lists_every_model_run_with_its_f_norm(mlflow_ui, tracked_home, page, shot):
    experiment_id, runs, champion = stored_runs(tracked_home)
    assert sorted(tag for tag, _ in runs.values()) == sorted(MODEL_NAMES), "one tracked run per model"

    page.goto(f"{mlflow_ui.url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    for name in MODEL_NAMES:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"{len(MODEL_NAMES)} matching runs")).to_be_visible()
    shot("runs")

    # Make room for the metric: close the assistant side panel if it is open, drop wide default columns.
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
    for column in ("Dataset", "Source", "Models", "f_norm"):
        show_column(page, column)
    expect(page.get_by_role("columnheader", name="f_norm").first).to_be_visible()
    shot("runs-with-f_norm")

    for run_id, (model, f_norm) in runs.items():
        # The grid renders a pinned part (name) and a scrolling part (metrics) per row, both keyed by run id.
        cells = page.locator(f"[role=row][row-id='{run_id}']").all_inner_texts()
        text = " ".join(cells)
        assert model in text, f"row of run {run_id} shows {text!r}"
        numbers = [float(x) for x in re.findall(r"\d+\.\d+(?:e-?\d+)?", text)]
        assert any(abs(x - f_norm) <= 1e-6 * max(1.0, abs(f_norm)) for x in numbers), (model, f_norm, text)
        assert 0 < f_norm <= 1, (model, f_norm)

    champion_model, champion_f_norm = runs[champion]
    page.get_by_role("link", name=champion_model, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/runs/{champion}"))
    f_norm_row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="f_norm", exact=True)).first
    expect(f_norm_row).to_be_visible(timeout=30_000)
    assert abs(float(re.search(r"\d+\.\d+", f_norm_row.inner_text()).group()) - champion_f_norm) <= 1e-6
    expect(page.get_by_text("Finished", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(REGISTERED_MODEL)).first).to_be_visible()
    shot("champion-run")
