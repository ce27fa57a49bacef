"""MinHash signatures of word n-gram shingles, and the LSH band keys that make near duplicates meet.

The permutations are datasketch's (`MinHash(num_perm, seed, scheme="affine32")`: each 32-bit input
hash is pre-mixed by the MurmurHash3 finalizer, then permutation k is `a_k * h + b_k mod 2^32`
with `a_k` odd); `signatures` applies them to every shingle of a block of records at once with numpy
and takes each record's minimum, which is what datasketch's `update_batch` computes one record at a
time (a test checks they agree value for value). Measured on this machine (bench/bench_dedup.py,
`libraries`): datasketch record by record and rensa (whose digests leave Rust only as Python lists)
were both slower per record than this vectorised form of datasketch's own scheme.

Banding: `bands` bands of `rows = num_perm // bands` values; two records whose signatures agree on
every value of some band share that band's key and become a candidate pair. With Jaccard s the
chance of that is 1 - (1 - s^rows)^bands (`collision_probability`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the shingle fold's multiplier


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's affine32 pre-mix), element-wise on uint32."""
    h = h.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, element-wise on uint64: an avalanching bijection."""
    h = h.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a, b), each uint32 [num_perm]."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


def ngram_hashes(word_hashes: np.ndarray, counts: np.ndarray, n: int,
                 short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of every record's word n-grams, and each record's n-gram count.

    `word_hashes` (uint64) are the words of all records back to back, `counts` how many each record
    has. With `short`, a record of fewer than n words (but at least one) is one n-gram of all its
    words; without, it has none. An n-gram's hash folds its word hashes in order (h * P + w), then
    mixes; equal word sequences, equal hashes."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    ends = np.cumsum(counts)
    starts = ends - counts
    per = np.maximum(counts - n + 1, 1 if short else 0)
    per[counts == 0] = 0
    rec = np.repeat(np.arange(len(counts)), per)
    first = np.repeat(starts, per) + (np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per))
    end = ends[rec]
    h = np.zeros(len(first), dtype=np.uint64)
    w = np.asarray(word_hashes, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for t in range(n):
            at = first + t
            word = w[np.minimum(at, total - 1)] if total else np.zeros(len(at), np.uint64)
            h = h * _PRIME + np.where(at < end, word, np.uint64(0))
    return fmix64(h), per


def shingle_hashes(word_hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit shingle hashes MinHash takes (the top half of `ngram_hashes`, short records as one
    shingle), and each record's shingle count."""
    h, per = ngram_hashes(word_hashes, counts, n, short=True)
    return (h >> np.uint64(32)).astype(np.uint32), per


def signatures(shingles: np.ndarray, per_record: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """uint32 [records, num_perm]: each record's minimum of every permutation over its shingles
    (datasketch's affine32 MinHash); a record without shingles keeps the empty value 2^32 - 1."""
    a, b = permutations(num_perm, seed)
    per_record = np.asarray(per_record, dtype=np.int64)
    out = np.full((len(per_record), num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    some = np.flatnonzero(per_record > 0)
    if not len(some):
        return out
    offsets = np.cumsum(per_record) - per_record
    hv = fmix32(np.asarray(shingles, dtype=np.uint32))
    from mig_ray.curate.compiled import min_hashes  # numba: imported where signatures are made, not
    # by every process that imports this module (a job's driver: about 65 MB)

    min_hashes(hv, offsets, per_record, a.astype(np.uint32), b.astype(np.uint32), out)
    return out




def band_keys(sig: np.ndarray, bands: int) -> np.ndarray:
    """uint64 [records, bands]: band j's key folds its `num_perm // bands` values and mixes, with j
    folded in first so that equal values in different bands are different keys."""
    rows = sig.shape[1] // bands
    out = np.empty((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            h = np.full(sig.shape[0], np.uint64(j + 1), dtype=np.uint64)
            for v in sig[:, j * rows:(j + 1) * rows].T:
                h = h * _PRIME + v.astype(np.uint64)
            out[:, j] = fmix64(h)
    return out


def collision_probability(similarity: float, bands: int, rows: int) -> float:
    """The chance that two records of this Jaccard share at least one band key."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row by row: the fraction of permutations on which two signatures agree."""
    return (sig_a == sig_b).mean(axis=1)


def word_hashes(records: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hash of every word of every record, back to back, and each record's word count;
    each distinct word is hashed once (blake2b of its UTF-8)."""
    from mig_ray.curate.text import text_hashes

    index: dict[str, int] = {}
    codes = [index.setdefault(w, len(index)) for ws in records for w in ws]
    unique = text_hashes(list(index))
    counts = np.fromiter((len(ws) for ws in records), dtype=np.int64, count=len(records))
    return unique[np.asarray(codes, dtype=np.int64)] if codes else np.zeros(0, np.uint64), counts
