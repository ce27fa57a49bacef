"""The curation core (mig_ray/curate), against naive implementations written here: datasketch
record by record for the signatures, brute-force all-pairs Jaccard over shingle sets for the
duplicates, a union-find for the clusters, a scan of every n-gram for decontamination."""

from __future__ import annotations

import datasketch
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mig_ray.curate.clusters import keep_lowest
from mig_ray.curate.contamination import NgramIndex
from mig_ray.curate.local import find_duplicates
from mig_ray.curate.lsh import candidate_pairs
from mig_ray.curate.minhash import (
    band_keys,
    collision_probability,
    text_signatures,
)
from mig_ray.curate.text import conversation_text, normalise, words

VOCAB = [f"w{i}" for i in range(3000)]


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    ws = words(text)
    if not ws:
        return set()
    if len(ws) < n:
        return {tuple(ws)}
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def planted_pool(seed: int, n: int = 2000) -> tuple[list[str], list[tuple[int, int, str]]]:
    """n texts: originals of 40-80 random words, and after them copies of earlier ones: exact,
    differing in case and spacing only, and with a known share of words replaced. Returns the raw
    texts and the planted (original, copy, kind) pairs."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    planted: list[tuple[int, int, str]] = []
    rates = [0.0, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3]
    while len(texts) < n:
        if len(texts) < 50 or rng.random() < 0.6:
            texts.append(" ".join(VOCAB[j] for j in rng.integers(0, len(VOCAB), rng.integers(40, 80))))
            continue
        src = int(rng.integers(0, len(texts)))
        kind = ["exact", "case", *map(str, rates)][int(rng.integers(0, 2 + len(rates)))]
        ws = texts[src].split()
        if kind == "case":
            copy = "  ".join(w.upper() if rng.random() < 0.5 else w for w in ws) + " \n"
        elif kind == "exact":
            copy = texts[src]
        else:
            ws = list(ws)
            for i in np.flatnonzero(rng.random(len(ws)) < float(kind)):
                ws[i] = VOCAB[int(rng.integers(0, len(VOCAB)))]
            copy = " ".join(ws)
        planted.append((src, len(texts), kind))
        texts.append(copy)
    return texts, planted


def brute_jaccard(sets: list[set]) -> dict[tuple[int, int], float]:
    """Every pair's Jaccard over shingle sets (pairs that share no shingle are 0 and left out)."""
    from collections import defaultdict

    where = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            where[sh].append(i)
    inter: dict[tuple[int, int], int] = defaultdict(int)
    for rows in where.values():
        for x in range(len(rows)):
            for y in range(x + 1, len(rows)):
                inter[(rows[x], rows[y])] += 1
    return {(i, j): c / len(sets[i] | sets[j]) for (i, j), c in inter.items()}


def clusters_of(kept: np.ndarray, dropped: np.ndarray, n: int) -> np.ndarray:
    root = np.arange(n)
    root[dropped] = kept
    return root


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_duplicates_against_brute_force(seed):
    texts, planted = planted_pool(seed)
    norm = [normalise(t) for t in texts]
    sets = [shingle_set(t) for t in norm]
    jac = brute_jaccard(sets)
    dup = find_duplicates(norm, threshold=0.8)
    root = clusters_of(dup.kept, dup.dropped, len(texts))
    # every exact (after normalisation) pair is found, with the lowest position kept
    for src, copy, kind in planted:
        if kind in ("exact", "case", "0.0"):
            assert root[copy] == root[src] and root[copy] < copy
    # recall at Jaccard >= 0.9 over every pair the brute force finds there
    high = [(i, j) for (i, j), v in jac.items() if v >= 0.9]
    found = sum(root[i] == root[j] for i, j in high)
    assert len(high) > 150 and found / len(high) >= 0.98, (found, len(high))
    # no pair far above the threshold is kept apart
    assert all(root[i] == root[j] for (i, j), v in jac.items() if v >= 0.95)
    # no record is dropped for a twin it shares less than half its shingles with
    for k, d in zip(dup.kept, dup.dropped, strict=True):
        assert jac.get((int(k), int(d)), 0.0) >= 0.5 or norm[k] == norm[d]
    # the kept one is the lowest position of its cluster, and it is not dropped itself
    assert np.all(dup.kept < dup.dropped) and not set(dup.kept) & set(dup.dropped)
    # the estimated Jaccard reported is close to the true one
    est = {(int(k), int(d)): float(j) for k, d, j in zip(dup.kept, dup.dropped, dup.jaccard, strict=True)}
    errors = [abs(est[p] - jac.get(p, 1.0 if norm[p[0]] == norm[p[1]] else 0.0)) for p in est]
    assert np.mean(errors) < 0.05


