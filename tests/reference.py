"""An independent naive dense float64 MIG greedy: the oracle the engine is checked against.

Written from MISSION.md's method section without using mig_ray's code: its own dense label graph
from the label embeddings, dense E, dense P, a full rescan of every remaining candidate every
round, and the tie rule: with m the round's best gain, every gain >= m - TIE * |m| ties and the
lowest input position among them wins. Row sums are taken left to right (cumsum).

The graph's edge rule near the threshold, written down: the cosine is the float32 dot product of
the float32 unit-normalised embeddings, and an edge exists when it is >= T rounded to float32
(float32 decides, not a float64 recomputation). Two float32 products of the same pair summed in a
different order may differ by a few ulps, so only pairs whose float32 cosine lies within
`EDGE_ULPS` float32 ulps of T may be decided either way; every other pair, however close to T,
must be decided as here (tests/test_graph.py).
"""

from __future__ import annotations

import numpy as np

TIE = 1e-9
EDGE_ULPS = 4


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    unit = np.asarray(embeddings, dtype=np.float32)
    return unit / np.linalg.norm(unit, axis=1, keepdims=True)


def dense_graph(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """W over the rows as given: float32 cosines >= float32(T) kept, the diagonal always kept."""
    unit = unit_rows(embeddings)
    s = (unit @ unit.T).astype(np.float64)
    w = np.where(s >= np.float32(threshold), s, 0.0)
    np.fill_diagonal(w, np.diag(s))
    return w


def reference_graph(label_lists, vocab, embeddings, threshold, valid=None):
    """Nodes (the distinct labels the samples carry, `valid` ones only, sorted) and their dense W,
    from the vocabulary's embeddings alone."""
    row = {name: i for i, name in enumerate(vocab)}
    nodes = sorted({lab for labels in label_lists for lab in labels if valid is None or lab in valid})
    return nodes, dense_graph(np.asarray(embeddings)[[row[n] for n in nodes]], threshold)


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


def all_gains(ehat: np.ndarray, x: np.ndarray, family: str, gain: str, a: float, b: float,
              alpha: float) -> np.ndarray:
    """Every row's gain at x by a full rescan (gradient: phi'(x)·ê; exact: E(x + ê) - E(x)),
    summed left to right over the labels."""
    n, L = ehat.shape
    if gain == "gradient":
        terms = phi_grad(family, x, a, b, alpha)[None, :] * ehat
    else:
        before = phi_value(family, x, a, b, alpha)[None, :]
        terms = phi_value(family, x[None, :] + ehat, a, b, alpha) - before
    return np.cumsum(terms, axis=1)[:, -1] if L else np.zeros(n)


def naive_greedy(ehat: np.ndarray, k: int, family="pow", gain="gradient", a=1e-6, b=0.8, alpha=1.0):
    n, L = ehat.shape
    x = np.zeros(L)
    left = np.ones(n, dtype=bool)
    order, gains = [], []
    for _ in range(min(k, n)):
        g = all_gains(ehat, x, family, gain, a, b, alpha)
        g = np.where(left, g, -np.inf)
        m = g.max()
        i = int(np.flatnonzero(left & (g >= m - TIE * abs(m)))[0])
        order.append(i)
        gains.append(g[i])
        left[i] = False
        x = x + ehat[i]
    return np.array(order, dtype=np.int64), np.array(gains)


def reference_order(label_lists, scores, vocab, embeddings, k, threshold=0.9, propagation="target",
                    prop_weight=1.0, norm=False, family="pow", gain="gradient", a=1e-6, b=0.8, alpha=1.0):
    """The selection end to end from labels, scores and label embeddings: (order, gains, nodes, ehat)."""
    nodes, w = reference_graph(label_lists, vocab, embeddings, threshold)
    ehat = propagated(label_lists, scores, nodes, w, propagation, prop_weight, norm)
    order, gains = naive_greedy(ehat, k, family, gain, a, b, alpha)
    return order, gains, nodes, ehat


def naive_limited_greedy(ehat: np.ndarray, k: int, groups, caps, costs, budget=np.inf, key="gain",
                         family="pow", gain="gradient", a=1e-6, b=0.8, alpha=1.0, floors=None):
    """The greedy under per-group caps and a budget, by full rescans: each round the candidates are
    the remaining samples whose group count is below its cap and whose cost fits what is left of
    the budget (the used budget summed one cost at a time in pick order); the key is the gain, or
    gain / cost with key="ratio"; the tie rule applies to the key. Stops at k picks or when nothing
    fits. With `floors` (a count per group code), first, for each group with a floor in code order,
    rounds among that group's samples only until it holds its floor (or nothing of it fits), gains
    at everything picked so far; then the rounds above over every group. Returns (order, keys, x)."""
    n, L = ehat.shape
    groups, caps = np.asarray(groups), np.asarray(caps)
    costs = np.asarray(costs, dtype=np.float64)
    x = np.zeros(L)
    left = np.ones(n, dtype=bool)
    counts = np.zeros(len(caps), dtype=np.int64)
    used = 0.0
    order, keys = [], []
    phases = [(g, int(f)) for g, f in enumerate(floors) if f > 0] if floors is not None else []
    for only, floor in phases + [(None, None)]:
        while len(order) < k:
            fits = left & (counts[groups] < caps[groups]) & (used + costs <= budget)
            if only is not None:
                fits &= (groups == only) & (counts[only] < floor)
            if not fits.any():
                break
            g = all_gains(ehat, x, family, gain, a, b, alpha)
            kv = g / costs if key == "ratio" else g
            kv = np.where(fits, kv, -np.inf)
            m = kv.max()
            i = int(np.flatnonzero(fits & (kv >= m - TIE * abs(m)))[0])
            order.append(i)
            keys.append(kv[i])
            left[i] = False
            counts[groups[i]] += 1
            used = used + costs[i]
            x = x + ehat[i]
    return np.array(order, dtype=np.int64), np.array(keys), x


def naive_budgeted(ehat: np.ndarray, k: int, groups, caps, costs, budget, family="pow", gain="gradient",
                   a=1e-6, b=0.8, alpha=1.0, floors=None):
    """Under a budget that can bind (below the pool's total cost): the cost-benefit and the plain gain
    greedy, the one of higher E = sum phi(x) kept, cost-benefit on equal E. A budget that cannot bind
    is no budget: the plain greedy. Returns (order, keys, which)."""
    kw = dict(family=family, gain=gain, a=a, b=b, alpha=alpha, floors=floors)
    if not budget < float(np.sum(costs)):
        return (*naive_limited_greedy(ehat, k, groups, caps, costs, budget, "gain", **kw)[:2], "gain")
    ratio = naive_limited_greedy(ehat, k, groups, caps, costs, budget, "ratio", **kw)
    plain = naive_limited_greedy(ehat, k, groups, caps, costs, budget, "gain", **kw)
    e_ratio, e_plain = (float(np.sum(phi_value(family, r[2], a, b, alpha))) for r in (ratio, plain))
    if e_plain > e_ratio:
        return plain[0], plain[1], "gain"
    return ratio[0], ratio[1], "ratio"
