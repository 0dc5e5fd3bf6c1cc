"""Who owns a run: the writing process's pid and host as tags, so a later process can tell a
killed run (its process gone from this host) from a live one, in Dagster and MLflow alike."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

PID_TAG, HOST_TAG = "musictrend/pid", "musictrend/host"


def owner_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def owner_gone(tags: Mapping[str, str]) -> bool:
    """True only when the owner ran on this host and its pid is dead; unknown owners count as alive."""
    pid = tags.get(PID_TAG, "")
    return tags.get(HOST_TAG) == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
