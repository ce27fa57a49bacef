"""`random`: uniform sampling without replacement, seeded.

The sample is the k positions with the smallest splitmix64(seed, position) keys, in key order: the
same on every machine and numpy version, and a larger k extends a smaller one's sample.
"""

from __future__ import annotations

import numpy as np

from mig_ray.compare.keys import smallest_keys
from mig_ray.compare.pool import ComparePool

NAME = "random"
PAPER = "uniform random sampling (the baseline of every selection paper)"
SUMMARY = "uniform without replacement: the k positions with the smallest splitmix64(seed, position)"
NEEDS: frozenset[str] = frozenset()


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    return smallest_keys(seed, len(pool), k)
