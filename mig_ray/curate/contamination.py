"""Benchmark decontamination: a record whose user turns share a word n-gram (13 by default) with a
benchmark prompt is dropped. Texts are normalised (`text.normalise`) and split into words, so case,
punctuation and spacing do not hide an overlap. The index is the sorted 64-bit hashes of every
n-gram of every benchmark prompt, with the benchmark file each first came from: small enough to
broadcast to every task (a 10K-prompt benchmark of 100 words each is about 1M n-grams, 12 MB)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mig_ray.curate.minhash import ngram_hashes, word_hashes
from mig_ray.curate.text import normalise, words


@dataclass(frozen=True)
class NgramIndex:
    """Sorted n-gram hashes of the benchmark prompts, the file each came from, and the files' names."""

    n: int
    hashes: np.ndarray  # uint64, sorted, distinct
    source: np.ndarray  # int32: index into `files` of the first prompt that had the n-gram
    files: tuple[str, ...]

    @classmethod
    def build(cls, prompts: list[tuple[int, str]], files: list[str], n: int) -> NgramIndex:
        """From (file index, prompt text) pairs, in file order."""
        texts = [words(normalise(t)) for _, t in prompts]
        wh, counts = word_hashes(texts)
        h, per = ngram_hashes(wh, counts, n, short=False)
        src = np.repeat(np.asarray([f for f, _ in prompts], dtype=np.int32), per)
        uniq, first = np.unique(h, return_index=True)  # np.unique: the first occurrence of each
        return cls(n, uniq, src[first], tuple(files))

    def match(self, turns: list[list[str]]) -> list[tuple[str, str] | None]:
        """Per record (its user turns' texts): (benchmark file, the matching n-gram) of its first
        n-gram found in the index, else None. N-grams do not span two turns."""
        seqs, owner = [], []
        for r, ts in enumerate(turns):
            for t in ts:
                seqs.append(words(normalise(t)))
                owner.append(r)
        out: list[tuple[str, str] | None] = [None] * len(turns)
        if not seqs or not len(self.hashes):
            return out
        wh, counts = word_hashes(seqs)
        h, per = ngram_hashes(wh, counts, self.n, short=False)
        at = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        hit = np.flatnonzero(self.hashes[at] == h)
        seq_of = np.repeat(np.arange(len(seqs)), per)
        start_of = np.arange(len(h)) - np.repeat(np.cumsum(per) - per, per)
        for i in hit:
            r = owner[seq_of[i]]
            if out[r] is None:
                s, k = seq_of[i], start_of[i]
                out[r] = (self.files[self.source[at[i]]], " ".join(seqs[s][k:k + self.n]))
        return out
