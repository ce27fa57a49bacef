"""`qdit`: Quality-Diversity Instruction Tuning (Bukharin et al. 2024): greedy maximisation of

    F(A) = alpha * FL(A) + (1 - alpha) * sum_{a in A} q_a

FL(A) = sum_i max_{j in A} sim(i, j) is the facility-location diversity over the pool: how well the
selection covers every sample. sim(i, j) = max(0, cos(i, j)) of the sample embeddings, kept only when
j is among i's `neighbours` most similar samples (and sim(i, i) = 1): the k-nearest-neighbour
sparsified form, which equals the dense objective when neighbours >= N - 1. q_a is the sample's
score over the pool's largest score (in [0, 1]), so a term of FL (one covered sample) and one sample's
quality weigh on the same scale.

Neighbours are exact: `knn.neighbours` (blocked matrix products and a compiled top-k merge). F is
monotone submodular, so a sample's gain only shrinks as A grows and the lazy greedy (stale gains are
upper bounds; the top of a max-heap is taken once fresh) returns the naive greedy's order. Ties: the
larger gain, then the lower position.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from mig_ray.compare.knn import neighbours
from mig_ray.compare.maxheap import heapify, pop_top, sift_down
from mig_ray.compare.pool import ComparePool

NAME = "qdit"
PAPER = "Bukharin et al. 2024, Data Diversity Matters for Robust Instruction Tuning (QDIT, arXiv 2311.14736)"
SUMMARY = "greedy alpha * facility-location diversity (k-NN sparsified) + (1 - alpha) * quality"
NEEDS = frozenset({"scores", "embeddings"})
OPTIONS = {"alpha": 0.7, "neighbours": 10}


def check_options(options: dict) -> None:
    if not 0.0 <= options["alpha"] <= 1.0:
        raise ValueError(f"qdit.alpha must be in [0, 1], got {options['alpha']}")
    if options["neighbours"] < 1:
        raise ValueError(f"qdit.neighbours must be >= 1, got {options['neighbours']}")


def coverage_graph(emb: np.ndarray, k: int, stats: dict | None = None) -> sp.csc_matrix:
    """S[i, j] = sim(i, j) for j in i's neighbourhood (itself and its k most similar), as CSC: column j
    lists the samples j would cover. `stats`: as knn.neighbours'."""
    n = len(emb)
    idx, sims = neighbours(emb, k, stats=stats)
    kk = idx.shape[1]
    rows = np.repeat(np.arange(n, dtype=np.int64), kk + 1)
    cols = np.concatenate([np.arange(n, dtype=np.int64)[:, None], idx], axis=1).ravel()
    vals = np.concatenate([np.ones((n, 1)), np.maximum(sims, 0.0)], axis=1).ravel()
    return sp.csc_matrix((vals, (rows, cols)), shape=(n, n))


@numba.njit(cache=True)
def _gain(ptr, rows, vals, cur, j, alpha, qj):
    s = 0.0
    for p in range(ptr[j], ptr[j + 1]):
        d = vals[p] - cur[rows[p]]
        if d > 0.0:
            s += d
    return alpha * s + (1.0 - alpha) * qj


@numba.njit(cache=True)
def _lazy(ptr, rows, vals, q, alpha, k):
    n = len(q)
    cur = np.zeros(n, dtype=np.float64)
    key = np.empty(n, dtype=np.float64)
    pos = np.arange(n, dtype=np.int64)
    stamp = np.zeros(n, dtype=np.int64)
    for j in range(n):
        key[j] = _gain(ptr, rows, vals, cur, j, alpha, q[j])
    heapify(key, pos, n)
    order = np.empty(k, dtype=np.int64)
    gains = np.empty(k, dtype=np.float64)
    size, m = n, 0
    while m < k:
        j = pos[0]
        if stamp[j] == m:
            order[m], gains[m] = j, key[0]
            m += 1
            size = pop_top(key, pos, size)
            for p in range(ptr[j], ptr[j + 1]):
                if vals[p] > cur[rows[p]]:
                    cur[rows[p]] = vals[p]
            continue
        key[0] = _gain(ptr, rows, vals, cur, j, alpha, q[j])
        stamp[j] = m
        sift_down(key, pos, size, 0)
    return order, gains


def quality(scores: np.ndarray) -> np.ndarray:
    """Scores over the pool's largest (all zero when it is 0)."""
    s = np.asarray(scores, dtype=np.float64)
    top = s.max(initial=0.0)
    return s / top if top > 0 else np.zeros_like(s)


def qdit_order(emb: np.ndarray, scores: np.ndarray, k: int, alpha: float = 0.7,
               n_neighbours: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(order of k samples, the gain of F each had when taken)."""
    n = len(emb)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return greedy(coverage_graph(emb, n_neighbours), scores, k, alpha)


def greedy(graph: sp.csc_matrix, scores: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The lazy greedy on a coverage graph (`coverage_graph`): (order, gains)."""
    return _lazy(graph.indptr.astype(np.int64), graph.indices.astype(np.int64), graph.data.astype(np.float64),
                 quality(scores), float(alpha), min(k, graph.shape[0]))


def select(pool: ComparePool, k: int, seed: int = 0, alpha: float = 0.7, neighbours: int = 10) -> np.ndarray:
    return qdit_order(pool.embeddings, pool.scores, k, alpha, neighbours)[0]
