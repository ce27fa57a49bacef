"""How many cores this process may use: the thread and process counts of the parallel kernels
(`propagate`, the threaded greedy, the parallel pool read) all come from here."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
