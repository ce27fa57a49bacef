"""The compiled inner loops of the MinHash signatures (numba), in a module of its own so that only
the processes that sign records import numba (a job's driver would grow by about 65 MB)."""

from __future__ import annotations

import numba
import numpy as np

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)  # also the shingle fold's multiplier (minhash._PRIME)
M32 = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, inline="always")
def fmix64(h):  # pragma: no cover - compiled
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True, inline="always")
def fmix32(h):  # pragma: no cover - compiled
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return h


@numba.njit(cache=True, inline="always")
def is_word_byte(c):  # pragma: no cover - compiled
    """[0-9A-Za-z_] or any byte of a multi-byte UTF-8 character (see minhash.encoded_words)."""
    return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) or c == 95 or c >= 128


@numba.njit(cache=True, nogil=True)
def word_runs(buf, lo, hi, out):  # pragma: no cover - compiled
    """The hash of every word of buf[lo:hi] into out[0:]; returns the number of words. A word's hash
    is FNV-1a 64 of its bytes, then MurmurHash3's 64-bit finalizer."""
    n = 0
    h = FNV_OFFSET
    inside = False
    for i in range(lo, hi):
        c = buf[i]
        if is_word_byte(c):
            if not inside:
                h = FNV_OFFSET
                inside = True
            h = (h ^ np.uint64(c)) * FNV_PRIME
        elif inside:
            out[n] = fmix64(h)
            n += 1
            inside = False
    if inside:
        out[n] = fmix64(h)
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def text_minhash(buf, offsets, ngram, a, b, out, per):  # pragma: no cover - compiled
    """Record r's words (buf[offsets[r]:offsets[r + 1]]) -> its word n-gram shingles (folded as
    minhash.ngram_hashes folds them, short records as one shingle) -> out[r] = the minimum of each
    affine32 permutation over them (datasketch's MinHash; 2^32 - 1 without words), per[r] = the
    number of shingles. One pass, no temporaries but two scratch arrays."""
    longest = 0
    for r in range(len(per)):
        longest = max(longest, offsets[r + 1] - offsets[r])
    words = np.empty(longest // 2 + 1, dtype=np.uint64)
    shingles = np.empty(longest // 2 + 1, dtype=np.uint64)
    for r in range(len(per)):
        c = word_runs(buf, offsets[r], offsets[r + 1], words)
        if c == 0:
            per[r] = 0
            continue
        m = max(c - ngram + 1, 1)
        for s in range(m):
            h = np.uint64(0)
            for t in range(ngram):
                h = h * FNV_PRIME + (words[s + t] if s + t < c else np.uint64(0))
            shingles[s] = fmix32(fmix64(h) >> np.uint64(32))
        per[r] = m
        for p in range(len(a)):
            ap, bp = np.uint64(a[p]), np.uint64(b[p])
            low = M32
            for i in range(m):
                v = (shingles[i] * ap + bp) & M32
                if v < low:
                    low = v
            out[r, p] = np.uint32(low)
