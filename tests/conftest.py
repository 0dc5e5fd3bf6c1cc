"""Shared fixtures: the real tianchi-s1 log is expanded once per test session (~10 s, 500 MB); and how
`make test` splits the files between its two pytest-xdist workers."""

from __future__ import annotations

import os

import pytest

from musictrend_dagster.core.sample import SampleSummary, expand_tianchi_s1

# Two xdist workers already fill the two cores: a whole run's network backtests take their origins one after
# another (tests/forecast/test_backtest_cost.py sets the parallel case itself). Subprocess runs inherit it.
os.environ.setdefault("MUSICTREND_BACKTEST_WORKERS", "1")

# ---------------------------------------------------------------- two workers (`-n 2 --dist loadfile`)
# A file goes to one worker whole, so its module fixture (a whole run, a cluster) is built once; the
# browser tests' files share one `dagster dev` and one "Materialize all" (session fixtures), so they are
# one unit. Files with `slow`, `spark` or `e2e` tests are handed out first: the long ones overlap instead
# of one ending alone.
E2E = "tests/e2e/"
LONG_MARKERS = ("slow", "spark", "e2e")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByFileE2ETogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return E2E if nodeid.startswith(E2E) else super()._split_scope(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return ByFileE2ETogether(config, log)


def pytest_collection_modifyitems(config, items):
    """Under xdist, the files holding a long test first (stable: each file stays in one piece)."""
    if not hasattr(config, "workerinput"):
        return
    slow = {item.nodeid.split("::")[0] for item in items if any(item.get_closest_marker(m) for m in LONG_MARKERS)}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.fixture(autouse=True)
def _environment_restored():
    """The CLI points this process's environment at a home, raw folder and config (`cli.main` run
    in-process does too): every test leaves os.environ as it found it, so no test reads another's."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tianchi(tmp_path_factory) -> SampleSummary:
    """The real season-1 expansion, seed 0 (5,652,232 rows), written once per session."""
    return expand_tianchi_s1(tmp_path_factory.mktemp("tianchi"), seed=0, progress=False)


@pytest.fixture(scope="session")
def five_artists():
    """Five real artists over their first 80 days (packaged tianchi-s1) and their songs: the models' small fixture."""
    from datetime import timedelta

    import polars as pl

    from musictrend_dagster.core.forecast.features import HISTORY_COLUMNS
    from musictrend_dagster.core.sample import packaged_history

    frame, songs = packaged_history()
    artists = sorted(frame["artist_id"].unique())[:5]
    history = frame.filter(pl.col("artist_id").is_in(artists) & (pl.col("ds") < frame["ds"].min() + timedelta(days=80)))
    return history.select(HISTORY_COLUMNS), songs.filter(pl.col("artist_id").is_in(artists))


@pytest.fixture
def c_star_last():
    """c_star_last(history, days): each artist's metric-optimal constant over its last `days` days by hand,
    sum(1/x) / sum(1/x^2) with 0 plays counted as 1, floored at 1 (the models' anchor), sorted by artist."""
    from datetime import timedelta

    import polars as pl

    def compute(history, days: int) -> list[float]:
        last = history.filter(pl.col("ds") > history["ds"].max() - timedelta(days=days)).sort("artist_id", "ds")
        inv = [[1 / max(float(v), 1.0) for v in g["plays"]] for _, g in last.group_by("artist_id", maintain_order=True)]
        return [max(sum(r) / sum(v * v for v in r), 1.0) for r in inv]

    return compute


@pytest.fixture
def assert_no_lookahead():
    """check(factory, history, songs, origin, horizon): a backtest whose test window is scrambled AND
    whose songs table gains releases published on and after the origin (for every artist) gives
    the same forecast, while its score changes. The backtest cuts the counts at the origin but
    passes the catalogue whole, so the songs half checks the model and feature layers themselves."""
    from datetime import timedelta

    import polars as pl

    from musictrend_dagster.core.forecast.backtest import backtest

    def check(factory, history, songs, origin, horizon):
        counts = [c for c in ("plays", "downloads", "listeners") if c in history.columns]
        scrambled = history.with_columns(
            pl.when(pl.col("ds") >= origin).then(pl.col(c) * 3 + 17).otherwise(pl.col(c)).alias(c) for c in counts
        )
        artists = sorted(history["artist_id"].unique().to_list())
        days = [origin + timedelta(days=k) for k in (0, 1, 2, 5, 9)]
        future = pl.DataFrame(
            {
                "song_id": [f"future-{a}-{d}" for a in artists for d in days],
                "artist_id": [a for a in artists for _ in days],
                "publish_time": [d for _ in artists for d in days],
            }
        ).with_columns(pl.col("publish_time").cast(songs.schema["publish_time"]))
        later = pl.concat(
            [songs, future.select([c for c in future.columns if c in songs.columns])], how="diagonal_relaxed"
        )
        runs = [backtest(factory, h, s, [origin], horizon=horizon) for h, s in ((history, songs), (scrambled, later))]
        assert runs[0].origins[0].forecast["plays"].is_finite().all()  # NaN == NaN would hide a change
        assert runs[0].origins[0].forecast.equals(runs[1].origins[0].forecast)
        assert runs[0].origins[0].f_norm != runs[1].origins[0].f_norm

    return check


# ---------------------------------------------------------------- Spark (marker `spark`)
# One SparkSession and one standalone cluster per test session: a JVM start costs 10-40 s on
# 2 busy cores, the data is tiny.

# Tiny data: no code generation (compiling each query's Java costs more than running it
# interpreted; minutes on 2 busy cores), two shuffle partitions.
SPARK_TEST_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.shuffle.partitions": "2",
}


@pytest.fixture(scope="session")
def spark_session():
    """local[2], with splits of 256 KiB so the small test files are read as several splits (line numbering);
    no open cost per file, so the lake's small day files pack into a few tasks."""
    from pyspark.sql import SparkSession

    from musictrend_dagster.core.data.engines.spark import spark_config

    conf = {
        **spark_config("local[2]"),
        **SPARK_TEST_CONF,
        "spark.ui.enabled": "false",
        "spark.sql.files.maxPartitionBytes": "256k",
        "spark.sql.files.openCostInBytes": "0",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A standalone master and 2 one-core workers on 127.0.0.1 (free ports), stopped even when a test fails."""
    from musictrend_dagster.core.data.engines.cluster import LocalCluster

    with LocalCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1, memory="1g") as cluster:
        yield cluster
