"""The MIG information measure: concave phi families, E(D) and per-sample gains.

Everything here is float64 numpy; the compiled greedy loop (greedy.py) evaluates the same
formulas through `Phi.code()`, so the two must stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

PhiFamily = Literal["pow", "exp"]
GainMode = Literal["gradient", "exact"]

PHI_POW = 0
PHI_EXP = 1
GAIN_GRADIENT = 0
GAIN_EXACT = 1


@dataclass(frozen=True)
class Phi:
    """A concave increasing phi: `pow` (x+a)^b or `exp` 1-exp(-alpha x)."""

    family: PhiFamily = "pow"
    a: float = 1e-6
    b: float = 0.8
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.family not in ("pow", "exp"):
            raise ValueError(f"phi family must be 'pow' or 'exp', got {self.family!r}")
        if self.family == "pow":
            if not (0.0 < self.b < 1.0):
                raise ValueError(f"phi pow needs 0 < b < 1 (concave, increasing), got b={self.b}")
            if not self.a > 0.0:
                raise ValueError(f"phi pow needs a > 0 (phi' finite at 0), got a={self.a}")
        elif not self.alpha > 0.0:
            raise ValueError(f"phi exp needs alpha > 0, got alpha={self.alpha}")

    def value(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.family == "pow":
            return (x + self.a) ** self.b
        return 1.0 - np.exp(-self.alpha * x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.family == "pow":
            return self.b * (x + self.a) ** (self.b - 1.0)
        return self.alpha * np.exp(-self.alpha * x)

    def code(self) -> tuple[int, float, float, float]:
        """(family id, a, b, alpha) for the compiled loop."""
        return (PHI_POW if self.family == "pow" else PHI_EXP, self.a, self.b, self.alpha)


def gain_code(mode: GainMode) -> int:
    if mode == "gradient":
        return GAIN_GRADIENT
    if mode == "exact":
        return GAIN_EXACT
    raise ValueError(f"gain mode must be 'gradient' or 'exact', got {mode!r}")


def information(phi: Phi, x: np.ndarray) -> float:
    """E = sum_l phi(x_l) for the label mass vector x."""
    return float(np.sum(phi.value(x)))


def label_mass(vectors: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """x = sum of the propagated vectors of `rows` (added in the given order)."""
    x = np.zeros(vectors.shape[1], dtype=np.float64)
    indptr, indices, data = vectors.indptr, vectors.indices, vectors.data
    for r in rows:
        lo, hi = indptr[r], indptr[r + 1]
        x[indices[lo:hi]] += data[lo:hi]
    return x


def gains(phi: Phi, mode: GainMode, x: np.ndarray, vectors: sp.csr_matrix) -> np.ndarray:
    """Gain of every row of `vectors` against the current mass x (vectorised, for checks and reports)."""
    coo = vectors.tocoo()
    xl = x[coo.col]
    if gain_code(mode) == GAIN_GRADIENT:
        terms = phi.grad(xl) * coo.data
    else:
        terms = phi.value(xl + coo.data) - phi.value(xl)
    return np.bincount(coo.row, weights=terms, minlength=vectors.shape[0])
