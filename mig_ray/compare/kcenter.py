"""`kcenter`: greedy k-center (coreset) on sample embeddings with a seeded first pick.

The first centre is the position with the smallest splitmix64(seed, position) key; each next one is
the sample farthest (Euclidean) from its nearest centre, ties to the lower position.

Lazy and blocked (exact): a sample's distance to its nearest centre only shrinks as centres are
added, so a stale distance is an upper bound; only samples that reach the top of a max-heap are
brought up to date against the centres added since, one dot product each. Every BLOCK centres the
distances of the samples to those centres come from matrix products (BLAS) and the heap is rebuilt,
so no sample is ever more than BLOCK centres behind. Squared distances are |x|^2 + |c|^2 - 2 x.c in
float64 (clipped at 0), computed the same way by the matrix product and the compiled refresh.

Pruned (exact, above PRUNE_MIN samples): the samples are split into groups with a centre and a radius
(`balls`); a group is left out of a block's products when every new centre z is so far from it that
(|z - c_g| - r_g)^2 exceeds the largest nearest-centre distance in the group (with |z - c_g| lowered
by 1e-6 and margins of 1e-9 for rounding): by the triangle inequality no member can come closer to z
than to its nearest centre.
Leaving it out changes no distance, so the order is the one without pruning.
"""

from __future__ import annotations

import numba
import numpy as np

from mig_ray.compare.balls import Groups, make_groups
from mig_ray.compare.keys import smallest_keys
from mig_ray.compare.maxheap import heapify, pop_top, sift_down
from mig_ray.compare.pool import ComparePool

NAME = "kcenter"
PAPER = "Sener and Savarese 2018, Active Learning for CNNs: A Core-Set Approach (arXiv 1708.00489)"
SUMMARY = "greedy k-center on sample embeddings: each next the farthest from its nearest centre"
NEEDS = frozenset({"embeddings"})
BLOCK = 256  # centres per matrix-product update
ROWS = 32768  # samples per matrix product (its [ROWS, BLOCK] float64 result is 64 MiB)
PRUNE_MIN = 100_000  # samples from which the updates skip groups (below, grouping costs more than it saves)
SLACK = 1e-9


@numba.njit(cache=True)
def _sq_dist(x, norms, i, c):
    s = 0.0
    for t in range(x.shape[1]):
        s += x[i, t] * x[c, t]
    d = norms[i] + norms[c] - 2.0 * s
    return d if d > 0.0 else 0.0


@numba.njit(cache=True)
def _pick(x, norms, row, best, key, pos, size, stamp, order, m, m_end):
    """Take centres until m == m_end: the top is taken once fresh (its key includes every centre so
    far), else refreshed against the centres it has not seen and sifted down. Sample i is x[row[i]]."""
    while m < m_end and size > 0:
        i = pos[0]
        if stamp[i] == m:
            order[m] = i
            m += 1
            size = pop_top(key, pos, size)
            continue
        d = key[0]
        for t in range(stamp[i], m):
            dt = _sq_dist(x, norms, row[i], row[order[t]])
            if dt < d:
                d = dt
        stamp[i] = m
        best[i] = d
        key[0] = d
        sift_down(key, pos, size, 0)
    return m, size


@numba.njit(cache=True)
def _min_into(best, perm, lo, g, row_norms, cent_norms):
    """best[perm[lo + r]] = min(that, |x_r|^2 + min_c(|c|^2 + g[r, c])) with g = -2 x.c."""
    for r in range(g.shape[0]):
        m = np.inf
        for c in range(g.shape[1]):
            v = cent_norms[c] + g[r, c]
            if v < m:
                m = v
        m += row_norms[r]
        if m < 0.0:
            m = 0.0
        if m < best[perm[lo + r]]:
            best[perm[lo + r]] = m


@numba.njit(cache=True)
def _rekey(best, key, pos, size, stamp, m):
    for h in range(size):
        key[h] = best[pos[h]]
    for i in range(len(stamp)):
        stamp[i] = m
    heapify(key, pos, size)


