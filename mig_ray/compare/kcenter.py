"""`kcenter`: greedy k-center (coreset) on sample embeddings with a seeded first pick.

The first centre is the position with the smallest splitmix64(seed, position) key; each next one is
the sample farthest (Euclidean, unit embeddings) from its nearest centre, ties to the lower position.
Compiled, with the triangle inequality skipping samples a new centre cannot come closer to (exact:
a sample is skipped only when d(its centre, new centre) > 2 * its distance + 1e-9).
"""

from __future__ import annotations

import numba
import numpy as np

from mig_ray.compare.keys import smallest_keys
from mig_ray.compare.pool import ComparePool

NAME = "kcenter"
NEEDS_EMBEDDINGS = True


@numba.njit(cache=True)
def _dist(x, i, j):
    s = 0.0
    for t in range(x.shape[1]):
        d = x[i, t] - x[j, t]
        s += d * d
    return np.sqrt(s)


@numba.njit(cache=True)
def _kcenter(x, first, k):
    n = x.shape[0]
    mind = np.empty(n, dtype=np.float64)
    owner = np.empty(n, dtype=np.int64)  # index into `order` of the nearest centre
    order = np.empty(k, dtype=np.int64)
    order[0] = first
    for i in range(n):
        mind[i] = _dist(x, i, first)
        owner[i] = 0
    mind[first] = -1.0
    cc = np.empty(k, dtype=np.float64)
    for m in range(1, k):
        best, arg = -1.0, -1
        for i in range(n):
            if mind[i] > best:
                best, arg = mind[i], i
        order[m] = arg
        c = arg
        for t in range(m):
            cc[t] = _dist(x, order[t], c)
        mind[c] = -1.0
        for i in range(n):
            if mind[i] < 0.0 or cc[owner[i]] > 2.0 * mind[i] + 1e-9:
                continue
            d = _dist(x, i, c)
            if d < mind[i]:
                mind[i] = d
                owner[i] = m
    return order


def kcenter_order(emb: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    n = len(emb)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    first = int(smallest_keys(seed, n, 1)[0])
    return _kcenter(np.ascontiguousarray(emb, dtype=np.float64), first, k)


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    return kcenter_order(pool.embeddings, k, seed)
