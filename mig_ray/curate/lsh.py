"""The candidate pairs of one bucket of band rows.

A band row is (band, key, aux, position): band j >= 0 of a record's MinHash signature with its key
and aux = the record's exact-text hash; or band -1, the exact band, with key = the exact-text hash
and aux = a hash of the record's id. Rows of equal (band, key) form a group. Inside a group, rows of
equal aux are one text (or, in the exact band, one record seen on several nights): only the lowest
position of them takes part, so a thousand exact copies give one candidate per copy in the exact
band rather than half a million pairs in every band. A group of `all_pairs_up_to` members or fewer
gives every pair; a larger one (a template filled in thousands of ways) gives the star from its
lowest position and the chain of consecutive positions, which keeps it one cluster if it is one.
"""

from __future__ import annotations

import numpy as np

EXACT_BAND = -1
ALL_PAIRS_UP_TO = 64


def group_bounds(*columns: np.ndarray) -> np.ndarray:
    """Start indices of the runs of equal rows over the (already sorted) columns, plus the end."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in columns:
        change[1:] |= c[1:] != c[:-1]
    return np.append(np.flatnonzero(change), n)


def candidate_pairs(band: np.ndarray, key: np.ndarray, aux: np.ndarray, pos: np.ndarray,
                    all_pairs_up_to: int = ALL_PAIRS_UP_TO) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs (a, b) of positions, a < b, that share a band key (see the module doc)."""
    band, key, aux, pos = (np.asarray(x) for x in (band, key, aux, pos))
    shared = shared_keys(key)  # most keys are one record's: one sort of the keys leaves them out
    band, key, aux, pos = band[shared], key[shared], aux[shared], pos[shared]
    order = np.lexsort((pos, aux, key, band))
    band, key, aux, pos = band[order], key[order], aux[order], pos[order]
    first = group_bounds(band, key, aux)[:-1]  # the lowest position of each (band, key, aux)
    band, key, pos = band[first], key[first], pos[first]
    order = np.lexsort((pos, key, band))
    band, key, pos = band[order], key[order], pos[order]
    bounds = group_bounds(band, key)
    sizes = np.diff(bounds)
    two = bounds[:-1][sizes == 2]
    a_parts, b_parts = [pos[two]], [pos[two + 1]]
    for g in np.flatnonzero(sizes > 2):
        members = pos[bounds[g]:bounds[g + 1]]
        if len(members) <= all_pairs_up_to:
            i, j = np.triu_indices(len(members), k=1)
            a_parts.append(members[i])
            b_parts.append(members[j])
        else:
            a_parts += [np.full(len(members) - 1, members[0]), members[1:-1]]
            b_parts += [members[1:], members[2:]]
    a = np.concatenate(a_parts).astype(np.int64)
    b = np.concatenate(b_parts).astype(np.int64)
    return unique_pairs(a, b)


def shared_keys(key: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows whose key another row has too: the only rows that can share
    a (band, key) group. About a quarter of the time of sorting every row by all four columns."""
    order = np.argsort(key)
    sk = key[order]
    same = sk[1:] == sk[:-1]
    shared = np.zeros(len(key), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    return np.sort(order[shared])


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs, sorted by a then b."""
    if not len(a):
        return a.astype(np.int64), b.astype(np.int64)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()
