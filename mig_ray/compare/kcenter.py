"""`kcenter`: greedy k-center (coreset) on sample embeddings with a seeded first pick.

The first centre is the position with the smallest splitmix64(seed, position) key; each next one is
the sample farthest (Euclidean) from its nearest centre, ties to the lower position.

Lazy and blocked (exact): a sample's distance to its nearest centre only shrinks as centres are
added, so a stale distance is an upper bound; only samples that reach the top of a max-heap are
brought up to date against the centres added since, one dot product each. Every BLOCK centres the
distances of all samples to those centres come from one matrix product (BLAS) and the heap is rebuilt,
so no sample is ever more than BLOCK centres behind. Squared distances are |x|^2 + |c|^2 - 2 x.c in
float64 (clipped at 0), computed the same way by the matrix product and the compiled refresh.
"""

from __future__ import annotations

import numba
import numpy as np

from mig_ray.compare.keys import smallest_keys
from mig_ray.compare.maxheap import heapify, pop_top, sift_down
from mig_ray.compare.pool import ComparePool

NAME = "kcenter"
PAPER = "Sener and Savarese 2018, Active Learning for CNNs: A Core-Set Approach (arXiv 1708.00489)"
SUMMARY = "greedy k-center on sample embeddings: each next the farthest from its nearest centre"
NEEDS = frozenset({"embeddings"})
BLOCK = 256  # centres per matrix-product update
ROWS = 32768  # samples per matrix product (its [ROWS, BLOCK] float64 result is 64 MiB)


@numba.njit(cache=True)
def _sq_dist(x, norms, i, c):
    s = 0.0
    for t in range(x.shape[1]):
        s += x[i, t] * x[c, t]
    d = norms[i] + norms[c] - 2.0 * s
    return d if d > 0.0 else 0.0


@numba.njit(cache=True)
def _pick(x, norms, best, key, pos, size, stamp, order, m, m_end):
    """Take centres until m == m_end: the top is taken once fresh (its key includes every centre so
    far), else refreshed against the centres it has not seen and sifted down."""
    while m < m_end and size > 0:
        i = pos[0]
        if stamp[i] == m:
            order[m] = i
            m += 1
            size = pop_top(key, pos, size)
            continue
        d = key[0]
        for t in range(stamp[i], m):
            dt = _sq_dist(x, norms, i, order[t])
            if dt < d:
                d = dt
        stamp[i] = m
        best[i] = d
        key[0] = d
        sift_down(key, pos, size, 0)
    return m, size


@numba.njit(cache=True)
def _min_into(best, lo, g, row_norms, cent_norms):
    """best[lo + r] = min(best[lo + r], |x_r|^2 + min_c(|c|^2 + g[r, c])) with g = -2 x.c."""
    for r in range(g.shape[0]):
        m = np.inf
        for c in range(g.shape[1]):
            v = cent_norms[c] + g[r, c]
            if v < m:
                m = v
        m += row_norms[r]
        if m < 0.0:
            m = 0.0
        if m < best[lo + r]:
            best[lo + r] = m


@numba.njit(cache=True)
def _rekey(best, key, pos, size, stamp, m):
    for h in range(size):
        key[h] = best[pos[h]]
    for i in range(len(stamp)):
        stamp[i] = m
    heapify(key, pos, size)


def _update(x: np.ndarray, norms: np.ndarray, best: np.ndarray, centres: np.ndarray) -> None:
    """best = min(best, squared distance to each of `centres`), by matrix products over row blocks."""
    c = -2.0 * x[centres]
    cn = norms[centres]
    for lo in range(0, len(x), ROWS):
        hi = min(lo + ROWS, len(x))
        _min_into(best, lo, x[lo:hi] @ c.T, norms[lo:hi], cn)


def kcenter_order(emb: np.ndarray, k: int, seed: int = 0, block: int = BLOCK) -> np.ndarray:
    n = len(emb)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    x = np.ascontiguousarray(emb, dtype=np.float64)
    norms = np.einsum("ij,ij->i", x, x)
    order = np.empty(k, dtype=np.int64)
    order[0] = int(smallest_keys(seed, n, 1)[0])
    best = np.full(n, np.inf)
    pos = np.delete(np.arange(n, dtype=np.int64), order[0])
    key = np.empty(n - 1, dtype=np.float64)
    stamp = np.empty(n, dtype=np.int64)
    size, m, flushed = n - 1, 1, 0
    while m < k:
        _update(x, norms, best, order[flushed:m])
        flushed = m
        _rekey(best, key, pos, size, stamp, m)
        m, size = _pick(x, norms, best, key, pos, size, stamp, order, m, min(k, m + block))
    return order


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    return kcenter_order(pool.embeddings, k, seed)
