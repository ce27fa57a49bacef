"""Sample vectors: the sparse N x L matrix of e_i (score on each label) and its propagation e_i P."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp


@numba.njit(cache=True)
def _distinct_sorted_rows(indptr, cols):
    """Per row: sort the column ids and drop repeats (rows are short: insertion sort)."""
    out = np.empty_like(cols)
    out_ptr = np.zeros(len(indptr), dtype=np.int64)
    k = 0
    for i in range(len(indptr) - 1):
        start = k
        for p in range(indptr[i], indptr[i + 1]):
            c = cols[p]
            j = k
            while j > start and out[j - 1] > c:
                j -= 1
            if j > start and out[j - 1] == c:
                continue
            for m in range(k, j, -1):
                out[m] = out[m - 1]
            out[j] = c
            k += 1
        out_ptr[i + 1] = k
    return out_ptr, out[:k]


def sample_matrix(indptr: np.ndarray, label_ids: np.ndarray, scores: np.ndarray, n_labels: int,
                  norm: bool = False) -> sp.csr_matrix:
    """CSR of e_i: s_i on each distinct label of sample i (s_i/|L_i| with norm).

    `label_ids[indptr[i]:indptr[i+1]]` are sample i's graph-node ids; repeats count once.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    label_ids = np.asarray(label_ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(indptr) - 1
    if len(scores) != n:
        raise ValueError(f"{n} samples but {len(scores)} scores")
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() >= n_labels):
        raise ValueError(f"label ids must lie in [0, {n_labels})")
    out_indptr, cols = _distinct_sorted_rows(indptr, label_ids)
    counts = np.diff(out_indptr)
    data = np.repeat(scores / np.maximum(counts, 1) if norm else scores, counts)
    return sp.csr_matrix((data, cols, out_indptr), shape=(n, n_labels))


def propagate(e: sp.csr_matrix, p: sp.csr_matrix) -> sp.csr_matrix:
    """ê = e P as CSR with sorted column indices (what the greedy loop expects)."""
    out = sp.csr_matrix(e @ p)
    out.sort_indices()
    out.eliminate_zeros()
    return out
