"""Propagated sample vectors (core/vectors.propagate) against scipy's product, bit for bit."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from mig_ray.core.vectors import propagate, sample_matrix


def scipy_product(e: sp.csr_matrix, p: sp.csr_matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(e @ p)
    out.sort_indices()
    out.eliminate_zeros()
    return out


def assert_identical(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape
    for name in ("indptr", "indices", "data"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert b.has_sorted_indices


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40_000), labels=st.integers(1, 50),
       threads=st.integers(1, 4), zeros=st.booleans())
def test_propagate_equals_scipys_product(seed, n, labels, threads, zeros):
    """Random samples over a random graph-like P (diagonal plus a few neighbours, rows summing to
    anything); zero scores give exact zeros that must be left out; row blocks in 1 to 4 threads
    (a block per 10,000 rows at most)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    codes = rng.integers(0, labels, int(indptr[-1]))
    scores = rng.uniform(0, 6, n)
    if zeros:
        scores[rng.random(n) < 0.2] = 0.0
    e = sample_matrix(indptr, codes, scores, labels)
    w = sp.random(labels, labels, density=rng.uniform(0, 0.3), random_state=rng, format="csr")
    p = sp.csr_matrix(w + w.T + sp.eye(labels))
    p = sp.csr_matrix(p @ sp.diags(1.0 / np.asarray(p.sum(axis=0)).ravel()))
    p.sort_indices()
    assert_identical(scipy_product(e, p), propagate(e, p, threads=threads))
