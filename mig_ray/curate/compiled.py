"""The compiled inner loop of the MinHash signatures (numba), in a module of its own so that only
the processes that sign records import numba."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def min_hashes(hv, offsets, counts, a, b, out):  # pragma: no cover - compiled
    """out[r, p] = min over record r's shingle hashes h of (a[p] * h + b[p]) mod 2^32: one pass
    over the shingles per permutation, in registers (numpy's version built a [shingles, 16]
    temporary per 16 permutations: 76 of dedup's 139 µs per record at 1M)."""
    mask = np.uint64(0xFFFFFFFF)
    for r in range(len(counts)):
        n = counts[r]
        if n == 0:
            continue
        lo = offsets[r]
        for p in range(len(a)):
            ap, bp = np.uint64(a[p]), np.uint64(b[p])
            m = np.uint64(0xFFFFFFFF)
            for i in range(lo, lo + n):
                v = (np.uint64(hv[i]) * ap + bp) & mask
                if v < m:
                    m = v
            out[r, p] = np.uint32(m)
