"""Sample vectors: the sparse N x L matrix of e_i (score on each label) and its propagation e_i P."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    keys = np.unique(rows * max(n_labels, 1) + label_ids)  # sorted by (row, label), repeats gone
    rows, cols = np.divmod(keys, max(n_labels, 1))
    counts = np.bincount(rows, minlength=n)
    data = scores[rows] / counts[rows] if norm else scores[rows]
    out_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    return sp.csr_matrix((data, cols, out_indptr), shape=(n, n_labels))


def propagate(e: sp.csr_matrix, p: sp.csr_matrix) -> sp.csr_matrix:
    """ê = e P as CSR with sorted column indices (what the greedy loop expects)."""
    out = sp.csr_matrix(e @ p)
    out.sort_indices()
    out.eliminate_zeros()
    return out