M64 = (1 << 64) - 1


def fnv_word_hash(word: str) -> int:
    """FNV-1a 64 of the word's UTF-8, then MurmurHash3's 64-bit finalizer, in plain Python."""
    h = 0xCBF29CE484222325
    for c in word.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = ((h ^ (h >> 33)) * mul) & M64
    return h ^ (h >> 33)


TEXT = st.lists(st.sampled_from(list("ab cd_9Z\t\n-—.,'é日本😀ǅ") + ["w1 ", "w2 ", "  "]),
                max_size=40).map("".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=10), st.integers(1, 6),
       st.integers(0, 2**31))
def test_text_signatures_equal_regex_words_and_datasketch(texts, n, seed):
    """The compiled text -> signature pass against the regex's words, a Python word hash and
    datasketch; texts with accents, CJK, emoji and dashes (no word characters) included."""
    texts = [normalise(t) for t in texts]
    sig, per = text_signatures(texts, n, 64, seed)
    for r, text in enumerate(texts):
        ws = [fnv_word_hash(w) for w in words(text)]
        shingles = []
        for s in range(max(len(ws) - n + 1, 1) if ws else 0):
            h = 0
            for t in range(n):
                h = (h * 0x100000001B3 + (ws[s + t] if s + t < len(ws) else 0)) & M64
            for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
                h = ((h ^ (h >> 33)) * mul) & M64
            shingles.append((h ^ (h >> 33)) >> 32)
        m = datasketch.MinHash(num_perm=64, seed=seed, hashfunc=lambda x: x, scheme="affine32")
        m.update_batch(shingles)
        assert per[r] == len(shingles)
        assert np.array_equal(m.hashvalues, sig[r]), (text, r)


def naive_pairs(band, key, aux, pos) -> set[tuple[int, int]]:
    """Every pair of positions sharing (band, key), one per (band, key, aux) text: the lowest."""
    groups: dict = {}
    for b, k, a, p in zip(band, key, aux, pos, strict=True):
        g = groups.setdefault((b, k), {})
        g[a] = min(g.get(a, p), p)
    out = set()
    for g in groups.values():
        members = sorted(g.values())
        out |= {(x, y) for i, x in enumerate(members) for y in members[i + 1:]}
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 5), st.integers(0, 4)), min_size=0, max_size=80))
def test_candidate_pairs_equal_naive_grouping(rows):
    pos = np.arange(len(rows), dtype=np.int64) * 3 - 7
    band = np.array([r[0] for r in rows], np.int16)
    key = np.array([r[1] for r in rows], np.uint64)
    aux = np.array([r[2] for r in rows], np.uint64)
    a, b = candidate_pairs(band, key, aux, pos)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == naive_pairs(band, key, aux, pos)


def test_large_group_is_one_connected_cluster():
    pos = np.arange(500, dtype=np.int64)
    a, b = candidate_pairs(np.zeros(500, np.int16), np.zeros(500, np.uint64), pos.astype(np.uint64), pos)
    assert len(a) < 1000  # star and chain, not 125K pairs
    kept, dropped = keep_lowest(a, b)
    assert set(kept) == {0} and sorted(dropped) == list(range(1, 500))


