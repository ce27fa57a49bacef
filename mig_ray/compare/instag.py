"""`instag`: InsTag's complexity-first diverse sampling.

Samples are ranked by number of valid labels descending, then score descending, then input
position. One pass takes a sample only when it carries a label no taken sample carries yet. When
the pass ends before k samples are taken (every label is covered), the remaining places are filled
with the passed-over samples in the same ranking, so that every method returns k samples.
"""

from __future__ import annotations

import numba
import numpy as np

from mig_ray.compare.pool import ComparePool

NAME = "instag"
PAPER = "Lu et al. 2023, #InsTag: Instruction Tagging for Analyzing SFT (arXiv 2308.07074)"
SUMMARY = "complexity-first diverse sampling: most labels first, taken when it adds an uncovered label"
NEEDS = frozenset({"labels", "scores"})


@numba.njit(cache=True)
def _pass(ranked, indptr, indices, n_labels, k):
    covered = np.zeros(n_labels, dtype=np.bool_)
    taken = np.zeros(len(ranked), dtype=np.bool_)
    out = np.empty(min(k, len(ranked)), dtype=np.int64)
    m = 0
    for r in range(len(ranked)):
        if m >= len(out):
            break
        i = ranked[r]
        new = False
        for p in range(indptr[i], indptr[i + 1]):
            if not covered[indices[p]]:
                new = True
                break
        if new:
            for p in range(indptr[i], indptr[i + 1]):
                covered[indices[p]] = True
            taken[r] = True
            out[m] = i
            m += 1
    passed = m
    for r in range(len(ranked)):
        if m >= len(out):
            break
        if not taken[r]:
            out[m] = ranked[r]
            m += 1
    return out, passed


def ranking(pool: ComparePool) -> np.ndarray:
    n = len(pool)
    return np.lexsort((np.arange(n), -pool.scores, -pool.label_counts())).astype(np.int64)


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    out, _ = _pass(ranking(pool), pool.e.indptr.astype(np.int64), pool.e.indices.astype(np.int64),
                   pool.e.shape[1], k)
    return out
