"""The candidates: the models a catalogue backtests and chooses its champion among, named by
MUSICTREND_MODELS or musictrend.toml's [forecast] models (every model by default)."""

from __future__ import annotations

import pytest

from musictrend_dagster.core.data.source import CONFIG_ENV
from musictrend_dagster.core.forecast.models.registry import MODEL_NAMES, candidates, required_history
from musictrend_dagster.core.settings import MODELS_VAR, ConfigError, check_environment

TOML = '[source]\nkind = "daily"\npath = "p.csv"\n[forecast]\nmodels = {models}\n'


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Writes a musictrend.toml naming `models` (a TOML value) and points the process at it."""
    (tmp_path / "p.csv").write_text("unique_id,ds,y\n")
    monkeypatch.delenv(MODELS_VAR, raising=False)

    def write(models: str):
        path = tmp_path / "musictrend.toml"
        path.write_text(TOML.format(models=models))
        monkeypatch.setenv(CONFIG_ENV, str(path))
        return path

    return write


def _names() -> list[str]:
    return [s.name for s in candidates()]


def test_every_model_is_a_candidate_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(MODELS_VAR, raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert _names() == MODEL_NAMES
    for raw in ("all", " "):  # a blank variable is an unset one
        monkeypatch.setenv(MODELS_VAR, raw)
        assert _names() == MODEL_NAMES
    assert required_history() == 60


def test_the_project_file_names_the_candidates_and_the_variable_overrides_it(project, monkeypatch):
    project('["global_direct", "median14"]')
    assert _names() == ["median14", "global_direct"]  # the registry's order, not the file's
    assert required_history() == 28 + 14  # the plan leaves what the candidates need, not every model
    monkeypatch.setenv(MODELS_VAR, " best_constant ,median30")
    assert _names() == ["median30", "best_constant"]
    assert required_history() == 60
    monkeypatch.setenv(MODELS_VAR, "median14")
    assert required_history() == 14


def test_an_unknown_model_names_the_file_and_key_or_the_variable(project, monkeypatch):
    path = project('["median14", "prophet"]')
    with pytest.raises(ConfigError) as err:
        candidates()
    message = str(err.value)
    assert f"{path}: [forecast] models" in message and "prophet" in message and "global_direct" in message
    monkeypatch.setenv(MODELS_VAR, "median14,auto_arima")
    with pytest.raises(ConfigError, match=rf"^{MODELS_VAR}: no model named auto_arima; the models: median14, "):
        candidates()


def test_a_model_named_twice_names_the_file_and_key_or_the_variable(project, monkeypatch):
    path = project('["median14", "global_direct", "median14"]')
    with pytest.raises(ConfigError, match=rf"^{path}: \[forecast\] models: median14 named more than once$"):
        candidates()
    monkeypatch.setenv(MODELS_VAR, "best_constant, best_constant")
    with pytest.raises(ConfigError, match=rf"^{MODELS_VAR}: best_constant named more than once$"):
        candidates()


@pytest.mark.parametrize("raw", [",", "median14,,median30"])
def test_a_malformed_variable_stops_the_start(monkeypatch, raw):
    monkeypatch.setenv(MODELS_VAR, raw)
    with pytest.raises(ConfigError, match=MODELS_VAR):
        check_environment()
