"""A real Spark standalone cluster on this machine: one master and N one-core workers on 127.0.0.1.

The master and the workers are the ones in the pyspark distribution (``bin/spark-class
org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), the same daemons a production
standalone cluster runs; only the addresses are local. The tests run ``musictrend ingest``
against it and ``make cluster-demo`` runs the whole pipeline on it:

    python -m musictrend_dagster.core.data.engines.cluster [--workers 2] -- musictrend run

starts the cluster, runs the command with ``MUSICTREND_ENGINE=spark`` and
``MUSICTREND_SPARK_MASTER=spark://127.0.0.1:PORT``, and stops every process it started, also
when the command fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from tempfile import mkdtemp

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class LocalCluster:
    """``with LocalCluster(workdir) as c: ... c.master_url``; every daemon stopped on exit."""

    def __init__(
        self, workdir: str | os.PathLike, workers: int = 2, cores: int = 1, memory: str = "1g", timeout_s: float = 180
    ) -> None:
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.workdir = Path(workdir)
        self.workers, self.cores, self.memory, self.timeout_s = workers, cores, memory, timeout_s
        self.port, self.ui_port = free_port(), free_port()
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"

    def env(self) -> dict[str, str]:
        """For the daemons and for a driver that talks to them: everything bound to 127.0.0.1."""
        return {
            **os.environ,
            "SPARK_HOME": str(self.spark_home),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_LOG_DIR": str(self.workdir / "logs"),
            "SPARK_LOCAL_DIRS": str(self.workdir / "tmp"),
        }

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._daemon(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--webui-port",
            str(self.ui_port),
        )
        for i in range(self.workers):
            self._daemon(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                HOST,
                "--webui-port",
                str(free_port()),
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(self.workdir / f"worker{i}"),
                self.master_url,
            )
        self._wait_for_workers()

    def _daemon(self, name: str, cls: str, *args: str) -> None:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [str(self.spark_home / "bin" / "spark-class"), cls, *args],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # its own process group: stop() reaches every child
        self.procs.append((proc, log))

    def state(self) -> dict:
        """The master's own view (its web UI's JSON): workers, running and completed applications."""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as r:
            return json.load(r)

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            for proc, log in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{log.stem} exited with {proc.returncode}: {_tail(log)}")
            try:
                alive = [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]
                if len(alive) >= self.workers:
                    return
            except OSError:
                pass  # the master's UI is not up yet
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Spark master at {self.master_url} had not {self.workers} workers after "
                    f"{self.timeout_s:.0f}s: {_tail(self.procs[0][1])}"
                )
            time.sleep(1)

    def stop(self) -> None:
        """SIGTERM every daemon's process group, SIGKILL what is still there 20 s later."""
        for proc, _ in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        for proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


def main(argv: list[str] | None = None) -> int:
    """``[--workers N] -- command ...``: the command run against a fresh local cluster."""
    argv = list(sys.argv[1:] if argv is None else argv)
    workers = 2
    if argv[:1] == ["--workers"]:
        workers, argv = int(argv[1]), argv[2:]
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print(
            "usage: python -m musictrend_dagster.core.data.engines.cluster [--workers N] -- command ...",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped demo stops its cluster too
    workdir = Path(mkdtemp(prefix="musictrend-spark-"))
    with LocalCluster(workdir, workers=workers) as cluster:
        print(
            f"Spark standalone cluster: master {cluster.master_url}, {workers} workers x 1 core\n"
            f"  master UI  {cluster.ui_url}  (127.0.0.1 only; logs in {workdir})",
            flush=True,
        )
        env = {
            **cluster.env(),
            "MUSICTREND_ENGINE": "spark",
            "PYSPARK_PYTHON": sys.executable,
            "MUSICTREND_SPARK_MASTER": cluster.master_url,
        }
        code = subprocess.call(command, env=env)
        print(f"stopping the cluster (the command exited with {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
