"""The data layer on Apache Spark: the same tables, quarantine, lake and checks as on DuckDB.

The raw folder is a slice of the real tianchi-s1 expansion (a few artists, their first 30
days) with every bad action line of ``test_bad_input`` spread through it and bad song lines
added: what each engine loads and quarantines is compared table by table, and both are
checked against what the folder was built with (line numbers and reasons of the bad lines).
A real standalone cluster (master + 2 one-core workers on 127.0.0.1) runs ``musictrend
ingest`` end to end. Floats are compared to 12 significant digits: a sum's last bit depends on
the order it is added in, which no engine promises.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import SPARK_TEST_CONF
from test_bad_input import ACTION_CASES  # the catalogue of bad action lines, one line per reason

from musictrend_dagster.core import settings
from musictrend_dagster.core.data import ingest, sql_models, warehouse
from musictrend_dagster.core.settings import ACTIONS_PREFIX, SONGS_FILE

FIRST = date(2015, 3, 1)
DAYS = 30
DROP_DAY = FIRST + timedelta(days=DAYS)
BULK = f"{ACTIONS_PREFIX}.csv"
DROP = f"{ACTIONS_PREFIX}_{DROP_DAY:%Y%m%d}.csv"
BAD_SONGS = {  # appended to the real songs file: (line, reason)
    "s_conflict,a_one,20150101,0,1,1": "song_id has conflicting artist_id",
    "s_conflict,a_two,20150101,0,1,1": "song_id has conflicting artist_id",
    "s_bad_date,a_one,20150231,0,1,1": "publish_time not a valid yyyymmdd date",
    "s_bad_plays,a_one,20150101,-1,1,1": "song_init_plays not a non-negative integer",
}
SONGS_HEADER = "song_id,artist_id,publish_time,song_init_plays,Language,Gender"


def _bad_action_lines() -> list[tuple[bytes, str]]:
    return [
        (b"u\xff1,s1,1,1,20150301" if text is None else text.encode(), reason)
        for text, reason in (ACTION_CASES[c] for c in sorted(ACTION_CASES))
    ]


class Slice:
    """The raw folder and what it was built with (the independent expectation)."""

    def __init__(self, root: Path, good: int, bad: list[tuple[int, str, str]], drop_lines: list[str]):
        self.root, self.good, self.bad, self.drop_lines = root, good, bad, drop_lines

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.root, dest)
        return dest


@pytest.fixture(scope="session")
def tianchi_slice(tianchi, tmp_path_factory) -> Slice:
    """Artists of tianchi-s1 (fewest actions first, until 15k lines) over 30 days, with bad lines in it."""
    songs = pl.read_csv(
        tianchi.songs_file,
        has_header=False,
        infer_schema=False,
        new_columns=["song_id", "artist_id", "publish_time", "plays", "lang", "gender"],
    )
    actions = pl.read_csv(
        tianchi.actions_file,
        has_header=False,
        infer_schema=False,
        new_columns=["user_id", "song_id", "gmt_create", "action_type", "ds"],
    )
    last = f"{DROP_DAY:%Y%m%d}"
    window = actions.filter(pl.col("ds") <= last).join(songs.select("song_id", "artist_id"), on="song_id")
    per_artist = window.group_by("artist_id").len().sort("len", "artist_id")
    artists = per_artist.filter(pl.col("len").cum_sum().shift(1, fill_value=0) < 15_000)["artist_id"]
    chosen = window.filter(pl.col("artist_id").is_in(artists.implode())).drop("artist_id")

    def text(frame: pl.DataFrame) -> list[str]:
        return [",".join(row) for row in frame.iter_rows()]  # the raw fields are plain: exact text

    good = text(chosen.filter(pl.col("ds") < last))
    drop = text(chosen.filter(pl.col("ds") == last))

    root = tmp_path_factory.mktemp("spark-slice") / "raw"
    root.mkdir()
    bad_actions = _bad_action_lines()
    lines: list[bytes] = [g.encode() for g in good]
    step = len(lines) // len(bad_actions)
    bad = []
    for i, (line, reason) in enumerate(bad_actions):  # spread through the file: line numbers across splits
        lines.insert(i * (step + 1), line)
        bad.append((i * (step + 1) + 1, line.decode("utf-8", "replace"), reason))
    lines[-1] += b"\r"  # one CRLF line end: fine
    (root / BULK).write_bytes(b"\n".join(lines) + b"\n")
    song_lines = [SONGS_HEADER, *tianchi.songs_file.read_text().splitlines(), *BAD_SONGS]
    (root / SONGS_FILE).write_text("\n".join(song_lines) + "\n")
    return Slice(root, len(good), bad, [*drop, f"u_other_day,{good[0].split(',')[1]},1425182400,1,20150301"])


def _rounded(row: tuple) -> tuple:
    return tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row)


def data_layer(con) -> dict[str, list]:
    """Every table the data layer makes, as readers see it in the warehouse, and the lake's rows per day."""
    tables = [
        "raw_user_actions",
        "raw_songs",
        "quarantine_user_actions",
        "quarantine_songs",
        *(m.name for m in sql_models.load_models()),
    ]
    found = {t: sorted((_rounded(r) for r in con.execute(f'SELECT * FROM "{t}"').fetchall()), key=repr) for t in tables}
    found["ingested_files"] = con.execute(
        "SELECT file, kind, lines_read, loaded, quarantined, reasons, recheck_on, content_hash FROM ingested_files "
        "ORDER BY file"
    ).fetchall()
    found["lake_rows_per_day"] = con.execute(
        "SELECT dataset, ds, sum(rows) FROM lake_files GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return found


def build(con, raw: Path, engine) -> dict[str, sql_models.BuildResult]:
    ingest.ingest_raw_dir(con, raw, raw.parent / "lake", engine=engine)
    return sql_models.build_all(con, engine=engine)


@pytest.mark.spark
def test_spark_makes_every_table_and_quarantine_duckdb_makes_also_incrementally(spark_session, tianchi_slice, tmp_path):
    from musictrend_dagster.core.data.engines.spark import SparkEngine

    spark = SparkEngine(spark_session)
    raws = {name: tianchi_slice.copy(tmp_path / name / "raw") for name in ("duckdb", "spark")}
    cons = {name: warehouse.connect(tmp_path / name / "wh.duckdb", memory_limit="1GB") for name in raws}
    engines = {"duckdb": None, "spark": spark}
    try:
        for name in raws:
            build(cons[name], raws[name], engines[name])
        first = {name: data_layer(con) for name, con in cons.items()}
        assert first["spark"] == first["duckdb"]

        # What the folder was built with, not what an engine said.
        got = first["spark"]
        assert len(got["raw_user_actions"]) == tianchi_slice.good
        assert [(BULK, n, text, reason) for n, text, reason in tianchi_slice.bad] == sorted(
            got["quarantine_user_actions"], key=lambda r: r[1]
        )
        assert Counter(r[3] for r in got["quarantine_songs"]) == Counter(
            {**Counter(BAD_SONGS.values()), "header line": 1}
        )
        assert [r[1] for r in got["quarantine_songs"] if r[3] == "header line"] == [1]
        assert len(got["artist_daily"]) == len({r[0] for r in got["artist_daily"]}) * DAYS

        # The next day's drop file: both engines re-derive only that day.
        for name in raws:
            (raws[name] / DROP).write_text("\n".join(tianchi_slice.drop_lines) + "\n")
        built = {name: build(cons[name], raws[name], engines[name]) for name in raws}
        assert built["spark"]["artist_day_actions"].mode == "incremental"
        assert built["spark"]["artist_day_actions"].days == (DROP_DAY,)
        assert {m: (b.mode, b.days, b.rows) for m, b in built["spark"].items()} == {
            m: (b.mode, b.days, b.rows) for m, b in built["duckdb"].items()
        }
        second = {name: data_layer(con) for name, con in cons.items()}
        assert second["spark"] == second["duckdb"]
        assert [r[3] for r in second["spark"]["quarantine_user_actions"] if r[0] == DROP] == [
            f"Ds 20150301 is not the drop file's day {DROP_DAY:%Y%m%d}"
        ]

        # The SQL tests, as the asset checks run them on Spark: they pass, and see a broken table.
        tests = sql_models.load_tests()
        assert {t.name: sql_models.run_test(cons["spark"], t, engine=spark)[0] for t in tests} == {
            t.name: 0 for t in tests
        }

        # Either engine reads what the other wrote: DuckDB rebuilds the models from Spark's lake.
        rebuilt = sql_models.build_all(cons["spark"], full_refresh=True)
        assert {m: b.rows for m, b in rebuilt.items()} == {m: b.rows for m, b in built["duckdb"].items()}
        assert data_layer(cons["spark"]) == second["duckdb"]
    finally:
        for con in cons.values():
            con.close()


@pytest.mark.spark
def test_a_failing_sql_test_on_spark_reports_the_offending_rows(spark_session, tmp_path):
    """artist_daily__non_negative_counts over a lake whose artist_daily has a negative count."""
    from musictrend_dagster.core.data.engines.spark import SparkEngine

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / SONGS_FILE).write_text("s1,a1,20140101,100,1,1\n")
    (raw / BULK).write_text("u1,s1,1425182400,1,20150301\n")
    con = warehouse.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    spark = SparkEngine(spark_session)
    build(con, raw, None)
    model = next(m for m in sql_models.load_models() if m.name == "artist_daily")
    broken = dataclasses.replace(model, sql=model.sql.replace("coalesce(daily.plays, 0) AS plays", "-1 AS plays"))
    assert broken.sql != model.sql, "the model no longer says coalesce(daily.plays, 0) AS plays: update this test"
    sql_models.build_model(con, broken, full_refresh=True, engine=spark)
    test = next(t for t in sql_models.load_tests() if t.name == "artist_daily__non_negative_counts")
    n, sample = sql_models.run_test(con, test, engine=spark)
    con.close()
    assert n == 1 and sample[0][:2] == ("a1", date(2015, 3, 1))


