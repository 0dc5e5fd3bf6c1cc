"""The SQL model layer: loader, dependency order, builds on a hand-made warehouse, the
singular tests, and the exact match of artist_daily with the real season-1 aggregates."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from statistics import median, pvariance

import pytest

from musictrend_dagster.core.data import ingest, lake, warehouse
from musictrend_dagster.core.data import sql_models as sm

PACKAGED_ARTIST_DAILY = Path(sm.__file__).resolve().parents[2] / "data" / "tianchi_s1" / "artist_daily.csv"
D0 = date(2015, 3, 1)


def test_loader_finds_models_deps_and_order():
    models = sm.load_models(sm.SQL_DIR)
    by_name = {m.name: m for m in models}
    assert {"stg_user_actions", "stg_songs", "artist_daily", "artist_rolling_stats"} <= by_name.keys()
    assert by_name["artist_day_actions"].deps == {"stg_user_actions", "stg_songs", "stg_daily_plays"}
    assert by_name["artist_daily"].deps == {"artist_day_actions"}  # CTE names excluded
    assert by_name["artist_rolling_stats"].deps == {"artist_daily"}
    assert by_name["stg_user_actions"].materialized == "view"
    assert (by_name["artist_day_actions"].materialized, by_name["artist_day_actions"].partition_by) == (
        "incremental",
        "ds",
    )
    assert by_name["artist_daily"].sources == {"user_actions", "songs", "events", "daily_plays"}
    order = [m.name for m in sm.topo_order(models)]
    assert (
        order.index("stg_songs")
        < order.index("artist_day_actions")
        < order.index("artist_daily")
        < order.index("artist_rolling_stats")
    )
    tests = {t.name: t.model for t in sm.load_tests(sm.SQL_DIR / "tests")}
    assert tests["artist_daily__no_calendar_gaps"] == "artist_daily"
    assert tests["artist_rolling_stats__row_count_matches"] == "artist_rolling_stats"


def test_deps_ignore_cte_and_table_functions(tmp_path):
    (tmp_path / "m.sql").write_text("WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN main.b USING (k), range(3) r(i)")
    (model,) = sm.load_models(tmp_path)
    assert model.deps == {"a", "b"}


@pytest.mark.parametrize(
    ("file", "sql", "message"),
    [
        ("Bad-Name.sql", "SELECT 1", "not a valid model name"),
        ("drop_it.sql", "DROP TABLE x", "expected a single SELECT, found Drop"),
        ("two.sql", "SELECT 1; SELECT 2", "expected a single SELECT, found Select, Select"),
        ("broken.sql", "SELECT (1", "SQL does not parse"),
    ],
)
def test_loader_rejects_bad_files_naming_them(tmp_path, file, sql, message):
    (tmp_path / file).write_text(sql)
    with pytest.raises(sm.SqlModelError, match=message) as err:
        sm.load_models(tmp_path)
    assert file in str(err.value)


def test_cycle_and_misnamed_test_are_errors(tmp_path):
    (tmp_path / "a.sql").write_text("SELECT * FROM b")
    (tmp_path / "b.sql").write_text("SELECT * FROM a")
    with pytest.raises(sm.SqlModelError, match="dependency cycle"):
        sm.topo_order(sm.load_models(tmp_path))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "a__x.sql").write_text("SELECT * FROM b")
    with pytest.raises(sm.SqlModelError, match=r"a__x\.sql: test is named after model 'a' but does not read it"):
        sm.load_tests(tests)


PLAYS_A1 = [3, 0, 6, 1, 5, 0, 0, 9, 2, 4]  # a1 on days 0..9; day 1, 5, 6 have no plays at all


@pytest.fixture
def warehouse_db(tmp_path):
    """A warehouse whose raw views are plain tables of hand-made rows (the models only read the views)."""
    con = warehouse.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    the_lake = lake.Lake(tmp_path / "lake")
    the_lake.ensure(con)
    for empty in (lake.EVENTS, lake.DAILY_PLAYS):  # the described sources' datasets: empty views
        the_lake.refresh_view(con, empty)
    con.execute(
        "CREATE TABLE raw_songs AS SELECT * FROM (VALUES ('s1','a1','2014-01-01'::DATE,1,1,1,'f'), "
        "('s2','a1','2014-01-01'::DATE,1,1,1,'f'), ('s3','a2','2014-01-01'::DATE,1,1,1,'f'), "
        "('s3','a2','2014-01-01'::DATE,1,1,1,'f'), ('s4','a3','2014-01-01'::DATE,1,1,1,'f')) "
        "AS t(song_id, artist_id, publish_time, song_init_plays, language, gender, source_file)"
    )
    rows = []
    for day, n in enumerate(PLAYS_A1):
        ds = D0 + timedelta(days=day)
        rows += [(f"u{i % 2}", "s1" if i % 3 else "s2", 0, 1, ds) for i in range(n)]
    rows += [("u1", "s3", 0, 2, D0 + timedelta(days=4)), ("u1", "s3", 0, 3, D0 + timedelta(days=4))]
    con.execute(
        "CREATE TABLE raw_user_actions (user_id VARCHAR, song_id VARCHAR, gmt_create BIGINT, "
        "action_type TINYINT, ds DATE, source_file VARCHAR)"
    )
    con.executemany("INSERT INTO raw_user_actions VALUES (?, ?, ?, ?, ?, 'f')", rows)
    counts = {name: built.rows for name, built in sm.build_all(con, sm.SQL_DIR).items()}
    yield con, counts
    con.close()


def test_dense_calendar_with_zeros(warehouse_db):
    con, counts = warehouse_db
    assert counts["artist_daily"] == 2 * 10  # a1 and a2 (a3 has no actions), every day of the log
    a1 = con.execute("SELECT plays FROM artist_daily WHERE artist_id = 'a1' ORDER BY ds").fetchall()
    assert [p for (p,) in a1] == PLAYS_A1
    a2 = con.execute(
        "SELECT ds, plays, downloads, collects, listeners, active_songs FROM artist_daily "
        "WHERE artist_id = 'a2' AND (downloads > 0 OR ds = DATE '2015-03-01') ORDER BY ds"
    ).fetchall()
    assert a2 == [(D0, 0, 0, 0, 0, 0), (D0 + timedelta(days=4), 0, 1, 1, 1, 1)]
    assert con.execute(
        "SELECT listeners, active_songs FROM artist_daily WHERE artist_id = 'a1' AND ds = $d",
        {"d": D0 + timedelta(days=2)},
    ).fetchone() == (2, 2)


def test_rolling_stats_match_hand_computation(warehouse_db):
    con, _ = warehouse_db
    got = con.execute(
        "SELECT plays_mean_3, plays_var_3, plays_median_7, plays_median_14, plays_median_28 "
        "FROM artist_rolling_stats WHERE artist_id = 'a1' ORDER BY ds"
    ).fetchall()
    for d, row in enumerate(got):
        w3, w7, w14 = PLAYS_A1[max(0, d - 2) : d + 1], PLAYS_A1[max(0, d - 6) : d + 1], PLAYS_A1[max(0, d - 13) : d + 1]
        assert row[0] == pytest.approx(sum(w3) / len(w3))
        assert row[1] == pytest.approx(pvariance(w3))
        assert row[2] == pytest.approx(median(w7))
        assert row[3] == pytest.approx(median(w14))
        assert row[4] == pytest.approx(median(PLAYS_A1[: d + 1]))


def test_singular_tests_pass_on_good_data_and_catch_broken_data(warehouse_db):
    con, _ = warehouse_db
    tests = {t.name: t for t in sm.load_tests(sm.SQL_DIR / "tests")}
    assert {name: sm.run_test(con, t)[0] for name, t in tests.items()} == {name: 0 for name in tests}
    breakages = {
        "artist_daily__no_calendar_gaps": "DELETE FROM artist_daily WHERE artist_id = 'a1' AND ds = DATE '2015-03-05'",
        "artist_daily__unique_artist_day": (
            "INSERT INTO artist_daily SELECT * FROM artist_daily WHERE ds = DATE '2015-03-02'"
        ),
        "artist_daily__non_negative_counts": "UPDATE artist_daily SET plays = -1 WHERE ds = DATE '2015-03-03'",
        "artist_rolling_stats__row_count_matches": "DELETE FROM artist_rolling_stats WHERE ds = DATE '2015-03-04'",
        "stg_daily_plays__one_row_per_series_day": "INSERT INTO stg_daily_plays (series_id, ds, plays, source_file) "
        "VALUES ('a1', DATE '2015-03-01', 1, 'f1'), ('a1', DATE '2015-03-01', 2, 'f2')",
    }
    assert breakages.keys() == tests.keys()
    for name, statement in breakages.items():
        con.execute("BEGIN TRANSACTION")
        for table in ("artist_daily", "artist_rolling_stats", "stg_daily_plays"):  # views over the lake: break a copy
            con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM main.{table}")
        con.execute(statement)
        n, sample = sm.run_test(con, tests[name], limit=1)
        con.execute("ROLLBACK")
        assert n > 0 and len(sample) == 1, name


def test_build_model_replaces_and_returns_row_count(warehouse_db):
    con, _ = warehouse_db
    model = next(m for m in sm.load_models(sm.SQL_DIR) if m.name == "artist_daily")
    assert sm.build_model(con, model).rows == 20
    assert sm.build_model(con, model).rows == 20


def test_artist_daily_matches_real_tianchi_s1_exactly(tianchi, tmp_path):
    con = warehouse.connect(tmp_path / "wh.duckdb")
    result = ingest.ingest_raw_dir(con, tianchi.actions_file.parent, tmp_path / "lake")
    assert sum(r.loaded for r in result.files[1:]) == 5_652_232
    assert sum(r.quarantined for r in result.files) == 0
    counts = sm.build_all(con, sm.SQL_DIR)
    assert counts["artist_daily"].rows == 9150
    mismatches = con.execute(
        """
        SELECT e.artist_id, e.ds, e.plays, a.plays, e.downloads, a.downloads, e.collects, a.collects
        FROM read_csv($p, header = true, auto_detect = false, columns = {'artist_id': 'VARCHAR', 'ds': 'VARCHAR',
             'plays': 'BIGINT', 'downloads': 'BIGINT', 'collects': 'BIGINT', 'distinct_users': 'BIGINT'}) AS e
        FULL JOIN artist_daily AS a ON a.artist_id = e.artist_id AND a.ds = strptime(e.ds, '%Y%m%d')::DATE
        WHERE a.plays IS DISTINCT FROM e.plays OR a.downloads IS DISTINCT FROM e.downloads
           OR a.collects IS DISTINCT FROM e.collects OR a.listeners IS DISTINCT FROM e.distinct_users
    """,
        {"p": str(PACKAGED_ARTIST_DAILY)},
    ).fetchall()
    assert mismatches == []
    con.close()


# ---------------------------------------------------------------------------- incremental

INCREMENTAL_TABLES = ("artist_day_actions", "artist_daily", "artist_rolling_stats")
DAY_MS = 86400


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _day(day: int, counts: dict[str, int]) -> list[str]:
    """Actions on 2015-03-<day>: counts per song, users cycling u0..u3, kinds 1, 1, 2, 3, ..."""
    noon = 1425182400 + (day - 1) * DAY_MS
    return [
        f"u{i % 4},{song},{noon},{(1, 1, 2, 3)[i % 4]},201503{day:02d}" for song, n in counts.items() for i in range(n)
    ]


def _drop(raw: Path, day: int) -> Path:
    return raw / f"mars_tianchi_user_actions_201503{day:02d}.csv"


def _differences(con, other) -> dict[str, int]:
    """Rows in one warehouse's table and not in the other's, both ways (EXCEPT ALL)."""
    found = {}
    for table in INCREMENTAL_TABLES:
        mine = con.execute(f"SELECT * FROM {table}").fetchall()
        theirs = other.execute(f"SELECT * FROM {table}").fetchall()
        con.execute("CREATE OR REPLACE TEMP TABLE theirs AS SELECT * FROM (SELECT * FROM " + table + ") LIMIT 0")
        if theirs:
            con.executemany(f"INSERT INTO theirs VALUES ({', '.join('?' * len(theirs[0]))})", theirs)
        n = con.execute(
            f"SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM theirs) "
            f"UNION ALL SELECT count(*) FROM (SELECT * FROM theirs EXCEPT ALL SELECT * FROM {table})"
        ).fetchall()
        if n[0][0] or n[1][0] or len(mine) != len(theirs):
            found[table] = (n[0][0], n[1][0])
    return found


def test_incremental_builds_equal_full_rebuilds_through_drops_rewrites_and_removals(tmp_path):
    """Case 11 and the incremental contract: after every step, the incrementally maintained tables
    equal a full rebuild from scratch of the same raw folder, and only the touched days were re-derived."""
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw / "mars_tianchi_songs.csv", ["s1,a1,20140101,1,1,1", "s2,a2,20140101,1,1,1", "s3,a3,20140101,1,1,1"])
    _write(raw / "mars_tianchi_user_actions.csv", _day(1, {"s1": 5, "s2": 2}) + _day(2, {"s1": 3}) + _day(3, {"s2": 4}))
    con = warehouse.connect(tmp_path / "incremental.duckdb", memory_limit="1GB")
    steps = [
        ("first load", lambda: None, None),
        ("a drop for the next day", lambda: _write(_drop(raw, 4), _day(4, {"s1": 2, "s2": 1})), [date(2015, 3, 4)]),
        ("a new artist and a gap day", lambda: _write(_drop(raw, 6), _day(6, {"s3": 3})), [date(2015, 3, 6)]),
        ("a drop for a day the bulk file holds", lambda: _write(_drop(raw, 2), _day(2, {"s2": 7})), [date(2015, 3, 2)]),
        ("a rewritten drop", lambda: _write(_drop(raw, 4), _day(4, {"s2": 9})), [date(2015, 3, 4)]),
        ("a removed drop (the calendar shrinks)", lambda: _drop(raw, 6).unlink(), [date(2015, 3, 6)]),
        ("nothing new", lambda: None, []),
    ]
    for i, (what, change, touched) in enumerate(steps):
        change()
        ingest.ingest_raw_dir(con, raw, tmp_path / "lake")
        built = sm.build_all(con, sm.SQL_DIR)
        expected_mode = "full" if touched is None else ("incremental" if touched else "unchanged")
        assert (built["artist_day_actions"].mode, list(built["artist_day_actions"].days)) == (
            expected_mode,
            touched or [],
        ), what
        fresh = warehouse.connect(tmp_path / f"full{i}.duckdb", memory_limit="1GB")
        ingest.ingest_raw_dir(fresh, raw, tmp_path / f"lake{i}")
        assert sm.build_all(fresh, sm.SQL_DIR)["artist_day_actions"].mode == "full"
        assert _differences(con, fresh) == {}, what
        fresh.close()
    calendar = con.execute(
        "SELECT artist_id, min(ds), max(ds), count(*), sum(plays + downloads + collects) "
        "FROM artist_daily GROUP BY 1 ORDER BY 1"
    ).fetchall()
    # after the removal: days 1..4, a3 kept no action (its only day was removed) and is gone
    assert calendar == [
        ("a1", date(2015, 3, 1), date(2015, 3, 4), 4, 8),
        ("a2", date(2015, 3, 1), date(2015, 3, 4), 4, 22),
    ]
    con.close()


def test_full_refresh_and_changed_sql_rebuild_everything(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw / "mars_tianchi_songs.csv", ["s1,a1,20140101,1,1,1"])
    _write(raw / "mars_tianchi_user_actions.csv", _day(1, {"s1": 2}) + _day(2, {"s1": 1}))
    con = warehouse.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    ingest.ingest_raw_dir(con, raw, tmp_path / "lake")
    assert sm.build_all(con, sm.SQL_DIR)["artist_day_actions"].mode == "full"
    assert sm.build_all(con, sm.SQL_DIR)["artist_day_actions"].mode == "unchanged"
    assert sm.build_all(con, sm.SQL_DIR, full_refresh=True)["artist_day_actions"].mode == "full"
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for path in sm.SQL_DIR.glob("*.sql"):
        text = path.read_text()
        (sql_dir / path.name).write_text(text.replace("FROM raw_songs", "FROM raw_songs WHERE song_id <> ''"))
    assert sm.build_all(con, sql_dir)["artist_day_actions"].mode == "full", "an upstream model's SQL changed"
    _write(raw / "mars_tianchi_songs.csv", ["s1,a1,20140101,1,1,1", "s2,a1,20140101,1,1,1"])
    ingest.ingest_raw_dir(con, raw, tmp_path / "lake")
    assert sm.build_all(con, sql_dir)["artist_day_actions"].mode == "full", "the songs changed"
    con.close()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "-- materialized: incremental\nSELECT 1 AS ds WHERE incremental_filter(ds)",
            "needs '-- partition_by: <column>'",
        ),
        ("-- materialized: incremental\n-- partition_by: ds\nSELECT 1 AS ds", "must say where to cut the increment"),
        ("SELECT 1 AS ds WHERE incremental_filter(ds)", "only for '-- materialized: incremental' models"),
        ("-- materialized: snapshot\nSELECT 1 AS ds", "materialized must be one of"),
    ],
)
def test_incremental_configuration_errors_name_the_file(tmp_path, sql, message):
    (tmp_path / "m.sql").write_text(sql)
    with pytest.raises(sm.SqlModelError, match=message) as err:
        sm.load_models(tmp_path)
    assert "m.sql" in str(err.value)
