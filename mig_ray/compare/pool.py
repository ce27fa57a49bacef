"""What every compared method sees: the selectable records of one pool, as arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from mig_ray.core.graph import LabelGraph
from mig_ray.core.limits import Limits, RowLimits
from mig_ray.core.objective import GainMode, Phi


@dataclass
class ComparePool:
    """The selectable records in input order (position i is the i-th selectable record).

    `e` holds each sample's distinct valid labels (graph nodes) with its score; `vectors` the
    propagated ê = e P that MIG's objective is measured on; `embeddings` unit-normalised sample
    embeddings [N, d] when the run has them (deita, kcenter, car, qdit, Vendi); `response_chars` the
    characters of each sample's assistant turns when a method needs text (longest); `limits` with
    `groups` and `costs` the constraints every method's order is put under (compare/run.py).
    """

    ids: list[str]
    scores: np.ndarray
    e: sp.csr_matrix
    vectors: sp.csr_matrix
    graph: LabelGraph
    phi: Phi
    gain: GainMode = "gradient"
    embeddings: np.ndarray | None = None
    embeddings_source: str | None = None
    mig_order: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    response_chars: np.ndarray | None = None
    limits: Limits | None = None  # the selection's quotas, floors and budget (None: none given)
    groups: np.ndarray | None = None  # each sample's group code (into group_names), with --groups
    group_names: list[str] | None = None
    costs: np.ndarray | None = None  # each sample's cost (tokens or --cost), with --budget-tokens

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> RowLimits:
        """Each sample's group code and cost as the greedy and the compare filter read them."""
        return RowLimits.of(len(self), self.groups, self.costs)

    def label_counts(self) -> np.ndarray:
        """Distinct valid labels per sample."""
        return np.diff(self.e.indptr).astype(np.int64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
