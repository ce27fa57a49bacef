"""MinHash signatures of word n-gram shingles, and the LSH band keys that make near duplicates meet.

The permutations are datasketch's (`MinHash(num_perm, seed, scheme="affine32")`: each 32-bit input
hash is pre-mixed by the MurmurHash3 finalizer, then permutation k is `a_k * h + b_k mod 2^32`
with `a_k` odd). `text_signatures` goes from a block of normalised texts to their signatures in one
compiled pass (compiled.py): words, word hashes, n-gram shingles, minima. A test checks every value
against the regex's words, a word hash written in Python and datasketch record by record. Measured
on this machine (bench/bench_minhash_libraries.py, 20,000 records, 128 permutations of 5-grams, µs
per record of 40-80 words): this pass 3.6; rensa's bulk Rust digest 1.5 plus 23 for the Python
shingles it needs as input; datasketch's `MinHash.bulk` 67 plus the same 23. So the stage keeps
datasketch's scheme (and its permutation parameters) without calling either library per record.

Banding: `bands` bands of `rows = num_perm // bands` values; two records whose signatures agree on
every value of some band share that band's key and become a candidate pair. With Jaccard s the
chance of that is 1 - (1 - s^rows)^bands (`collision_probability`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the shingle fold's multiplier


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


def encoded_words(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 of every text back to back (uint8) and each text's offsets [len + 1], such that the
    compiled word runs (runs of [0-9A-Za-z_] and of bytes >= 0x80) are `text.words(t)`: an ASCII text
    as it is (there the runs are exactly the regex's \\w runs), any other as its words joined by spaces
    (a non-ASCII character that is no word character, a dash or an emoji, would otherwise join two
    words)."""
    from mig_ray.curate.text import words

    data = [t.encode() if t.isascii() else " ".join(words(t)).encode() for t in texts]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)), out=offsets[1:])
    return np.frombuffer(b"".join(data), dtype=np.uint8), offsets


def text_signatures(texts: list[str], ngram: int, num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The MinHash signatures of normalised texts (uint32 [len(texts), num_perm]) and each text's
    shingle count, in one compiled pass per text: words (`text.words`) hashed by FNV-1a 64 and
    MurmurHash3's finalizer, folded into n-gram shingles as `ngram_hashes` folds them (short texts as
    one shingle), then datasketch's affine32 permutations (`permutations`)."""
    from mig_ray.curate.compiled import text_minhash

    a, b = permutations(num_perm, seed)
    buf, offsets = encoded_words(texts)
    out = np.full((len(texts), num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    per = np.zeros(len(texts), dtype=np.int64)
    text_minhash(buf, offsets, ngram, a, b, out, per)
    return out, per


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
