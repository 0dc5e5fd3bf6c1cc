"""Warehouse reads: an ORDER BY survives the hand-off to polars on the warehouse's own settings."""

from __future__ import annotations

from musictrend_dagster.core.data import warehouse
from musictrend_dagster.core.service.store import query


def test_order_by_survives_the_arrow_hand_off(tmp_path):
    """The warehouse runs with preserve_insertion_order = false; DuckDB 2.0 then returned this view's
    ORDER BY out of order (found on the packaged season's forecasts: forecast_files_match failed)."""
    con = warehouse.connect(tmp_path / "w.duckdb")
    con.execute(
        "CREATE TABLE v AS SELECT DATE '2015-08-31' + (i % 7)::INTEGER AS vintage, md5((i // 60)::VARCHAR) AS id, "
        "DATE '2015-08-31' + (i % 60)::INTEGER AS ds, random() AS y FROM range(30000) t(i)"
    )
    con.execute("CREATE VIEW newest AS SELECT id, ds, y FROM v WHERE vintage = (SELECT max(vintage) FROM v)")
    for _ in range(5):
        frame = query(con, "SELECT * FROM newest ORDER BY id, ds")
        assert frame.height > 0 and frame.equals(frame.sort("id", "ds"))
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchone() == (False,)