def union_find_lowest(a: list[int], b: list[int]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a, b, strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in parent if find(x) != x}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 60), st.integers(-20, 60)), max_size=60))
def test_clusters_keep_the_lowest_position(edges):
    edges = [(x, y) for x, y in edges if x != y]
    a = np.array([min(e) for e in edges], np.int64)
    b = np.array([max(e) for e in edges], np.int64)
    kept, dropped = keep_lowest(a, b)
    want = union_find_lowest(a.tolist(), b.tolist())
    assert dict(zip(dropped.tolist(), kept.tolist(), strict=True)) == want
    assert list(dropped) == sorted(dropped)


def test_banding_recall_table_and_band_keys():
    assert collision_probability(0.8, 16, 8) == pytest.approx(1 - (1 - 0.8 ** 8) ** 16)
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, (50, 128), dtype=np.uint64).astype(np.uint32)
    keys = band_keys(sig, 16)
    other = sig.copy()
    other[:, 8:16] ^= 1  # band 1 differs, every other band is the same
    keys2 = band_keys(other, 16)
    assert np.all(keys[:, 1] != keys2[:, 1]) and np.array_equal(np.delete(keys, 1, 1), np.delete(keys2, 1, 1))
    # equal values in two bands are two keys
    same = np.tile(sig[:, :8], (1, 16))
    k = band_keys(same, 16)
    assert len(np.unique(k[0])) == 16


def naive_contaminated(record: list[str], prompts: list[str], n: int) -> bool:
    grams = set()
    for p in prompts:
        ws = words(normalise(p))
        grams |= {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}
    for t in record:
        ws = words(normalise(t))
        if any(tuple(ws[i:i + n]) in grams for i in range(len(ws) - n + 1)):
            return True
    return False


def test_decontamination_13_grams_not_12():
    bench = "what is the capital city of the country that hosted the first modern olympic games in 1896"
    bw = bench.split()
    thirteen = "Please answer: " + " ".join(bw[2:15]).upper().replace(" ", ",  ") + "! thanks"
    twelve = "Please answer: " + " ".join(bw[2:14]) + " thanks"
    idx = NgramIndex.build([(0, "unrelated words only here"), (1, bench)], ["a.txt", "b.jsonl"], 13)
    got = idx.match([[thirteen], [twelve], ["x"], [twelve, thirteen]])
    assert got[0] == ("b.jsonl", " ".join(bw[2:15]))
    assert got[1] is None and got[2] is None and got[3] is not None
    rng = np.random.default_rng(3)
    prompts = [" ".join(VOCAB[j] for j in rng.integers(0, 10, 8)) for _ in range(3)]
    idx = NgramIndex.build([(0, p) for p in prompts], ["p"], 3)
    records = [[" ".join(VOCAB[j] for j in rng.integers(0, 10, 6))] for _ in range(200)]
    hits = idx.match(records)
    assert [h is not None for h in hits] == [naive_contaminated(r, prompts, 3) for r in records]
    assert any(h is not None for h in hits) and not all(h is not None for h in hits)


def test_normalised_conversation_text():
    a = [{"role": "user", "content": "Ｈｅｌｌｏ  World\t!"}, {"role": "assistant", "content": "HI"}]
    b = [{"role": "user", "content": "hello world !"}, {"role": "assistant", "content": "hi "}]
    assert conversation_text(a) == conversation_text(b)
    swapped = [{"role": "assistant", "content": "hello world !"}, {"role": "user", "content": "hi"}]
    assert conversation_text(swapped) != conversation_text(b)
    assert conversation_text(b, "user") == "hello world !"


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=40)
       | st.text(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000aB", max_size=20))
def test_normalise_equals_the_regex_definition(text):
    """normalise: NFKC, case-folded, every run of whitespace (the regex's \\s) one space, stripped."""
    import re
    import unicodedata

    expected = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    assert normalise(text) == expected
