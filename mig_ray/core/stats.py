"""Report data computed beside a selection, identically by the local and the Ray engine.

Everything here is small: up to CURVE_POINTS information values, one count per graph label and a
SCORE_BINS histogram, so a report never has to reread the pool or rerun the greedy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from mig_ray.core.greedy import add_rows
from mig_ray.core.objective import Phi, information

CURVE_POINTS = 200
SCORE_BINS = 30


def curve_ks(k: int, points: int = CURVE_POINTS) -> np.ndarray:
    """0 (the empty set) and up to `points` evenly spaced sizes ending at k."""
    if k <= 0:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, k, min(k, points) + 1)).astype(np.int64))


def information_curve(phi: Phi, ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, n_labels: int,
                      points: int = CURVE_POINTS) -> dict[str, list]:
    """E(D_k) of the first k selected samples, from their propagated vectors (CSR rows in
    selection order), at the sizes of `curve_ks`: the shape of diminishing returns."""
    ptr = np.asarray(ptr, dtype=np.int64)
    ks = curve_ks(len(ptr) - 1, points)
    x = np.zeros(n_labels, dtype=np.float64)
    values, done = [], 0
    for k in ks.tolist():
        if k > done:
            add_rows(x, ptr[done:k + 1], idx, val)
            done = k
        values.append(information(phi, x))
    return {"k": ks.tolist(), "information": values}


def score_edges(lo: float, hi: float, bins: int = SCORE_BINS) -> np.ndarray:
    """Histogram edges over the pool's score range (a unit-wide range around a single value)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.array([0.0, 1.0])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def score_hist(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; explicit edges make per-shard histograms add up to the whole pool's."""
    return np.histogram(np.asarray(scores, dtype=np.float64), bins=edges)[0].astype(np.int64)


def carriers(label_sets: Iterable[Iterable[str]], node: dict[str, int]) -> np.ndarray:
    """Samples carrying each graph label (a label repeated within one sample counts once)."""
    counts = np.zeros(len(node), dtype=np.int64)
    for labels in label_sets:
        for name in set(labels):
            j = node.get(name)
            if j is not None:
                counts[j] += 1
    return counts


def pool_stats(call: Callable[..., list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label carriers and score histogram of a sharded pool: `call(method, *args)` asks every shard
    actor (ShardActor.score_range, ShardActor.pool_stats) and the answers are summed."""
    ranges = call("score_range")
    edges = score_edges(min((r[0] for r in ranges), default=np.inf),
                        max((r[1] for r in ranges), default=-np.inf))
    parts = call("pool_stats", edges)
    return (np.sum([p[0] for p in parts], axis=0).astype(np.int64), edges,
            np.sum([p[1] for p in parts], axis=0).astype(np.int64))


@dataclass
class ReportData:
    """What an engine hands over for the report: the selected propagated vectors in order (CSR),
    per-label carriers in the pool and the selection, and the score histogram of both."""

    ptr: np.ndarray
    idx: np.ndarray
    val: np.ndarray
    pool_carriers: np.ndarray
    selected_carriers: np.ndarray
    edges: np.ndarray
    pool_hist: np.ndarray
    selected_scores: np.ndarray

    def summary(self, phi: Phi, labels: list[str]) -> tuple[dict, dict]:
        """(the `report` section of the selection summary, the <stem>.labels.json sidecar)."""
        n_labels = len(labels)
        pool_c, sel_c = self.pool_carriers, self.selected_carriers
        covered = int(np.count_nonzero(sel_c))
        scores = np.asarray(self.selected_scores, dtype=np.float64)
        section = {
            "information_curve": information_curve(phi, self.ptr, self.idx, self.val, n_labels),
            "scores": {"edges": self.edges.tolist(), "pool": self.pool_hist.tolist(),
                       "selected": score_hist(scores, self.edges).tolist(),
                       "selected_mean": float(scores.mean()) if scores.size else None},
            "labels": {"nodes": n_labels, "in_pool": int(np.count_nonzero(pool_c)),
                       "covered_by_selection": covered,
                       "coverage": covered / n_labels if n_labels else None},
        }
        sidecar = {"labels": list(labels), "pool": pool_c.tolist(), "selected": sel_c.tolist()}
        return section, sidecar
