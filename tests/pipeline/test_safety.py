"""Safety: servers bind to localhost, SQL model names cannot smuggle SQL, and nothing from config or data
is evaluated as code. That a full run writes only under MUSICTREND_HOME is checked on the fault suite's
complete run (test_faults.py::test_a_full_run_writes_only_under_musictrend_home), not on a run of its own."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import musictrend_dagster
from musictrend_dagster import cli
from musictrend_dagster.core.data import sql_models, warehouse
from musictrend_dagster.core.data.sql_models import SqlModel, SqlModelError

PACKAGE = Path(musictrend_dagster.__file__).parent


class Exec(Exception):
    """Raised by the os.execv stand-in: carries the argv that would have replaced the process."""


@pytest.fixture
def captured_exec(monkeypatch, tmp_path):
    """os.execv captured instead of run; the CLI's environment changes undone after the test."""
    for var in ("MUSICTREND_HOME", "MUSICTREND_RAW_DIR", "DAGSTER_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def execv(path, argv):
        raise Exec(list(argv))

    monkeypatch.setattr(os, "execv", execv)
    return tmp_path


def exec_argv(*args: str) -> list[str]:
    with pytest.raises(Exec) as caught:
        cli.main(list(args))
    return caught.value.args[0]


def option(argv: list[str], *names: str) -> str:
    for name in names:
        if name in argv:
            return argv[argv.index(name) + 1]
    raise AssertionError(f"none of {names} in {argv}")


def test_dagster_ui_binds_to_localhost_by_default(captured_exec):
    argv = exec_argv("ui", "--home", str(captured_exec / "home"))
    assert argv[1] == "dev"
    assert option(argv, "-h", "--host") == "127.0.0.1"
    assert os.environ["DAGSTER_HOME"] == str(captured_exec / "home" / "dagster")


def test_mlflow_ui_binds_to_localhost_by_default(captured_exec):
    argv = exec_argv("mlflow-ui", "--home", str(captured_exec / "home"))
    assert argv[1] == "server"
    assert option(argv, "-h", "--host") == "127.0.0.1"
    assert option(argv, "--backend-store-uri") == f"sqlite:///{captured_exec / 'home' / 'mlflow.db'}"


@pytest.mark.parametrize("name", ["Bad-Name", "x;drop", "1st", "Upper", "a b", "x'y", 'x"y'])
def test_a_sql_model_file_with_an_unsafe_name_is_refused(tmp_path, name):
    (tmp_path / f"{name}.sql").write_text("SELECT 1 AS x\n")
    with pytest.raises(SqlModelError, match=r"not a valid model name \(\^\[a-z_\]\[a-z0-9_\]\*\$\)") as err:
        sql_models.load_models(tmp_path)
    assert f"{name}.sql" in str(err.value)


def test_a_sql_test_file_with_an_unsafe_name_is_refused(tmp_path):
    (tmp_path / "artist_daily__x;drop.sql").write_text("SELECT * FROM artist_daily\n")
    with pytest.raises(SqlModelError, match="not a valid model name"):
        sql_models.load_tests(tmp_path)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS x; DROP TABLE raw_songs",
        "DROP TABLE raw_songs",
        "INSERT INTO raw_songs SELECT * FROM raw_songs",
        "ATTACH 'other.db'",
    ],
)
def test_a_sql_model_must_be_one_select(tmp_path, sql):
    (tmp_path / "model.sql").write_text(sql)
    with pytest.raises(SqlModelError, match=r"model\.sql: (expected a single SELECT|SQL does not parse)"):
        sql_models.load_models(tmp_path)


def test_build_model_refuses_a_name_that_bypassed_loading(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    try:
        model = SqlModel(
            'x" AS SELECT 1; DROP TABLE ingested_files; --', "SELECT 1 AS x", tmp_path / "x.sql", frozenset()
        )
        with pytest.raises(SqlModelError, match="refusing to use"):
            sql_models.build_model(con, model)
        assert con.execute("SELECT count(*) FROM ingested_files").fetchone() == (0,)
    finally:
        con.close()


@pytest.mark.parametrize("value", ["4GB'; DROP TABLE raw_songs; --", "4GB' ", "lots"])
def test_memory_limit_config_cannot_inject_sql(tmp_path, value):
    with pytest.raises(ValueError, match="memory_limit must look like"):
        warehouse.connect(tmp_path / "w.duckdb", memory_limit=value)


# Calls that turn data into code. `x.compile(...)` (Keras) is a method, not the builtin.
BUILTINS = {"eval", "exec", "compile", "__import__"}
MODULE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("marshal", "loads"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("os", "system"),
    ("os", "popen"),
    ("importlib", "import_module"),
}


def code_from_data(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            found += [
                f"{path}:{node.lineno}: imports {n}"
                for n in names
                if n.split(".")[0] in {"pickle", "marshal", "cloudpickle"}
            ]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTINS:
            found.append(f"{path}:{node.lineno}: {func.id}()")
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and (func.value.id, func.attr) in MODULE_CALLS
        ):
            found.append(f"{path}:{node.lineno}: {func.value.id}.{func.attr}()")
        if any(
            k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
            for k in node.keywords
        ):
            found.append(f"{path}:{node.lineno}: shell=")
    return found


# The one exception, by design: the daily path serves the champion's MLflow model, whose fitted state the
# project itself pickled into its own MLflow store (core.service.serving.split_networks / join_networks,
# Keras networks kept out in Keras's own format), the same trust MLflow's own pyfunc loading places in
# that store. Nothing else may unpickle, eval or exec.
TRUSTED = {"core/service/serving.py": ["imports pickle"]}


def test_the_package_never_evaluates_config_or_data_as_code():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    hits: dict[str, list[str]] = {}
    for f in files:
        for hit in code_from_data(f):
            hits.setdefault(f.relative_to(PACKAGE).as_posix(), []).append(hit.split(": ", 1)[1])
    assert {k: sorted(v) for k, v in hits.items()} == {k: sorted(v) for k, v in TRUSTED.items()}


def test_config_values_stay_values(tmp_path):
    """Hostile launchpad values are rejected by type, never executed."""
    import dagster as dg

    from musictrend_dagster.core.forecast.models.registry import make_model
    from musictrend_dagster.core.settings import Paths
    from musictrend_dagster.definitions import build_defs

    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    with pytest.raises(TypeError):
        make_model("median14", window=payload)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        make_model("median14", **{payload: 1})
    job = build_defs(Paths.from_env(home=tmp_path)).resolve_job_def("refresh_all")
    for op, field in (("forecast", "horizon"), ("backtest__median14", "window"), ("backtest__global_direct", "epochs")):
        with pytest.raises(dg.DagsterInvalidConfigError):
            dg.validate_run_config(job, {"ops": {op: {"config": {field: payload}}}})
    assert not marker.exists()
