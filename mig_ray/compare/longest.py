"""`longest`: the k samples with the longest responses (Zhao et al. 2024, "Long Is More for
Alignment"), counted in characters of the assistant turns (all of them, for a multi-turn
conversation), ties to the lower input position. A record whose conversation cannot be read counts 0."""

from __future__ import annotations

import numpy as np

from mig_ray.compare.pool import ComparePool

NAME = "longest"
PAPER = "Zhao et al. 2024, Long Is More for Alignment (arXiv 2402.04833)"
SUMMARY = "the k longest responses (characters of the assistant turns), ties to the lower position"
NEEDS = frozenset({"text"})


def response_chars(messages: list[dict] | None) -> int:
    """Characters of the assistant turns of one conversation (0 when it has none or cannot be read)."""
    return sum(len(m.get("content") or "") for m in messages or () if m.get("role") == "assistant")


def longest_order(lengths: np.ndarray, k: int) -> np.ndarray:
    """Positions by length descending, then position ascending: the first k."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.lexsort((np.arange(len(lengths)), -lengths))[:k].astype(np.int64)


def select(pool: ComparePool, k: int, seed: int = 0) -> np.ndarray:
    return longest_order(pool.response_chars, k)
