"""Seeded keys that are the same on every machine and numpy version: splitmix64 of (seed, position)."""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(seed: int, n: int) -> np.ndarray:
    """uint64 [n]: splitmix64 finaliser of seed * 2^32 + i for i < n (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed & 0xFFFFFFFF) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
        z = z * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def smallest_keys(seed: int, n: int, k: int) -> np.ndarray:
    """Positions of the k smallest keys, ascending by key (ties, never in practice, by position)."""
    keys = splitmix64(seed, n)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(keys, k - 1)[:k] if k < n else np.arange(n)
    return part[np.lexsort((part, keys[part]))].astype(np.int64)
