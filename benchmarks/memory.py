"""Peak memory of the calling process, for every benchmark that reports RSS.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is wrong for a benchmark worker on Linux: the
high-water mark survives fork + exec, so a worker started by a 1 GB parent reports at least
1 GB whatever it used. ``VmHWM`` in ``/proc/self/status`` belongs to the address space,
which exec replaces, so it is the worker's own peak. Read it at the end of the worker.
"""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """This process's own peak resident set size in MB (VmHWM, reset by exec)."""
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"{status}: unexpected VmHWM unit {unit!r}")
            return int(value) / 1024
    raise ValueError(f"{status}: no VmHWM line (not Linux?)")
