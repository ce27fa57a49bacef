"""The one home of Ray session code: joining or starting Ray, and Ray Data's progress switch.

`pools/`, `annotate/`, `job/` and the selection driver all import from here, so no lower layer
imports the selection driver to get a Ray session.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager


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
        return False
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    else:
        ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray turns token authentication on for a new local cluster (kept: it protects the
        # cluster) and says so in a WARNING a newcomer reads as an error; that one logger is quieted.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, include_dashboard=include_dashboard, logging_level="WARNING",
                 log_to_driver=False)
    return True


def ensure_ray() -> None:
    """Join the Ray this process already runs, else start a local one (loopback, all cores)."""
    import ray

    if not ray.is_initialized():
        ray_up(None, num_cpus=os.cpu_count() or 1)


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
