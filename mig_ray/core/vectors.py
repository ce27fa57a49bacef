"""Sample vectors: the sparse N x L matrix of e_i (score on each label) and its propagation e_i P."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse as sp

from mig_ray.core.cores import available_cores


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


@numba.njit(cache=True, nogil=True)
def _product_rows(lo, hi, n_cols, e_ptr, e_idx, e_val, p_ptr, p_idx, p_val, slot, out_idx, out_val, counts):
    """Rows lo..hi-1 of e @ p, each written from its slot on, columns sorted, exact zeros left out.

    Each sum is formed in scipy's order (the row's entries of e as stored, each times its row of p),
    so every value equals scipy's product bit for bit."""
    sums = np.zeros(n_cols, dtype=np.float64)
    seen = np.zeros(n_cols, dtype=np.bool_)
    cols = np.empty(n_cols, dtype=np.int64)
    for i in range(lo, hi):
        m = 0
        for jj in range(e_ptr[i], e_ptr[i + 1]):
            v = e_val[jj]
            k = e_idx[jj]
            for kk in range(p_ptr[k], p_ptr[k + 1]):
                c = p_idx[kk]
                sums[c] += v * p_val[kk]
                if not seen[c]:
                    seen[c] = True
                    cols[m] = c
                    m += 1
        for a in range(1, m):  # a row holds a few dozen columns: insertion sort
            c = cols[a]
            b = a
            while b > 0 and cols[b - 1] > c:
                cols[b] = cols[b - 1]
                b -= 1
            cols[b] = c
        w = slot[i]
        for a in range(m):
            c = cols[a]
            if sums[c] != 0:
                out_idx[w] = c
                out_val[w] = sums[c]
                w += 1
            sums[c] = 0.0
            seen[c] = False
        counts[i] = w - slot[i]


@numba.njit(cache=True, nogil=True)
def _compact(lo, hi, slot, counts, indptr, idx, val, out_idx, out_val):
    for i in range(lo, hi):
        a = slot[i]
        b = indptr[i]
        for t in range(counts[i]):
            out_idx[b + t] = idx[a + t]
            out_val[b + t] = val[a + t]


def propagate(e: sp.csr_matrix, p: sp.csr_matrix, threads: int | None = None) -> sp.csr_matrix:
    """ê = e P as CSR with sorted column indices and no stored zeros (what the greedy loop expects).

    Equal, value for value and in its index types, to scipy's `e @ p` sorted and without zeros;
    built here because scipy's product runs on one core and its result is then sorted in another
    pass. Blocks of rows run in threads (the kernels release the GIL), each row written at a slot
    that bounds its length (the sum of its labels' rows of P), then closed up."""
    e, p = sp.csr_matrix(e), sp.csr_matrix(p)
    n = e.shape[0]
    if e.shape[1] != p.shape[0]:
        raise ValueError(f"shapes {e.shape} and {p.shape} do not multiply")
    p_len = np.diff(p.indptr).astype(np.int64)
    upto = np.zeros(e.nnz + 1, dtype=np.int64)
    np.cumsum(p_len[e.indices], out=upto[1:])
    slot = upto[e.indptr]  # where each row's entries start, before closing up
    index_dtype = np.int32 if max(int(slot[-1]), p.shape[1]) < 2**31 else np.int64
    idx = np.empty(slot[-1], dtype=index_dtype)
    val = np.empty(slot[-1], dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    parts = max(1, min(threads or available_cores(), n // 10_000 + 1))
    cuts = np.searchsorted(slot, np.linspace(0, slot[-1], parts + 1)).clip(0, n).tolist()
    cuts[0], cuts[-1] = 0, n
    ranges = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]

    def run(kernel, *args) -> None:
        if len(ranges) <= 1:
            for a, b in ranges:
                kernel(a, b, *args)
            return
        with ThreadPoolExecutor(len(ranges)) as pool:
            for f in [pool.submit(kernel, a, b, *args) for a, b in ranges]:
                f.result()

    e_val, p_val = e.data.astype(np.float64, copy=False), p.data.astype(np.float64, copy=False)
    run(_product_rows, p.shape[1], e.indptr, e.indices, e_val, p.indptr, p.indices, p_val, slot, idx, val,
        counts)
    indptr = np.zeros(n + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    if indptr[-1] == slot[-1]:  # no row merged columns or dropped a zero: already closed up
        out_idx, out_val = idx, val
    else:
        out_idx = np.empty(indptr[-1], dtype=index_dtype)
        out_val = np.empty(indptr[-1], dtype=np.float64)
        run(_compact, slot, counts, indptr, idx, val, out_idx, out_val)
        del idx, val
    out = sp.csr_matrix((out_val, out_idx, indptr), shape=(n, p.shape[1]), copy=False)
    out.has_sorted_indices = True
    return out
