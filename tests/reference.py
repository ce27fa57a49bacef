"""An independent naive dense float64 MIG greedy: the oracle the engine is checked against.

Written from MISSION.md's method section without using mig_ray's code: dense E, dense P,
full rescan of every remaining candidate every round, ties to the lowest input position.
Row sums are taken left to right (cumsum) so that rows with equal terms tie exactly.
"""

from __future__ import annotations

import numpy as np


def dense_graph(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    unit = embeddings.astype(np.float32)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    s = (unit @ unit.T).astype(np.float64)
    w = np.where(s >= np.float32(threshold), s, 0.0)
    np.fill_diagonal(w, np.diag(s))
    return w


def phi_value(family: str, x, a=1e-6, b=0.8, alpha=1.0):
    return (x + a) ** b if family == "pow" else 1.0 - np.exp(-alpha * x)


def phi_grad(family: str, x, a=1e-6, b=0.8, alpha=1.0):
    return b * (x + a) ** (b - 1.0) if family == "pow" else alpha * np.exp(-alpha * x)


def propagated(label_lists, scores, nodes, w, propagation="target", prop_weight=1.0, norm=False):
    col = {name: j for j, name in enumerate(nodes)}
    e = np.zeros((len(label_lists), len(nodes)))
    for i, labels in enumerate(label_lists):
        kept = {lab for lab in labels if lab in col}
        for lab in kept:
            e[i, col[lab]] = scores[i] / len(kept) if norm else scores[i]
    diag = np.diag(np.diag(w))
    wp = diag + prop_weight * (w - diag)
    if propagation == "target":
        p = wp / wp.sum(axis=0, keepdims=True)
    else:
        p = wp / wp.sum(axis=1, keepdims=True)
    return e @ p


def naive_greedy(ehat: np.ndarray, k: int, family="pow", gain="gradient", a=1e-6, b=0.8, alpha=1.0):
    n, L = ehat.shape
    x = np.zeros(L)
    left = np.ones(n, dtype=bool)
    order, gains = [], []
    for _ in range(min(k, n)):
        if gain == "gradient":
            terms = phi_grad(family, x, a, b, alpha)[None, :] * ehat
        else:
            before = phi_value(family, x, a, b, alpha)[None, :]
            terms = phi_value(family, x[None, :] + ehat, a, b, alpha) - before
        g = np.cumsum(terms, axis=1)[:, -1] if L else np.zeros(n)
        g = np.where(left, g, -np.inf)
        i = int(np.argmax(g))
        order.append(i)
        gains.append(g[i])
        left[i] = False
        x = x + ehat[i]
    return np.array(order, dtype=np.int64), np.array(gains)
