"""The whole of near and exact dedup over texts in memory: what the job's tasks compute over files,
composed in one process (for a pool that fits, and as the stage's reference in tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mig_ray.curate.clusters import keep_lowest
from mig_ray.curate.lsh import EXACT_BAND, candidate_pairs
from mig_ray.curate.minhash import band_keys, estimated_jaccard, text_signatures
from mig_ray.curate.text import text_hashes


@dataclass(frozen=True)
class Duplicates:
    """Per dropped record (sorted by position): its position, its kept twin's, the estimated
    Jaccard of the two and whether their normalised texts are equal."""

    dropped: np.ndarray
    kept: np.ndarray
    jaccard: np.ndarray
    exact: np.ndarray


def find_duplicates(texts: list[str], ngram: int = 5, num_perm: int = 128, bands: int = 16, seed: int = 1,
                    threshold: float = 0.8) -> Duplicates:
    """Normalised texts at positions 0..n-1 -> the records to drop (the lowest of each cluster stays)."""
    n = len(texts)
    exact = text_hashes(texts)
    sig, per = text_signatures(texts, ngram, num_perm, seed)
    pos = np.arange(n, dtype=np.int64)
    some = np.flatnonzero(per > 0)
    keys = band_keys(sig[some], bands)
    band = np.concatenate([np.full(n, EXACT_BAND, np.int16),
                           np.tile(np.arange(bands, dtype=np.int16), len(some))])
    key = np.concatenate([exact, keys.reshape(-1)])
    aux = np.concatenate([pos.astype(np.uint64), np.repeat(exact[some], bands)])
    at = np.concatenate([pos, np.repeat(some, bands)])
    a, b = candidate_pairs(band, key, aux, at)
    same = exact[a] == exact[b]
    jac = np.where(same, 1.0, estimated_jaccard(sig[a], sig[b]))
    ok = same | (jac >= threshold)
    kept, dropped = keep_lowest(a[ok], b[ok])
    same = exact[kept] == exact[dropped]
    return Duplicates(dropped, kept, np.where(same, 1.0, estimated_jaccard(sig[kept], sig[dropped])), same)
