"""`deita`: DEITA's score-first, diversity-aware selection.

Samples by score descending (ties to the lower position); a sample is taken only when its cosine
similarity to the nearest already-taken sample is below the threshold (DEITA's default 0.9). This is
exact and sequential: each candidate is checked against every sample taken before it. DEITA's own
batched filter differs there: it also rejects a candidate against other candidates of its own batch
that were not taken. When the pass ends before k samples are taken, the rejected samples fill the
remaining places in score order, so that every method returns k samples.

Vectorised: candidates come in blocks; one matrix product gives each block's similarities to
everything taken before it, and a compiled loop resolves the block in order against the samples
taken inside it.
"""

from __future__ import annotations

import numba
import numpy as np

from mig_ray.compare.pool import ComparePool
from mig_ray.compare.score import score_order

NAME = "deita"
PAPER = "Liu et al. 2024, What Makes Good Data for Alignment? (DEITA, arXiv 2312.15685)"
SUMMARY = "score-first: taken when its cosine to every taken sample is below the threshold"
NEEDS = frozenset({"scores", "embeddings"})
THRESHOLD = 0.9
OPTIONS = {"threshold": THRESHOLD}
BLOCK = 1024


@numba.njit(cache=True)
def _resolve(prev_max, gram, threshold, room):
    """Accept block candidates in order: below threshold against earlier takes and block takes."""
    b = len(prev_max)
    accept = np.zeros(b, dtype=np.bool_)
    took = np.empty(b, dtype=np.int64)
    m = 0
    for j in range(b):
        if m >= room:
            break
        if prev_max[j] >= threshold:
            continue
        ok = True
        for t in range(m):
            if gram[took[t], j] >= threshold:
                ok = False
                break
        if ok:
            accept[j] = True
            took[m] = j
            m += 1
    return accept


def deita_order(emb: np.ndarray, scores: np.ndarray, k: int, threshold: float = THRESHOLD,
                block: int = BLOCK) -> tuple[np.ndarray, int]:
    """(order of k samples, how many the diversity pass took before the fill)."""
    ranked = score_order(scores)
    k = min(k, len(ranked))
    emb = np.asarray(emb, dtype=np.float32)
    taken = np.empty((k, emb.shape[1]), dtype=np.float32)
    order: list[np.ndarray] = []
    m = 0
    for lo in range(0, len(ranked), block):
        if m >= k:
            break
        cand = ranked[lo:lo + block]
        x = emb[cand]
        prev_max = (x @ taken[:m].T).max(axis=1) if m else np.full(len(cand), -np.inf, np.float32)
        accept = _resolve(prev_max.astype(np.float64), (x @ x.T).astype(np.float64), threshold, k - m)
        got = cand[accept]
        taken[m:m + len(got)] = x[accept]
        order.append(got)
        m += len(got)
    chosen = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    passed = len(chosen)
    if passed < k:
        mask = np.ones(len(scores), dtype=bool)
        mask[chosen] = False
        chosen = np.concatenate([chosen, ranked[mask[ranked]][:k - passed]])
    return chosen.astype(np.int64), passed


def check_options(options: dict) -> None:
    if not 0.0 < options["threshold"] <= 1.0:
        raise ValueError(f"deita.threshold must be in (0, 1], got {options['threshold']}")


def select(pool: ComparePool, k: int, seed: int = 0, threshold: float = THRESHOLD) -> np.ndarray:
    return deita_order(pool.embeddings, pool.scores, k, threshold)[0]
