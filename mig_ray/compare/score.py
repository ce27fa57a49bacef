"""`score`: the top k by score (quality only), ties to the lower input position."""

from __future__ import annotations

import numpy as np

from mig_ray.compare.pool import ComparePool

NAME = "score"
PAPER = "quality ranking (the score the pool carries, e.g. DEITA quality x complexity)"
SUMMARY = "the top k by score, ties to the lower input position"
NEEDS = frozenset({"scores"})


def score_order(scores: np.ndarray) -> np.ndarray:
    """All positions by score descending, then position ascending."""
    return np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64))).astype(np.int64)


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    return score_order(pool.scores)[:k]
