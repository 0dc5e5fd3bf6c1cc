"""One setting, MUSICTREND_MLFLOW_UI_URL, says where the MLflow UI is: `musictrend mlflow-ui` serves
there, and every MLflow link Dagster stores starts with it (issue 13, point 1)."""

from __future__ import annotations

import os

import pytest

from musictrend_dagster import cli
from musictrend_dagster.core.settings import MLFLOW_UI_URL_VAR, Paths
from musictrend_dagster.defs.resources import default_resources


class Exec(Exception):
    """Raised by the os.execv stand-in: carries the argv that would have replaced the process."""


@pytest.fixture
def served(monkeypatch, tmp_path):
    """Run `musictrend mlflow-ui ARGS` with os.execv captured; returns (argv, exit message or '')."""
    for var in ("MUSICTREND_HOME", "MUSICTREND_RAW_DIR", "DAGSTER_HOME", "MLFLOW_TRACKING_URI", MLFLOW_UI_URL_VAR):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def execv(path, argv):
        raise Exec(list(argv))

    monkeypatch.setattr(os, "execv", execv)

    def run(*args: str) -> list[str]:
        with pytest.raises(Exec) as caught:
            cli.main(["mlflow-ui", "--home", str(tmp_path / "home"), *args])
        return caught.value.args[0]

    return run


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mlflow_ui_serves_where_the_setting_says(served, monkeypatch, capsys):
    monkeypatch.setenv(MLFLOW_UI_URL_VAR, "http://127.0.0.1:5310")
    argv = served()
    assert (_option(argv, "--host"), _option(argv, "--port")) == ("127.0.0.1", "5310")
    out = capsys.readouterr()
    assert "MLflow UI on http://127.0.0.1:5310" in out.out
    assert "note:" not in out.err  # served where the links point: nothing to fix


def test_mlflow_ui_defaults_to_port_5000(served):
    argv = served()
    assert (_option(argv, "--host"), _option(argv, "--port")) == ("127.0.0.1", "5000")


def test_a_port_that_disagrees_with_the_setting_says_how_to_make_links_agree(served, capsys):
    argv = served("--port", "5311")
    assert _option(argv, "--port") == "5311"
    err = capsys.readouterr().err
    assert f"export {MLFLOW_UI_URL_VAR}=http://127.0.0.1:5311" in err
    assert f"{MLFLOW_UI_URL_VAR}=http://127.0.0.1:5000" in err  # where the links point now


def test_links_stored_in_dagster_follow_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv(MLFLOW_UI_URL_VAR, "http://localhost:5310/")
    mlflow = default_resources(Paths.from_env(home=tmp_path))["mlflow"]
    # in MLflow's model-training view (3.17 would otherwise open the GenAI one)
    assert mlflow.run_url("3", "abc") == "http://localhost:5310/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert mlflow.runs_url("3") == (
        "http://localhost:5310/#/experiments/3/runs?workflowType=machine_learning"
        "&orderByKey=metrics.%60f_norm%60&orderByAsc=false"
    )


@pytest.mark.parametrize(
    "value", ["localhost:5310", "http://127.0.0.1", "ftp://h:1", "http://h:1/mlflow", "http://h:x"]
)
def test_a_bad_url_is_refused_naming_the_variable(served, monkeypatch, capsys, value):
    monkeypatch.setenv(MLFLOW_UI_URL_VAR, value)
    assert cli.main(["mlflow-ui"]) == 2
    err = capsys.readouterr().err
    assert MLFLOW_UI_URL_VAR in err and repr(value) in err
