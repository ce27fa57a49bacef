"""`kcenter`: greedy k-center (coreset) on sample embeddings with a seeded first pick.

The first centre is the position with the smallest splitmix64(seed, position) key; each next one is
the sample farthest (Euclidean, unit embeddings) from its nearest centre, ties to the lower position.
Compiled and lazy (exact): distances to the nearest centre only shrink, so stale ones are upper
bounds and only samples that reach the top of a max-heap are brought up to date.
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


@numba.njit(cache=True, inline="always")
def _above(ka, ia, kb, ib):
    """Heap order: larger distance first, then the lower position."""
    return ka > kb or (ka == kb and ia < ib)


@numba.njit(cache=True)
def _sift(key, pos, size, i):
    k, p = key[i], pos[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _above(key[c + 1], pos[c + 1], key[c], pos[c]):
            c += 1
        if not _above(key[c], pos[c], k, p):
            break
        key[i], pos[i] = key[c], pos[c]
        i = c
    key[i], pos[i] = k, p


@numba.njit(cache=True)
def _kcenter(x, first, k):
    """Lazy: a sample's distance to its nearest centre only shrinks as centres are added, so a stale
    distance is an upper bound; the heap's top is refreshed against the centres added since it was
    last computed, and taken once it is fresh."""
    n = x.shape[0]
    order = np.empty(k, dtype=np.int64)
    order[0] = first
    key = np.empty(n - 1, dtype=np.float64)
    pos = np.empty(n - 1, dtype=np.int64)
    stamp = np.ones(n, dtype=np.int64)  # centres order[:stamp[i]] are in key of i
    size = 0
    for i in range(n):
        if i != first:
            key[size], pos[size] = _dist(x, i, first), i
            size += 1
    for i in range(size // 2 - 1, -1, -1):
        _sift(key, pos, size, i)
    m = 1
    while m < k:
        i = pos[0]
        if stamp[i] == m:  # fresh and on top: the farthest sample, ties to the lower position
            order[m] = i
            m += 1
            size -= 1
            key[0], pos[0] = key[size], pos[size]
            _sift(key, pos, size, 0)
            continue
        d = key[0]
        for t in range(stamp[i], m):
            dt = _dist(x, i, order[t])
            if dt < d:
                d = dt
        stamp[i] = m
        key[0] = d
        _sift(key, pos, size, 0)
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
