"""Two numbers per sample of an ordered selection, with one meaning each (every manifest's columns):

- `greedy_key`: the key MIG's greedy ranks by, for the sample after the ones before it:
  phi'(x) . ê_i in `gradient` mode (the paper's Eq. 10-11), E(D + i) - E(D) in `exact` mode;
- `gain`: the increase of the information, E(D + i) - E(D), whatever the mode, so the gains of a
  manifest add up to E(D) - E(empty), the summary's information gain.
"""

from __future__ import annotations

import numba
import numpy as np

from mig_ray.core.greedy import row_gain
from mig_ray.core.objective import GAIN_EXACT, GainMode, Phi, gain_code


@numba.njit(cache=True)
def _walk(ptr, idx, val, n_labels, family, a, b, alpha, mode):
    x = np.zeros(n_labels, dtype=np.float64)
    keys = np.empty(len(ptr) - 1, dtype=np.float64)
    gains = np.empty(len(ptr) - 1, dtype=np.float64)
    for r in range(len(ptr) - 1):
        gains[r] = row_gain(ptr, idx, val, r, x, family, a, b, alpha, GAIN_EXACT)
        keys[r] = gains[r] if mode == GAIN_EXACT else row_gain(ptr, idx, val, r, x, family, a, b, alpha, mode)
        for p in range(ptr[r], ptr[r + 1]):
            x[idx[p]] += val[p]
    return keys, gains


def keys_and_gains(phi: Phi, mode: GainMode, ptr: np.ndarray, idx: np.ndarray, val: np.ndarray,
                   n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(greedy_key, gain) of each row of the selected samples' propagated vectors (CSR, in order)."""
    fam, a, b, alpha = phi.code()
    return _walk(np.asarray(ptr, dtype=np.int64), np.asarray(idx, dtype=np.int64),
                 np.asarray(val, dtype=np.float64), int(n_labels), fam, a, b, alpha, gain_code(mode))
