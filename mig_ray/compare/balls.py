"""Groups of nearby sample vectors, each with a centre and a radius, so that exact searches (knn's
neighbours, kcenter's distance updates) can skip a whole group by the triangle inequality.

How the groups are made only decides how much is skipped, never a result. Pivots come from greedy
farthest-point (kcenter_order) on a seeded subsample, taken up to the "knee" where the cover radius
first halves (one pivot per natural cluster on clustered data, `max_pivots` on data without clusters);
every sample joins its nearest pivot. Samples farther from their pivot than the subsample's cover
radius (clusters the subsample missed) are grouped again by another round on them alone, so that a
rare cluster does not widen some other group. A group's centre is the mean of its members and its
radius the largest member distance to it, both in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# (rows, m, seed) -> positions of the first m samples of a farthest-point (k-center) order
Farthest = Callable[[np.ndarray, int, int], np.ndarray]

SAMPLE = 16_384  # subsample each round's pivots are drawn from
MAX_PIVOTS = 8_192  # in all rounds; at 1M x 384 with 4,531 clusters, 4,096 left a last round of mixed groups
ROUNDS = 4
ROWS = 16_384  # samples per block when summing groups
ASSIGN_ROWS = 4_096  # samples per matrix product when assigning ([4096, 8192] float32: 128 MiB)


@dataclass(frozen=True)
class Groups:
    """perm: sample positions in group order; starts: group g is perm[starts[g]:starts[g + 1]];
    centres [G, d] and radius [G] (float64); max_norm [G]: the largest member norm."""

    perm: np.ndarray
    starts: np.ndarray
    centres: np.ndarray
    radius: np.ndarray
    max_norm: np.ndarray

    def __len__(self) -> int:
        return len(self.starts) - 1


def _pivots(x: np.ndarray, farthest: Farthest, seed: int, sample: int,
            max_pivots: int) -> tuple[np.ndarray, float]:
    """(pivot rows, cover radius of the subsample, or inf when no knee was found)."""
    rng = np.random.default_rng(seed)
    sub = x if len(x) <= sample else x[np.sort(rng.choice(len(x), sample, replace=False))]
    m_max = max(1, min(len(sub), max_pivots, max(1, len(sub) // 4)))
    piv = np.asarray(sub, dtype=np.float64)[farthest(sub, m_max, seed)]
    if m_max < 2:
        return piv.astype(np.float32), np.inf
    sq = np.einsum("ij,ij->i", piv, piv)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (piv @ piv.T)
    d2[np.triu_indices(m_max)] = np.inf
    cover = np.sqrt(np.maximum(d2.min(axis=1)[1:], 0.0))  # cover[m - 1]: radius of the first m pivots
    knee = np.flatnonzero(cover <= cover[0] / 2.0)
    if len(knee) == 0:
        return piv.astype(np.float32), np.inf
    m = int(knee[0]) + 1
    return piv[:m].astype(np.float32), float(cover[m - 1])


def _assign(x: np.ndarray, piv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest pivot of each row, its squared distance), by blocked float32 products."""
    half = 0.5 * np.einsum("ij,ij->i", piv, piv)
    lab = np.empty(len(x), dtype=np.int64)
    d2 = np.empty(len(x), dtype=np.float64)
    for lo in range(0, len(x), ASSIGN_ROWS):
        b = x[lo:lo + ASSIGN_ROWS]
        s = b @ piv.T
        s -= half
        lab[lo:lo + len(b)] = s.argmax(axis=1)
        best = s[np.arange(len(b)), lab[lo:lo + len(b)]].astype(np.float64)
        d2[lo:lo + len(b)] = np.einsum("ij,ij->i", b, b, dtype=np.float64) - 2.0 * best
    return lab, d2


def make_groups(emb: np.ndarray, farthest: Farthest, seed: int = 0, sample: int = SAMPLE,
                max_pivots: int = MAX_PIVOTS, rounds: int = ROUNDS) -> Groups:
    """The groups of the rows of emb (see the module's docstring); at most max_pivots groups in all.
    `farthest` gives the pivots' order (kcenter's, passed in: kcenter itself groups with this)."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n = len(x)
    gid = np.empty(n, dtype=np.int64)
    left = np.arange(n, dtype=np.int64)
    made = 0
    for r in range(rounds):
        if len(left) == 0:
            break
        xl = x if len(left) == n else x[left]
        last = r == rounds - 1 or made >= max_pivots - 1
        piv, cap = _pivots(xl, farthest, seed + r, sample, max(1, max_pivots - made))
        lab, d2 = _assign(xl, piv)
        out = np.zeros(len(left), dtype=bool) if last else d2 > cap * cap * (1.0 + 1e-6)
        gid[left[~out]] = made + lab[~out]
        made += len(piv)
        left = left[out]
        if last:
            break
    used, gid = np.unique(gid, return_inverse=True)
    counts = np.bincount(gid, minlength=len(used))
    rank = np.empty(len(used), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(used))
    gid = rank[gid]  # largest group first: row blocks of large groups are not mixed with rare samples
    counts = np.bincount(gid, minlength=len(used))
    perm = np.argsort(gid, kind="stable").astype(np.int64)
    starts = np.zeros(len(used) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    centres = np.zeros((len(used), x.shape[1]))
    radius = np.zeros(len(used))
    max_norm = np.zeros(len(used))
    for lo in range(0, n, ROWS):  # group sums over blocks of rows in group order
        p = perm[lo:lo + ROWS]
        g = gid[p]
        seg = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        centres[g[seg]] += np.add.reduceat(x[p].astype(np.float64), seg, axis=0)
    centres /= counts[:, None]
    for lo in range(0, n, ROWS):
        p = perm[lo:lo + ROWS]
        g = gid[p]
        xb = x[p].astype(np.float64)
        np.maximum.at(radius, g, np.linalg.norm(xb - centres[g], axis=1))
        np.maximum.at(max_norm, g, np.linalg.norm(xb, axis=1))
    return Groups(perm, starts, centres, radius * (1.0 + 1e-9), max_norm * (1.0 + 1e-9))


def centre_distances(g: Groups, rows: np.ndarray) -> np.ndarray:
    """[len(rows), G] float64 distances from the centres of groups `rows` to every group centre."""
    c = g.centres
    sq = np.einsum("ij,ij->i", c, c)
    return np.sqrt(np.maximum(sq[rows][:, None] + sq[None, :] - 2.0 * (c[rows] @ c.T), 0.0))
