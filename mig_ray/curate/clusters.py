"""Clusters of duplicates: the connected components of the verified pairs. Of each cluster the
lowest input position is kept (as the selection's tie rule keeps the lowest) and every other member
is dropped with that kept record as its twin."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def keep_lowest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept, dropped) per dropped record, sorted by the dropped position: every position of a
    component other than its lowest, with that lowest. Memory is of the pairs, not the pool: the
    positions are renumbered over those that occur in a pair."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    m = len(nodes)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (inverse[:len(a)], inverse[len(a):])), shape=(m, m))
    _, label = connected_components(graph, directed=False)
    lowest = np.full(label.max() + 1, m, dtype=np.int64)
    np.minimum.at(lowest, label, np.arange(m))  # nodes are sorted: the least index is the least position
    kept = lowest[label]
    dropped = np.flatnonzero(kept != np.arange(m))
    return nodes[kept[dropped]], nodes[dropped]
