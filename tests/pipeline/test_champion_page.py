"""What a person reads in the Dagster UI: the champion's leaderboard (4 decimals, per origin, the
margin), launchpad hyperparameters with a description each, and previews as typed tables."""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest

from musictrend_dagster.core.forecast.models.registry import SPECS
from musictrend_dagster.definitions import defs
from musictrend_dagster.defs.assets.models import leaderboard_table
from musictrend_dagster.defs.metadata import preview

O1, O2 = date(2015, 5, 3), date(2015, 6, 2)


def test_leaderboard_has_per_origin_scores_the_margin_and_fit_time():
    scores = pl.DataFrame(
        {
            "model": ["a", "a", "b", "b", "c", "c"],
            "origin": [O1, O2] * 3,
            "f_norm": [0.70, 0.80, 0.76, 0.72, 0.10, -0.30],
            "coverage": [0.8, 0.7, 0.9, 0.9, 0.5, 0.6],
            "fit_seconds": [1.0, 3.0, 10.0, 20.0, 4.0, 4.0],
            "predict_seconds": [0.1] * 6,
            "mlflow_run_id": ["ra", "ra", "rb", "rb", "rc", "rc"],
            "params": ["{}"] * 6,
        }
    )
    board = leaderboard_table(scores)
    assert board.columns == [
        "model",
        "f_norm",
        "ahead_of_next",
        "2015-05-03",
        "2015-06-02",
        "fit_s_per_origin",
        "coverage_80",
    ]
    # by hand: means a 0.75, b 0.74, c -0.10; a leads b by 0.01, b leads c by 0.84
    expected = [
        ("a", 0.75, 0.70, 0.80, 2.0, 0.75),
        ("b", 0.74, 0.76, 0.72, 15.0, 0.9),
        ("c", -0.10, 0.10, -0.30, 4.0, 0.55),
    ]
    for row, want in zip(board.iter_rows(), expected, strict=False):
        assert row[0] == want[0]
        assert row[1:2] + row[3:] == pytest.approx(want[1:])
    assert board["ahead_of_next"].to_list()[:2] == pytest.approx([0.01, 0.84])
    assert board["ahead_of_next"][2] is None  # last: nothing below it

    table = preview(board, rows=board.height)  # the champion page's metadata: 4 decimals, not 0.7499999
    assert [r.data["f_norm"] for r in table.records] == [0.75, 0.74, -0.1]
    assert [r.data["ahead_of_next"] for r in table.records] == [0.01, 0.84, None]


def test_previews_are_typed_tables_with_rounded_floats_and_plain_dates():
    frame = pl.DataFrame(
        {"artist_id": ["x"], "ds": [date(2015, 3, 1)], "plays": [5652232], "mean": [14.309165498000084]}
    )
    table = preview(frame)
    assert isinstance(table, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in table.schema.columns] == [
        ("artist_id", "string"),
        ("ds", "date"),
        ("plays", "int"),
        ("mean", "float"),
    ]
    assert table.records[0].data == {"artist_id": "x", "ds": "2015-03-01", "plays": 5652232, "mean": 14.3092}


def test_launchpad_shows_only_hyperparameters_each_with_a_description():
    ops = defs.resolve_job_def("refresh_all").run_config_schema.config_type.fields["ops"].config_type.fields
    for spec in SPECS:
        fields = ops[f"backtest__{spec.name}"].config_type.fields["config"].config_type.fields
        assert set(fields) == set(spec.defaults), spec.name  # no paths or resource settings among them
        for name, field in fields.items():
            assert field.description and len(field.description) > 15 and "\n" not in field.description, (
                spec.name,
                name,
            )
            assert field.default_value == spec.defaults[name]
