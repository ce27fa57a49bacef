"""LabelGraph: the semantic label graph of MIG and its propagation matrix.

Nodes are the distinct (valid) labels the selectable pool carries, sorted; edges join labels whose
unit-normalised embeddings have cosine >= threshold. Similarities are computed in chunks of rows so
that no dense L x L matrix is ever held (100K labels stay in a few hundred MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

Propagation = Literal["target", "source"]


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Unit-normalise rows (float32); zero rows are an error, they have no direction."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2:
        raise ValueError(f"label embeddings must be a 2-D array [L, d], got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("label embeddings contain NaN or inf")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} label embeddings are all zeros")
    return e / norms


CHUNK_ROWS = 256  # rows per similarity product: at 100K labels one product holds 100 MB of float32


def _strictly_upper(m: int) -> np.ndarray:
    return np.triu(np.ones((m, m), dtype=bool), 1)


def _upper_chunks(unit: np.ndarray):
    """(c, cos(rows c..c+CHUNK_ROWS, columns c..L)) for each chunk start c.

    Each unordered pair is computed once, in the chunk of its lower index, and mirrored: W is exactly
    symmetric and half the products of a full Gram matrix are skipped. A product's shape depends on
    (L, c) alone, so every pair's cosine (BLAS picks its kernel, and so its summation order, by
    shape) is one fixed answer, and no dense L x L matrix is ever held.
    """
    n = unit.shape[0]
    for c in range(0, n, CHUNK_ROWS):
        yield c, unit[c:c + CHUNK_ROWS] @ unit[c:].T


def similarity_graph(unit: np.ndarray, threshold: float) -> sp.csr_matrix:
    """Sparse W with W[p,q] = cos(p,q) where cos >= threshold, diagonal always kept (self-similarity)."""
    n = unit.shape[0]
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float64)
    rows, cols, vals, diag = [], [], [], np.empty(n, dtype=np.float64)
    for c, s in _upper_chunks(unit):
        m = s.shape[0]
        diag[c:c + m] = s[np.arange(m), np.arange(m)]
        keep = s >= threshold
        keep[:, :m] &= _strictly_upper(m)  # pairs p < q only
        flat = np.flatnonzero(keep)
        r, q = np.divmod(flat, s.shape[1])
        rows.append(r + c)
        cols.append(q + c)
        vals.append(s.ravel()[flat].astype(np.float64))
    r, q, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    idx = np.arange(n)
    coords = (np.concatenate([r, q, idx]), np.concatenate([q, r, idx]))
    w = sp.csr_matrix((np.concatenate([v, v, diag]), coords), shape=(n, n))
    w.sort_indices()
    return w


def threshold_for_degree(unit: np.ndarray, degree: float) -> float:
    """The cosine threshold whose graph has mean (off-diagonal) degree closest to `degree` from above,
    and never below 0 (a negative cosine would be a negative edge weight).

    Mean degree D means D*L/2 undirected pairs; the threshold is the similarity of the
    (D*L/2)-th most similar pair, found chunk by chunk while keeping a running top list.
    """
    n = unit.shape[0]
    pairs = degree * n / 2.0
    if pairs >= n * (n - 1) // 2:  # also an infinite degree, which round() cannot take
        return 0.0
    m = int(round(pairs))
    if m <= 0:
        return float("inf")
    best = np.empty(0, dtype=np.float32)
    floor = -np.inf
    for _, s in _upper_chunks(unit):
        keep = s >= floor
        keep[:, :s.shape[0]] &= _strictly_upper(s.shape[0])  # pairs p < q once
        cand = s[keep]
        best = np.concatenate([best, cand])
        if best.size > m:
            best = np.partition(best, best.size - m)[best.size - m:]
            floor = best.min()
    return max(float(best.min()), 0.0)


@dataclass
class GraphStats:
    labels: int
    edges: int
    mean_degree: float
    isolated: int
    isolated_share: float
    threshold: float

    def line(self) -> str:
        return (f"label graph: {self.labels} labels, {self.edges} edges (cos >= {self.threshold:.4f}), "
                f"mean degree {self.mean_degree:.2f}, isolated {self.isolated_share:.1%}")


@dataclass
class LabelGraph:
    """Vocabulary (sorted), unit label embeddings and the thresholded similarity matrix W."""

    labels: list[str]
    embeddings: np.ndarray
    W: sp.csr_matrix
    threshold: float

    @classmethod
    def build(cls, labels: list[str], embeddings: np.ndarray, threshold: float | None = 0.9,
              target_degree: float | None = None) -> LabelGraph:
        """Build from labels and their embeddings (any order; nodes end up sorted)."""
        if len(labels) != len(embeddings):
            raise ValueError(f"{len(labels)} labels but {len(embeddings)} embeddings")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        idx = sorted(range(len(labels)), key=labels.__getitem__)
        labels = [labels[i] for i in idx]
        unit = normalise(np.asarray(embeddings)[idx]) if len(labels) else np.zeros((0, 1), np.float32)
        if target_degree is not None:
            threshold = threshold_for_degree(unit, target_degree)
        if threshold is None:
            raise ValueError("give a similarity threshold or a target degree")
        return cls(labels, unit, similarity_graph(unit, threshold), float(threshold))

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def stats(self) -> GraphStats:
        n = self.n_labels
        deg = np.diff(self.W.indptr) - 1  # minus the diagonal
        edges = int(deg.sum() // 2)
        isolated = int(np.sum(deg == 0))
        return GraphStats(n, edges, float(deg.mean()) if n else 0.0, isolated,
                          isolated / n if n else 0.0, self.threshold)

    def propagation(self, mode: Propagation = "target", prop_weight: float = 1.0) -> sp.csr_matrix:
        """P from W' = diag(W) + prop_weight * offdiag(W).

        target: P = W' / colsum(W') (what the released code runs); source: P = W' / rowsum(W')
        (each label spreads one unit of information).
        """
        if prop_weight < 0:
            raise ValueError(f"prop_weight must be >= 0, got {prop_weight}")
        w = self.W.tocoo()
        vals = np.where(w.row == w.col, w.data, prop_weight * w.data)
        wp = sp.csr_matrix((vals, (w.row, w.col)), shape=self.W.shape)
        wp.sort_indices()
        if mode == "target":
            denom = np.asarray(wp.sum(axis=0)).ravel()
            p = wp @ sp.diags(1.0 / denom)
        elif mode == "source":
            denom = np.asarray(wp.sum(axis=1)).ravel()
            p = sp.diags(1.0 / denom) @ wp
        else:
            raise ValueError(f"propagation must be 'target' or 'source', got {mode!r}")
        p = sp.csr_matrix(p)
        p.sort_indices()
        return p

    def save(self, path: str | Path) -> None:
        w = self.W
        np.savez(path, labels=np.array(self.labels, dtype=str), embeddings=self.embeddings,
                 w_indptr=w.indptr, w_indices=w.indices, w_data=w.data, threshold=self.threshold)

    @classmethod
    def load(cls, path: str | Path) -> LabelGraph:
        with np.load(path, allow_pickle=False) as z:
            labels = [str(s) for s in z["labels"]]
            n = len(labels)
            w = sp.csr_matrix((z["w_data"], z["w_indices"], z["w_indptr"]), shape=(n, n))
            return cls(labels, z["embeddings"], w, float(z["threshold"]))