@numba.njit(cache=True)
def _group_max(best, perm, starts, out):
    """out[g] = the largest best[] of group g's members."""
    for g in range(len(starts) - 1):
        m = 0.0
        for p in range(starts[g], starts[g + 1]):
            if best[perm[p]] > m:
                m = best[perm[p]]
        out[g] = m


def _runs(need: np.ndarray, starts: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of the needed groups, consecutive groups joined."""
    edges = np.flatnonzero(np.diff(np.r_[0, need.astype(np.int8), 0]))
    return [(int(starts[a]), int(starts[b])) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _update(x: np.ndarray, norms: np.ndarray, best: np.ndarray, perm: np.ndarray, centres: np.ndarray,
            groups: Groups | None, far: np.ndarray) -> int:
    """best = min(best, squared distance to each of `centres` (rows of x)), by matrix products over
    row blocks of the groups that a new centre can reach; `far` holds each group's largest best (kept
    up to date here). Returns the rows multiplied."""
    c = -2.0 * x[centres]
    cn = norms[centres]
    if groups is None:
        runs = [(0, len(x))]
    else:
        cc = groups.centres
        d2 = cn[:, None] + np.einsum("ij,ij->i", cc, cc)[None, :] + c @ cc.T
        scale = float(np.sqrt(cn.max())) + float(groups.max_norm.max())
        dist = np.sqrt(np.maximum(d2, 0.0)).min(axis=0) - 1e-6 * scale  # less than the true distance
        reach = np.maximum(dist - groups.radius, 0.0) ** 2
        need = reach <= far * (1.0 + SLACK) + SLACK * scale * scale
        runs = _runs(need, groups.starts)
    done = 0
    for a, b in runs:
        for lo in range(a, b, ROWS):
            hi = min(lo + ROWS, b)
            _min_into(best, perm, lo, x[lo:hi] @ c.T, norms[lo:hi], cn)
            done += hi - lo
    if groups is not None:
        _group_max(best, perm, groups.starts, far)
    return done


def kcenter_order(emb: np.ndarray, k: int, seed: int = 0, block: int = BLOCK, prune: bool | None = None,
                  stats: dict | None = None) -> np.ndarray:
    """The k centres in order. prune: skip far groups in the block updates (None: above PRUNE_MIN
    samples); the order is the same either way. `stats`, if given, receives the rows multiplied."""
    emb = np.asarray(emb)
    n = len(emb)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    groups = make_groups(emb, farthest_first, seed) if (n > PRUNE_MIN if prune is None else prune) else None
    perm = groups.perm if groups is not None else np.arange(n, dtype=np.int64)
    x = np.empty(np.shape(emb))  # float64 rows in group order, copied in blocks
    for lo in range(0, n, ROWS):
        x[lo:lo + ROWS] = emb[perm[lo:lo + ROWS]]
    row = np.empty(n, dtype=np.int64)
    row[perm] = np.arange(n)
    norms = np.einsum("ij,ij->i", x, x)
    far = np.full(len(groups) if groups is not None else 0, np.inf)
    order = np.empty(k, dtype=np.int64)
    order[0] = int(smallest_keys(seed, n, 1)[0])
    best = np.full(n, np.inf)
    pos = np.delete(np.arange(n, dtype=np.int64), order[0])
    key = np.empty(n - 1, dtype=np.float64)
    stamp = np.empty(n, dtype=np.int64)
    size, m, flushed, rows = n - 1, 1, 0, 0
    while m < k:
        rows += _update(x, norms, best, perm, row[order[flushed:m]], groups, far)
        flushed = m
        _rekey(best, key, pos, size, stamp, m)
        m, size = _pick(x, norms, row, best, key, pos, size, stamp, order, m, min(k, m + block))
    if stats is not None:
        stats.update(groups=len(groups) if groups is not None else 0, rows_multiplied=rows)
    return order


def farthest_first(x: np.ndarray, m: int, seed: int) -> np.ndarray:
    """The first m of kcenter's order on x, unpruned: the pivots of `balls.make_groups`."""
    return kcenter_order(x, m, seed, prune=False)


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    return kcenter_order(pool.embeddings, k, seed)
