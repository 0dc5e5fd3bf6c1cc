"""The benchmarks report each worker's own peak RSS, not the one it inherits from a large parent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PARENT_MB = 400

# A parent that touches PARENT_MB of memory, then starts a worker that reports its usage the way
# bench_ingest's workers do (bench_ingest._usage), plus what ru_maxrss says in the same worker.
PARENT = f"""
import subprocess, sys
held = b"x" * ({PARENT_MB} << 20)
worker = '''
import json, resource, sys
sys.path.insert(0, {str(BENCHMARKS)!r})
import bench_ingest
print(json.dumps({{"reported": bench_ingest._usage(0.0)["peak_rss_mb"],
                  "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
'''
print(subprocess.run([sys.executable, "-c", worker], check=True, capture_output=True, text=True).stdout)
"""


def test_worker_peak_is_its_own_not_the_parents():
    out = subprocess.run([sys.executable, "-c", PARENT], check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    # The trap is real on this kernel: ru_maxrss carries the parent's peak into the worker...
    assert figures["ru_maxrss"] > PARENT_MB
    # ...while the reported figure is the worker's own: a small Python process.
    assert 5 < figures["reported"] < 150


def test_peak_rss_reads_vmhwm(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    from memory import peak_rss_mb

    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  999999 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n")
    assert peak_rss_mb(status) == 50.0
