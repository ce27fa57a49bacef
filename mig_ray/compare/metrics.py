"""The measures every compared method gets, from its order alone.

- information: E(D) = sum_l phi(x_l) on this run's label graph: MIG's own objective (which `mig`
  maximises greedily, so it favours `mig` by construction);
- label_coverage: share of the pool's graph labels carried by at least one selected sample;
- mass_coverage: share of the pool's label mass (sum over labels of the samples carrying them)
  that sits on labels the selection covers;
- effective_labels: exp of the entropy of the selection's label counts;
- mean_score, mean_labels (distinct valid labels per sample);
- vendi: the Vendi score, exp of the entropy of the eigenvalues of K/n with K the cosine
  similarities, on sample embeddings when the run has them, else on the propagated label vectors
  (`vendi_on` says which; samples without labels have no direction there and are left out), on a
  seeded subsample of at most VENDI_MAX (embeddings) or VENDI_MAX_LABELS (label vectors) selected
  samples;
- tokens: the summed cost of the selected samples (tokens, or the unit of --cost) when the run has a
  budget (None otherwise); groups: selected samples per group when the run has --groups.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import scipy.sparse as sp

from mig_ray.compare.keys import smallest_keys
from mig_ray.compare.pool import ComparePool, unit_rows
from mig_ray.core import increments
from mig_ray.core.objective import GainMode, Phi, information
from mig_ray.core.stats import information_curve

VENDI_MAX = 5000  # on sample embeddings (a d x d eigenproblem, d the embedding size)
VENDI_MAX_LABELS = 1000  # on label vectors: up to min(n, labels) squared, so a smaller subsample


def keys_and_gains(vectors: sp.csr_matrix, order: np.ndarray, phi: Phi,
                   mode: GainMode = "gradient") -> tuple[np.ndarray, np.ndarray]:
    """MIG's greedy key and the increase of E(D) as each sample joins, in the method's order."""
    chosen = vectors[np.asarray(order, dtype=np.int64)]
    return increments.keys_and_gains(phi, mode, chosen.indptr, chosen.indices, chosen.data, vectors.shape[1])


def marginal_gains(vectors: sp.csr_matrix, order: np.ndarray, phi: Phi) -> np.ndarray:
    """The increase of E(D) as each sample joins, in the method's order."""
    return keys_and_gains(vectors, order, phi, "exact")[1]


def vendi(x: np.ndarray | sp.spmatrix) -> float:
    """Vendi score of rows x (cosine kernel): from the d x d Gram X^T X / n, whose nonzero
    eigenvalues are those of K / n (d is the number of nonzero columns when x is sparse)."""
    n = x.shape[0]
    if n == 0:
        return 0.0
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        x = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x
        cols = np.unique(x.indices)
        x = x[:, cols].toarray()
    else:
        x = unit_rows(x).astype(np.float64)
    if x.shape[1] > n:
        gram = x @ x.T
    else:
        gram = x.T @ x
    lam = np.linalg.eigvalsh(gram / n)
    lam = lam[lam > 1e-12]
    return float(np.exp(-np.sum(lam * np.log(lam))))


def metrics(pool: ComparePool, order: np.ndarray, seed: int = 0) -> dict:
    """All measures of one order (see the module docstring)."""
    order = np.asarray(order, dtype=np.int64)
    n_labels = pool.e.shape[1]
    pool_carriers = np.bincount(pool.e.indices, minlength=n_labels)
    sel = pool.e[order]
    sel_carriers = np.bincount(sel.indices, minlength=n_labels)
    chosen = pool.vectors[order]
    x = np.bincount(chosen.indices, weights=chosen.data, minlength=n_labels)
    in_pool = pool_carriers > 0
    covered = (sel_carriers > 0) & in_pool
    total = sel_carriers.sum()
    p = sel_carriers[sel_carriers > 0] / total if total else np.zeros(0)
    cap = VENDI_MAX if pool.embeddings is not None else VENDI_MAX_LABELS
    sub = order[np.sort(smallest_keys(seed, len(order), cap))] if len(order) > cap else order
    if pool.embeddings is not None:
        v, on = vendi(pool.embeddings[sub]), f"sample embeddings ({pool.embeddings_source})"
    else:
        rows = pool.vectors[sub]
        labelled = np.diff(rows.indptr) > 0  # a sample with no label has no direction: left out
        v, on = vendi(rows[labelled]), "propagated label vectors"
        if not labelled.all():
            on += f" ({int((~labelled).sum()):,} selected samples without labels left out)"
    if len(sub) < len(order):
        on += f", seeded subsample of {len(sub):,} of {len(order):,} selected"
    return {
        "samples": int(len(order)),
        "information": information(pool.phi, x),
        "label_coverage": float(covered.sum() / in_pool.sum()) if in_pool.any() else 0.0,
        "mass_coverage": float(pool_carriers[covered].sum() / pool_carriers.sum()) if in_pool.any() else 0.0,
        "effective_labels": float(np.exp(-np.sum(p * np.log(p)))) if p.size else 0.0,
        "mean_score": float(pool.scores[order].mean()) if len(order) else 0.0,
        "mean_labels": float(np.diff(sel.indptr).mean()) if len(order) else 0.0,
        "vendi": v,
        "vendi_on": on,
        "tokens": float(np.sum(pool.costs[order])) if pool.costs is not None else None,
        "groups": None if pool.groups is None else dict(zip(
            pool.group_names or [], np.bincount(pool.groups[order], minlength=len(pool.group_names or []))
            .tolist(), strict=True)),
    }


def curve(pool: ComparePool, order: np.ndarray) -> dict[str, list]:
    """E(D_k) of the first k samples of the order, at up to 200 sizes (for the report's chart)."""
    chosen = pool.vectors[np.asarray(order, dtype=np.int64)]
    return information_curve(pool.phi, chosen.indptr, chosen.indices, chosen.data, pool.vectors.shape[1])


def overlap(orders: dict[str, np.ndarray]) -> dict[str, float]:
    """Jaccard |A ∩ B| / |A ∪ B| of every pair of methods' selected sets, keyed 'a|b'."""
    sets = {name: set(np.asarray(o).tolist()) for name, o in orders.items()}
    out = {}
    for a, b in combinations(sets, 2):
        union = len(sets[a] | sets[b])
        out[f"{a}|{b}"] = len(sets[a] & sets[b]) / union if union else 1.0
    return out
