"""A person opens the Dagster UI, sees the six asset groups, clicks "Materialize all" and watches the
run succeed (the session's `ui_run`); the submission file then holds 60 days for every artist, the graph
shows every model by name, a backtest's MLflow link opens its run, and the champion page shows the margin."""

from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect

from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES
from musictrend_dagster.core.service.store import query
from musictrend_dagster.core.settings import Paths
from musictrend_dagster.defs.resources import default_resources

from .ui_steps import run_failure_details, skip_community_dialog

GROUPS = ["ingest", "transform", "features", "models", "forecast", "monitoring"]
HORIZON = 60


def read_column(path, column: int) -> list[str]:
    with open(path, newline="") as fh:
        return [row[column] for row in csv.reader(fh)]


@pytest.mark.e2e
def test_materialize_all_from_the_ui_writes_the_submission(dagster_ui, ui_run, page, shot):
    page.goto(f"{dagster_ui.url}/runs/{ui_run.run_id}")
    skip_community_dialog(page)
    expect(page.get_by_text(ui_run.status, exact=True).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Loading run logs")).to_be_hidden(timeout=60_000)
    shot("run-page")
    assert ui_run.status == "Success", run_failure_details(dagster_ui, ui_run.run_id)

    submission = Paths.from_env(home=ui_run.home, raw_dir=ui_run.raw).submission
    assert submission.is_file(), f"no submission at {submission}"
    with open(submission, newline="") as fh:
        rows = [tuple(r) for r in csv.reader(fh)]
    artists = set(read_column(ui_run.raw / "mars_tianchi_songs.csv", 1))
    last_day = max(
        datetime.strptime(d, "%Y%m%d").date() for d in read_column(ui_run.raw / "mars_tianchi_user_actions.csv", 4)
    )
    days = [(last_day + timedelta(days=i + 1)).strftime("%Y%m%d") for i in range(HORIZON)]
    assert all(len(r) == 3 and r[1].isdigit() for r in rows), rows[:3]
    assert len(rows) == len(artists) * HORIZON
    assert {(artist, ds) for artist, _, ds in rows} == {(a, d) for a in artists for d in days}


@pytest.mark.e2e
def test_global_graph_shows_every_group_and_whole_model_names(dagster_ui, ui_run, page, shot):
    page.goto(f"{dagster_ui.url}/asset-groups")
    skip_community_dialog(page)
    expect(page.get_by_role("button", name="Materialize all")).to_be_visible(timeout=60_000)
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    expand_all_groups(page)
    for model in MODEL_NAMES:  # the node shows the model's whole name, not "backtest_…_ensemble"
        expect(page.get_by_text(model, exact=True).first).to_be_visible()
    shot.readme("asset_graph")


@pytest.mark.e2e
def test_backtest_link_opens_its_run_in_the_mlflow_ui_on_its_own_port(dagster_ui, ui_run, mlflow_ui, page, shot):
    model = "global_direct"
    run_id = stored_run_id(ui_run.home, model)
    page.goto(f"{dagster_ui.url}/assets/backtest/{model}")
    skip_community_dialog(page)
    link = page.locator(f"a[href*='/runs/{run_id}']").first
    expect(link).to_be_visible(timeout=60_000)
    shot("backtest-asset")
    assert link.get_attribute("href").startswith(mlflow_ui.url + "/")  # the setting's port, not 5000
    if link.get_attribute("target") == "_blank":  # metadata links open in a new tab
        with page.context.expect_page() as opened:
            link.click()
        mlflow_page = opened.value
    else:
        link.click()
        mlflow_page = page
    mlflow_page.wait_for_load_state()
    expect(mlflow_page).to_have_url(re.compile(rf"^{re.escape(mlflow_ui.url)}/.*/runs/{run_id}"))
    expect(mlflow_page.get_by_text(model, exact=True).first).to_be_visible(timeout=60_000)
    # the run page in the model-training view, its description leading with the score
    expect(mlflow_page.get_by_role("link", name="Model registry")).to_be_visible()  # only there in model training
    expect(mlflow_page.get_by_text(re.compile(r"^f_norm -?\d\.\d{4}$")).first).to_be_visible()
    mlflow_page.screenshot(path=str(shot.folder / "mlflow-run-from-dagster.png"), full_page=True)


@pytest.mark.e2e
def test_champion_page_shows_the_margin(dagster_ui, ui_run, page, shot):
    board = champion_board(ui_run.home)
    page.goto(f"{dagster_ui.url}/assets/champion")
    skip_community_dialog(page)
    leaderboard = page.get_by_role("row").filter(has=page.get_by_text("leaderboard", exact=True)).first
    expect(leaderboard).to_be_visible(timeout=60_000)
    leaderboard.scroll_into_view_if_needed()
    for model, f_norm in board.iter_rows():  # every model's mean to 4 decimals, as the warehouse has it
        cells = (
            leaderboard.get_by_role("row").filter(has=page.get_by_text(model, exact=True)).first.inner_text().split()
        )
        assert cells[0] == model and float(cells[1]) == round(f_norm, 4), (model, f_norm, cells)
    margin = page.get_by_role("row").filter(has=page.get_by_text("margin_over_runner_up", exact=True)).first
    assert float(margin.inner_text().split()[-1]) == round(board["f_norm"][0] - board["f_norm"][1], 4)
    shot.readme("champion")
    page.get_by_role("row").filter(has=page.get_by_text("scores", exact=True)).get_by_text(
        "[Show Markdown]"
    ).first.click()
    chart = page.get_by_role("dialog").get_by_role("img", name="mean f_norm per model")
    expect(chart).to_be_visible()
    page.wait_for_timeout(1_000)  # the dialog fades in: let the docs picture be the settled one
    shot.readme("champion_scores")


def expand_all_groups(page) -> None:
    """The global graph opens with its groups collapsed into bars: "Expand all groups" in its settings menu."""
    page.locator("button:has([aria-label=settings])").last.click()
    expand = page.get_by_role("menuitem", name=re.compile("Expand all groups"))
    expand.or_(page.get_by_role("menuitem", name=re.compile("Collapse all groups"))).first.wait_for()
    if expand.count():
        expand.click()
    page.keyboard.press("Escape")  # the menu stays open after a choice
    expect(page.get_by_role("menu")).to_have_count(0)


def stored_run_id(home, model: str) -> str:
    """The model's backtest MLflow run, read from the warehouse (what the asset recorded)."""
    with default_resources(Paths.from_env(home=home))["warehouse"].connect() as con:
        return con.execute("SELECT mlflow_run_id FROM backtest_runs WHERE model = ?", [model]).fetchone()[0]


def champion_board(home):
    """Mean f_norm per model from the warehouse's backtest_scores, best first (computed here, not by the asset)."""
    with default_resources(Paths.from_env(home=home))["warehouse"].connect() as con:
        return query(
            con, "SELECT model, avg(f_norm) AS f_norm FROM backtest_scores GROUP BY model ORDER BY f_norm DESC, model"
        )
