"""`mig`: the selection itself, the order `mig-ray select` returns with the same options."""

from __future__ import annotations

import numpy as np

from mig_ray.compare.pool import ComparePool
from mig_ray.core.greedy import lazy_greedy

NAME = "mig"
NEEDS_EMBEDDINGS = False


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    """The lazy greedy of `select` (exact: identical to a naive rescan), or the order a sharded
    `select` run returned when the caller supplied it."""
    if pool.mig_order is not None:
        return pool.mig_order(k)
    return lazy_greedy(pool.vectors, min(k, len(pool)), pool.phi, pool.gain).order
