"""`mig`: the selection itself, the order `mig-ray select` returns with the same options."""

from __future__ import annotations

import numpy as np

from mig_ray.compare.pool import ComparePool
from mig_ray.core.greedy import lazy_greedy, limited_greedy

NAME = "mig"
PAPER = "Chen et al. 2025, MIG: Maximize the Information Gain in a semantic label graph (arXiv 2504.13835)"
SUMMARY = "greedy maximisation of the information E(D) on the label graph (the order of `mig-ray select`)"
NEEDS = frozenset({"labels", "scores"})


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    """The lazy greedy of `select` (exact: identical to a naive rescan) under the selection's quotas,
    floors and budget (the same `limited_greedy`, so the same order as `select`), or the order a
    sharded `select` run returned when the caller supplied it."""
    if pool.mig_order is not None:
        return pool.mig_order(k)
    k = min(k, len(pool))
    if pool.limits is not None:
        return limited_greedy(pool.vectors, k, pool.phi, pool.gain, pool.rows(), pool.limits)[0].order
    return lazy_greedy(pool.vectors, k, pool.phi, pool.gain).order
