"""A compiled max-heap of (key, position) for the lazy greedy methods (kcenter, qdit): larger key first,
ties to the lower position, so the top of the heap is the pick the tie rule wants."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def above(ka: float, ia: int, kb: float, ib: int) -> bool:
    """Heap order: larger key first, then the lower position."""
    return ka > kb or (ka == kb and ia < ib)


@numba.njit(cache=True)
def sift_down(key: np.ndarray, pos: np.ndarray, size: int, i: int) -> None:
    k, p = key[i], pos[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and above(key[c + 1], pos[c + 1], key[c], pos[c]):
            c += 1
        if not above(key[c], pos[c], k, p):
            break
        key[i], pos[i] = key[c], pos[c]
        i = c
    key[i], pos[i] = k, p


@numba.njit(cache=True)
def heapify(key: np.ndarray, pos: np.ndarray, size: int) -> None:
    for i in range(size // 2 - 1, -1, -1):
        sift_down(key, pos, size, i)


@numba.njit(cache=True)
def pop_top(key: np.ndarray, pos: np.ndarray, size: int) -> int:
    """Remove the top; returns the new size."""
    size -= 1
    key[0], pos[0] = key[size], pos[size]
    sift_down(key, pos, size, 0)
    return size
