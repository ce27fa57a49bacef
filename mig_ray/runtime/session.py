"""The one home of Ray session code: joining or starting Ray, and Ray Data's progress switch.

`pools/`, `annotate/`, `job/` and the selection driver all import from here, so no lower layer
imports the selection driver to get a Ray session.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def ray_up(address: str | None, num_cpus: int, include_dashboard: bool = False) -> bool:
    """Join `address` ('auto' or host:port) or start a local Ray bound to loopback, no dashboard.
    Returns True when this call started Ray (and so should shut it down)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Inside a Ray job (`ray job submit`, KubeRay RayJob) Ray sets RAY_ADDRESS: join that cluster.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        # Ray resolves 127.0.0.1 to the host's reachable IP unless it runs in single-machine mode;
        # in that mode every Ray server binds to loopback. The env var reaches Ray's own processes,
        # the constant covers a Ray already imported in this process.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    import ray._private.ray_constants as ray_constants

    if ray.is_initialized():
        size_parquet_footer_readers()
        return False
    global _LOCAL_CORES
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        _LOCAL_CORES = None
    else:
        ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray turns token authentication on for a new local cluster (kept: it protects the
        # cluster) and says so in a WARNING a newcomer reads as an error; that one logger is quieted.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, include_dashboard=include_dashboard, logging_level="WARNING",
                 log_to_driver=False)
        _LOCAL_CORES = os.cpu_count() or 1
    size_parquet_footer_readers()
    return True


FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"


def size_parquet_footer_readers() -> None:
    """One Parquet footer-reading actor per 8 task slots, 1 to 32, unless the user set the number.

    Ray Data 2.60 lists every `read_parquet` with a pool of 32 new FooterReader actors, one worker
    process each: on a 2-core machine each read waited about 5 s (up to 9 s under load) for them,
    for a handful of files, and a job makes several reads per stage (measured: a 3-file read and
    count, 8.8 s with 32, 1.1 s with 1). The number is read from the environment when a read is
    planned, in this process."""
    os.environ.setdefault(FOOTER_ACTORS, str(max(1, min(32, task_slots() // 8))))


_LOCAL_CORES: int | None = None  # set when this process started a local Ray (with more logical CPUs)


def ensure_ray() -> None:
    """Join the Ray this process already runs, else start a local one (loopback, all cores)."""
    import ray

    if not ray.is_initialized():
        ray_up(None, num_cpus=os.cpu_count() or 1)
    elif FOOTER_ACTORS not in os.environ:  # Ray started by the caller (a notebook, a test session)
        size_parquet_footer_readers()


@contextmanager
def ray_progress_bars(on: bool) -> Iterator[None]:
    """Ray Data's progress bars on or off for the duration (restored after)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    old = ctx.enable_progress_bars
    ctx.enable_progress_bars = on
    try:
        yield
    finally:
        ctx.enable_progress_bars = old


def task_slots() -> int:
    """How many one-CPU tasks run at once: the CPUs of the cluster joined, and on a local Ray this
    process started no more than its cores (see run_tasks)."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return min(cpus, _LOCAL_CORES) if _LOCAL_CORES else cpus


def run_tasks(items: list[Any], fn: Callable[..., Any], kwargs: dict, num_cpus: float = 1.0) -> list[Any]:
    """`fn(item, **kwargs)` as one Ray task per item, in parallel; the small results they return
    (counts and paths, typed by the stage), in the items' order. The stages' way to run per-block
    work where the data is and hand the driver only summaries (plain tasks: a Ray Data pipeline
    costs seconds to start, per call).

    On a local Ray this process started, which has more logical CPUs than the machine has cores
    (so that actor stages never wait), at most one task per core is in flight: more would only
    make Ray start more worker processes, each about a CPU-second of imports (a 1M-record ingest
    spent a fifth of its time so on 2 cores)."""
    import ray

    if not items:
        return []
    task = ray.remote(num_cpus=num_cpus, max_retries=3)(_apply)
    shared = ray.put(kwargs)
    window = _LOCAL_CORES or len(items)
    refs, running = [], []
    for item in items:
        if len(running) >= window:
            _, running = ray.wait(running, num_returns=1, fetch_local=False)
        refs.append(task.remote(fn, item, shared))
        running.append(refs[-1])
    return ray.get(refs)


def _apply(fn: Callable[..., Any], item: Any, kwargs: dict) -> Any:
    return fn(item, **kwargs)


class RayLogs:
    """Ray's own log lines to a file instead of the terminal, between start() and stop().

    Ray's C++ core writes to file descriptor 2 (e.g. an `E ... core_worker.cc` line whenever Ray Data
    starts a restartable actor pool: expected, and harmless), and the driver prints what the raylet
    reports (e.g. "N worker processes have been started") to sys.stdout. Descriptor 2 and
    sys.stdout go to `path`; Python's sys.stderr (our stage lines, progress bars, warnings and
    errors) keeps the terminal. Nothing changes when sys.stderr is not descriptor 2 (output
    captured by tests, an embedding application)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: int | None = None
        self._old: tuple = ()

    def start(self) -> None:
        if self._saved is not None:
            return
        try:
            if sys.stderr.fileno() != 2:
                return
        except (AttributeError, OSError, ValueError):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._old = (sys.stdout, sys.stderr)
        for stream in self._old:
            stream.flush()
        self._saved = os.dup(2)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
        enc, errors = sys.stderr.encoding, sys.stderr.errors
        sys.stderr = open(self._saved, "w", buffering=1, encoding=enc, errors=errors, closefd=False)  # noqa: SIM115
        sys.stdout = open(2, "w", buffering=1, encoding=enc, errors=errors, closefd=False)  # noqa: SIM115

    def stop(self) -> None:
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        (sys.stdout, sys.stderr), self._saved = self._old, None
