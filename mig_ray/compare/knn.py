"""Exact k nearest neighbours by cosine similarity of unit sample embeddings (qdit's sparsified
facility location).

Pruned (above PRUNE_MIN samples): the samples are split into groups with a centre and a radius
(`balls`); for a row block of one or more groups, candidate groups are visited in decreasing order of
their bound on the similarity, (|q|^2 + |x|^2 - max(0, |c_g - c_h| - r_g - r_h)^2) / 2 >= q.x
(triangle inequality), and the visit stops once the next bound is below every row's current k-th
similarity (with a margin of 1e-4 for float32 rounding), so the groups skipped cannot hold a
neighbour. How much is skipped depends on the data: on clustered vectors most; on vectors without
clusters none (then it costs the brute force and the grouping).
Brute force (`prune=False`): a [BLOCK, BLOCK] block of similarities at a time comes from one float32
matrix product (BLAS), only for the upper triangle of blocks (a block serves its rows and, transposed,
its columns). Both merge a block into each row's running top k, a min-heap whose root is the worst
kept neighbour, so most candidates cost one comparison. The kept neighbours' similarities are then
recomputed in float64, so the values do not depend on how BLAS blocked its sums; which neighbours are
kept is decided on float32 products (a near tie at the k-th place can go either way).
Ties: the larger similarity, then the lower position. A sample is never its own neighbour.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from mig_ray.compare.balls import Groups, centre_distances, make_groups
from mig_ray.compare.kcenter import farthest_first

BLOCK = 4096  # rows and columns of one block of similarities (64 MiB of float32)
PRUNE_MIN = 100_000  # samples from which the search is pruned (at 50K it computed 0.91 of all pairs)
TILE = 64  # columns merged together by _merge_columns


@numba.njit(cache=True, inline="always")
def _worse(va, ja, vb, jb):
    return va < vb or (va == vb and ja > jb)


@numba.njit(cache=True)
def _sift(hv, hj, i):
    k = len(hv)
    v, j = hv[i], hj[i]
    while True:
        c = 2 * i + 1
        if c >= k:
            break
        if c + 1 < k and _worse(hv[c + 1], hj[c + 1], hv[c], hj[c]):
            c += 1
        if not _worse(hv[c], hj[c], v, j):
            break
        hv[i], hj[i] = hv[c], hj[c]
        i = c
    hv[i], hj[i] = v, j


@numba.njit(cache=True, parallel=True)
def _merge(s, row0, col0, hv, hj):
    for r in numba.prange(s.shape[0]):
        i = row0 + r
        v_h = hv[i]
        j_h = hj[i]
        tv, tj = v_h[0], j_h[0]  # the worst kept: a candidate below it costs one comparison
        for c in range(s.shape[1]):
            v = s[r, c]
            if v < tv:
                continue
            j = col0 + c
            if j == i or (v == tv and j > tj):
                continue
            v_h[0] = v
            j_h[0] = j
            _sift(v_h, j_h, 0)
            tv, tj = v_h[0], j_h[0]


@numba.njit(cache=True, parallel=True)
def _merge_columns(s, row0, col0, hv, hj):
    """_merge of s transposed (column c of s is a candidate list for sample col0 + c), read by row in
    tiles of TILE columns so that no transposed copy is made."""
    n_tiles = (s.shape[1] + TILE - 1) // TILE
    for t in numba.prange(n_tiles):
        c0 = t * TILE
        c1 = min(c0 + TILE, s.shape[1])
        tv = np.empty(TILE, dtype=s.dtype)
        tj = np.empty(TILE, dtype=np.int64)
        for c in range(c0, c1):
            tv[c - c0], tj[c - c0] = hv[col0 + c, 0], hj[col0 + c, 0]
        for r in range(s.shape[0]):
            j = row0 + r
            for c in range(c0, c1):
                v = s[r, c]
                u = c - c0
                if v < tv[u]:
                    continue
                i = col0 + c
                if j == i or (v == tv[u] and j > tj[u]):
                    continue
                hv[i, 0] = v
                hj[i, 0] = j
                _sift(hv[i], hj[i], 0)
                tv[u], tj[u] = hv[i, 0], hj[i, 0]


@numba.njit(cache=True, parallel=True)
def _merge_ids(s, row0, row_ids, col_ids, hv, hj):
    """_merge for rows row0.. of a permuted order: row r is sample row_ids[row0 + r], column c is
    sample col_ids[c]; heaps keep sample positions, so the tie rule is on positions."""
    for r in numba.prange(s.shape[0]):
        i = row0 + r
        me = row_ids[i]
        v_h = hv[i]
        j_h = hj[i]
        tv, tj = v_h[0], j_h[0]
        for c in range(s.shape[1]):
            v = s[r, c]
            if v < tv:
                continue
            j = col_ids[c]
            if j == me or (v == tv and j > tj):
                continue
            v_h[0] = v
            j_h[0] = j
            _sift(v_h, j_h, 0)
            tv, tj = v_h[0], j_h[0]


@numba.njit(cache=True, parallel=True)
def _exact_sims(x, idx):
    out = np.empty(idx.shape, dtype=np.float64)
    for i in numba.prange(idx.shape[0]):
        for t in range(idx.shape[1]):
            j = idx[i, t]
            s = 0.0
            for d in range(x.shape[1]):
                s += np.float64(x[i, d]) * np.float64(x[j, d])
            out[i, t] = s
    return out


def neighbours(emb: np.ndarray, k: int, block: int = BLOCK, prune: bool | None = None, seed: int = 0,
               groups: Groups | None = None, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(idx [N, k'], sims [N, k']) with k' = min(k, N - 1): each sample's k most similar other samples
    (cosine of the rows, which should be unit vectors), in no particular order. `seed` only picks the
    groups' pivots, `groups` replaces them (neither changes the result); prune None: above PRUNE_MIN
    samples; `stats`, if given, receives
    the seconds of grouping, the number of groups and the similarities computed (for benchmarks)."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n = len(x)
    kk = max(0, min(k, n - 1))
    if kk == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0))
    stats = {} if stats is None else stats
    if (n > PRUNE_MIN if prune is None else prune) and n > block:
        t = time.perf_counter()
        groups = groups if groups is not None else make_groups(x, farthest_first, seed)
        stats.update(group_seconds=time.perf_counter() - t, groups=len(groups))
        hj = _pruned(x, kk, groups, block, stats)
    else:
        hj = _brute(x, kk, block)
        nb = -(-n // block)  # the upper triangle of blocks, the last one short
        stats.update(products=sum(min(block, n - a * block) * min(block, n - b * block)
                                  for a in range(nb) for b in range(a, nb)))
    return hj, _exact_sims(x, hj)


def _brute(x: np.ndarray, kk: int, block: int) -> np.ndarray:
    n = len(x)
    hv = np.full((n, kk), -np.inf, dtype=np.float32)
    hj = np.full((n, kk), np.iinfo(np.int64).max, dtype=np.int64)
    for lo in range(0, n, block):
        xa = x[lo:lo + block]
        for cl in range(lo, n, block):  # the upper triangle of blocks: sim is symmetric
            s = xa @ x[cl:cl + block].T
            _merge(s, lo, cl, hv, hj)
            if cl != lo:
                _merge_columns(s, lo, cl, hv, hj)
    return hj


MARGIN = 1e-4  # on a bound of unit vectors' similarity: float32 products err by far less


def similarity_bounds(g: Groups, rows: np.ndarray) -> np.ndarray:
    """[len(rows), G]: no sample of group rows[a] has a dot product above [a, b] with one of group b."""
    gap = np.maximum(centre_distances(g, rows) - g.radius[rows][:, None] - g.radius[None, :], 0.0)
    sq = g.max_norm ** 2
    return (sq[rows][:, None] + sq[None, :]) / 2.0 - gap ** 2 / 2.0 + MARGIN * np.maximum(sq[rows][:, None],
                                                                                          sq[None, :])


def _units(g: Groups, block: int) -> list[tuple[int, int, list[int]]]:
    """Row blocks (start, end, groups) in group order: consecutive small groups packed up to `block`
    rows, a larger group cut into pieces of `block` rows."""
    out: list[tuple[int, int, list[int]]] = []
    cur_lo, cur = 0, []
    for gi in range(len(g)):
        a, b = int(g.starts[gi]), int(g.starts[gi + 1])
        if b - a > block:
            if cur:
                out.append((cur_lo, a, cur))
                cur = []
            out.extend((lo, min(lo + block, b), [gi]) for lo in range(a, b, block))
            cur_lo = b
            continue
        if cur and b - cur_lo > block:
            out.append((cur_lo, a, cur))
            cur_lo, cur = a, []
        cur.append(gi)
    if cur:
        out.append((cur_lo, int(g.starts[-1]), cur))
    return out


def _pruned(x: np.ndarray, kk: int, g: Groups, block: int, stats: dict) -> np.ndarray:
    n = len(x)
    done = 0
    xs = x[g.perm]
    hv = np.full((n, kk), -np.inf, dtype=np.float32)
    hj = np.full((n, kk), np.iinfo(np.int64).max, dtype=np.int64)
    pieces = _units(g, block)  # column pieces: the same cut
    flat = np.concatenate([p[2] for p in pieces])
    offs = np.cumsum([0] + [len(p[2]) for p in pieces[:-1]])
    for lo, hi, groups in pieces:
        bound_g = similarity_bounds(g, np.asarray(groups)).max(axis=0)
        bound_p = np.maximum.reduceat(bound_g[flat], offs)  # over the piece's groups
        order = np.argsort(-bound_p, kind="stable")
        at = 0
        while at < len(order):
            worst = hv[lo:hi, 0].min()
            if bound_p[order[at]] < worst:
                break
            take, cols = [], 0
            while at < len(order) and bound_p[order[at]] >= worst:
                a, b, _ = pieces[order[at]]
                if take and cols + (b - a) > block:
                    break
                take.append(np.arange(a, b))
                cols += b - a
                at += 1
            idx = np.concatenate(take)
            s = xs[lo:hi] @ xs[idx].T
            done += s.size
            _merge_ids(s, lo, g.perm, g.perm[idx], hv, hj)
    stats.update(products=done)
    out = np.empty_like(hj)
    out[g.perm] = hj
    return out
