"""Exact k nearest neighbours by cosine similarity of unit sample embeddings (qdit's sparsified
facility location).

Blocked: a [BLOCK, BLOCK] block of similarities at a time comes from one float32 matrix product (BLAS),
only for the upper triangle of blocks (a block serves its rows and, transposed, its columns), and a
compiled loop (rows in parallel) merges it into each row's running top k, a min-heap whose root is
the worst kept neighbour, so most candidates cost one comparison. Measured against faiss-cpu's
exact flat inner-product index in bench/bench_compare.py. The kept neighbours' similarities are then
recomputed in float64, so the values do not depend on how BLAS blocked its sums; which neighbours are
kept is decided on float32 products (a near tie at the k-th place can go either way).
Ties: the larger similarity, then the lower position. A sample is never its own neighbour.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 4096  # rows and columns of one block of similarities (64 MiB of float32)
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


def neighbours(emb: np.ndarray, k: int, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(idx [N, k'], sims [N, k']) with k' = min(k, N - 1): each sample's k most similar other samples
    (cosine of the rows, which should be unit vectors), in no particular order."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n = len(x)
    kk = max(0, min(k, n - 1))
    hv = np.full((n, kk), -np.inf, dtype=np.float32)
    hj = np.full((n, kk), np.iinfo(np.int64).max, dtype=np.int64)
    if kk > 0:
        for lo in range(0, n, block):
            xa = x[lo:lo + block]
            for cl in range(lo, n, block):  # the upper triangle of blocks: sim is symmetric
                s = xa @ x[cl:cl + block].T
                _merge(s, lo, cl, hv, hj)
                if cl != lo:
                    _merge_columns(s, lo, cl, hv, hj)
    return hj, _exact_sims(x, hj)