def test_engine_settings_name_the_variable_on_bad_values(monkeypatch):
    monkeypatch.setenv(settings.ENGINE_VAR, "postgres")
    with pytest.raises(settings.ConfigError, match="MUSICTREND_ENGINE must be one of duckdb, spark, got 'postgres'"):
        settings.check_environment()
    monkeypatch.setenv(settings.ENGINE_VAR, "Spark")
    monkeypatch.setenv(settings.SPARK_MASTER_VAR, "spark:/host:7077")
    with pytest.raises(settings.ConfigError, match="MUSICTREND_SPARK_MASTER must be a Spark master"):
        settings.check_environment()
    for master in (
        "local[*]",
        "local[2]",
        "local[2,3]",
        "spark://127.0.0.1:7077",
        "yarn",
        "sc://h:15002",
        "k8s://https://h:443",
    ):
        monkeypatch.setenv(settings.SPARK_MASTER_VAR, master)
        settings.check_environment()
        assert (settings.engine(), settings.spark_master()) == ("spark", master)
    monkeypatch.delenv(settings.ENGINE_VAR)
    monkeypatch.delenv(settings.SPARK_MASTER_VAR)
    assert (settings.engine(), settings.spark_master()) == ("duckdb", "local[*]")


@pytest.mark.spark
def test_musictrend_ingest_runs_on_a_standalone_cluster(spark_cluster, tmp_path):
    """`MUSICTREND_ENGINE=spark musictrend ingest` against spark://127.0.0.1:PORT: the tables DuckDB makes,
    the job seen by the master, the engine in the assets' kinds and metadata. A small hand-made folder
    (good lines on three days, a bad line of each kind in ACTION_CASES, a drop file): the equality
    on real data is the test above; this one is about the cluster."""
    import dagster as dg

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / SONGS_FILE).write_text("s1,a1,20140101,100,1,1\ns2,a1,20140202,200,1,1\ns3,a2,20140303,300,2,2\n")
    good = [f"u{i},s{1 + i % 3},{1425182400 + (i % 3) * 86400},{1 + i % 3},2015030{1 + i % 3}" for i in range(60)]
    (raw / BULK).write_bytes(b"\n".join([g.encode() for g in good] + [line for line, _ in _bad_action_lines()]) + b"\n")
    (raw / f"{ACTIONS_PREFIX}_20150304.csv").write_text("u1,s1,1425441600,1,20150304\nu2,s3,1425441600,3,20150304\n")
    home = tmp_path / "home"
    conf_dir = tmp_path / "spark-conf"  # the driver reads Spark's own spark-defaults.conf, as documented
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in SPARK_TEST_CONF.items()))
    env = {k: v for k, v in spark_cluster.env().items() if k != "DAGSTER_HOME"}
    env.update(
        {
            "SPARK_CONF_DIR": str(conf_dir),
            "PYTHONPATH": str(Path(__file__).parents[2]),
            settings.ENGINE_VAR: "spark",
            settings.SPARK_MASTER_VAR: spark_cluster.master_url,
            settings.MAX_QUARANTINE_SHARE_VAR: "1",
        }
    )  # the folder is a third bad lines, on purpose
    done = subprocess.run(
        [sys.executable, "-m", "musictrend_dagster.cli", "ingest", "--home", str(home), "--raw-dir", str(raw)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "musictrend ingest succeeded" in done.stdout

    apps = spark_cluster.state()
    assert [a["name"] for a in apps["completedapps"] + apps["activeapps"]] == ["musictrend"]
    assert {w["cores"] for w in apps["workers"]} == {1} and len(apps["workers"]) == 2

    reference = shutil.copytree(raw, tmp_path / "duckdb" / "raw").parent
    con = warehouse.connect(reference / "wh.duckdb", memory_limit="1GB")
    build(con, reference / "raw", None)
    expected = data_layer(con)
    con.close()
    con = warehouse.connect(home / "warehouse.duckdb", memory_limit="1GB")
    try:
        assert data_layer(con) == expected
    finally:
        con.close()

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for key in ("raw_user_actions", "artist_daily"):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            metadata = event.asset_materialization.metadata
            assert (metadata["engine"].value, metadata["spark_master"].value) == ("spark", spark_cluster.master_url)
    kinds = subprocess.run(
        [
            sys.executable,
            "-c",
            "from musictrend_dagster.definitions import defs; "
            "print(sorted(next(iter(defs.resolve_assets_def('artist_daily').specs)).kinds))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "'spark'" in kinds.stdout, kinds.stderr[-2000:]


def test_duckdb_engine_reads_a_file_whose_last_line_alone_ends_in_crlf(tmp_path):
    """Found by the engine equality test: DuckDB's strict parser fails at a lone CRLF deep in a file, and the
    error then comes through the Arrow stream (pyarrow's OSError), not as DuckDB's own exception."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / SONGS_FILE).write_text("s1,a1,20140101,100,1,1\n")
    lines = [f"u{i},s1,1425182400,1,20150301" for i in range(30_000)]
    (raw / BULK).write_bytes(("\n".join(lines) + "\r\n").encode())
    con = warehouse.connect(tmp_path / "wh.duckdb", memory_limit="1GB")
    report = ingest.ingest_raw_dir(con, raw, tmp_path / "lake").report(BULK)
    assert (report.lines_read, report.loaded, report.quarantined) == (30_000, 30_000, 0)
    assert con.execute("SELECT count(*) FROM raw_user_actions").fetchone() == (30_000,)
    con.close()
