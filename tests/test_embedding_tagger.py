"""The embedding tagger on real text with the bundled model and the shipped Tulu3 vocabulary."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import orjson
import pyarrow as pa
import pytest
from fixtures import DATA, TULU3_TAGS_SHA256
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mig_ray.annotate.embedding_tagger import (
    OUTPUT_SCHEMA,
    SAMPLE_VECTOR,
    EmbeddingTagger,
    EmbeddingTaggerConfig,
    default_vocab_cache,
    default_vocabulary,
    mmr,
    tag_batch,
    user_texts,
)
from mig_ray.pools.layouts import messages_json, normalise

PROGRAMMING = ("python", "program", "code", "coding", "algorithm", "function", "script", "software")


@pytest.fixture(scope="session")
def vocab_cache():
    """The default cache folder: the 4,531 tags are embedded once per machine (minutes on a busy
    2-core CPU) and loaded after that, by this module and by the runner tests' actors."""
    return default_vocab_cache()


@pytest.fixture(scope="module")
def tagger(vocab_cache):
    return EmbeddingTagger(EmbeddingTaggerConfig(vocab_cache=vocab_cache, num_threads=2))


@pytest.fixture(scope="module")
def seed_tasks():
    lines = (DATA / "alpaca_seed_tasks_175.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def _batch(recs: dict) -> dict[str, np.ndarray]:
    return {"id": np.array(list(recs), dtype=object),
            "messages": np.array([messages_json(normalise(r)[1]) for r in recs.values()], dtype=object)}


def _is_programming(tag: str) -> bool:
    return any(w.startswith(PROGRAMMING) for w in tag.split())


def test_the_shipped_vocabulary_is_the_released_tulu3_tags():
    tags = json.loads(default_vocabulary().read_text(encoding="utf-8"))
    assert len(tags) == len(set(tags)) == 4531
    assert hashlib.sha256(default_vocabulary().read_bytes()).hexdigest() == TULU3_TAGS_SHA256


def test_real_tasks_get_sensible_tags(tagger, seed_tasks):
    python_tasks = {k: r for k, r in seed_tasks.items() if k in ("seed_task_69", "seed_task_72")}
    others = {k: seed_tasks[k] for k in ("seed_task_0", "seed_task_9")}
    assert "python function" in python_tasks["seed_task_72"]["instruction"]
    out = tagger(_batch(python_tasks | others))
    assert out.schema.equals(OUTPUT_SCHEMA)
    rows = {r["id"]: r for r in out.to_pylist()}
    for k in python_tasks:
        assert rows[k]["status"] == "ok" and rows[k]["calls"] == 1
        assert any(_is_programming(t) for t in rows[k]["labels"]), (python_tasks[k]["instruction"], rows[k])
    assert "breakfast" in rows["seed_task_0"]["labels"]  # "...eat for a breakfast that doesn't include eggs"
    assert "movie recommendation" in rows["seed_task_9"]["labels"]
    assert not any(_is_programming(t) for t in rows["seed_task_0"]["labels"])
    for r in rows.values():
        assert 1 <= len(r["labels"]) <= 5 and len(set(r["labels"])) == len(r["labels"])
        assert all(s >= 0.3 for s in r["label_scores"])


def test_failures_are_rows_not_exceptions(tagger):
    batch = pa.table({"id": ["a", "b", "c"], "messages": [
        messages_json([{"role": "user", "content": "Write a python script that renames files."}]),
        messages_json([{"role": "assistant", "content": "nothing asked"}]),
        "{not json",
    ]})
    rows = tagger(batch).to_pylist()
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert [r["calls"] for r in rows] == [1, 0, 0]
    assert rows[1]["error"] == "no user turn with text" and rows[2]["error"].startswith("bad messages")
    assert rows[1]["labels"] == [] and rows[0]["error"] == ""
    assert rows[1][SAMPLE_VECTOR] is None and rows[2][SAMPLE_VECTOR] is None  # no vector for a failure
    assert len(rows[0][SAMPLE_VECTOR]) == 384 and abs(np.linalg.norm(rows[0][SAMPLE_VECTOR]) - 1) < 1e-5


def test_every_user_turn_counts(tagger):
    msgs = [{"role": "user", "content": "Recommend a movie for the weekend."},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "Now write a python function that sorts a list."}]
    both = tagger(pa.table({"id": ["m"], "messages": [orjson.dumps(msgs).decode()]}))["labels"][0].as_py()
    assert any("movie" in t for t in both) and any(_is_programming(t) for t in both)
    assert user_texts(msgs, "first_user", 8, 1000) == ["Recommend a movie for the weekend."]
    assert user_texts(msgs, "user", 8, 10) == ["Recommend ", "Now write "]


def test_mmr_without_diversity_is_plain_top_k():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = rng.uniform(-1, 1, size=30).astype(np.float32)
    assert mmr(sims, emb, 4, -1.0, 0.0) == list(np.argsort(-sims)[:4])
    assert all(sims[j] >= 0.5 for j in mmr(sims, emb, 10, 0.5, 0.3))
    twin = np.vstack([emb[:1], emb[:1], emb[1:2]])  # two identical tags and a different one
    assert mmr(np.array([0.9, 0.89, 0.5], np.float32), twin, 2, 0.0, 0.5) == [0, 2]


def test_config_identity_and_validation(tmp_path):
    base = EmbeddingTaggerConfig()
    ident = base.identity()
    assert ident["annotator"] == "embedding_tagger" and ident["top_k"] == 5
    assert EmbeddingTaggerConfig(device="cpu", num_threads=1, vocab_cache=tmp_path).identity() == ident
    assert EmbeddingTaggerConfig(top_k=3).identity() != ident
    vocab = tmp_path / "v.json"
    vocab.write_text(json.dumps(["python programming", "cooking"]))
    other = EmbeddingTaggerConfig(vocabulary=vocab).identity()
    assert other["vocabulary_sha256"] != ident["vocabulary_sha256"]
    with pytest.raises(ValidationError):
        EmbeddingTaggerConfig(topk=3)
    with pytest.raises(ValidationError):
        EmbeddingTaggerConfig(turns="assistant")


def test_a_small_vocabulary_from_a_file(tmp_path, vocab_cache):
    vocab = tmp_path / "v.txt"
    vocab.write_text("python programming\ncooking\ngardening\n")
    t = EmbeddingTagger({"vocabulary": vocab, "top_k": 1, "min_similarity": 0.0, "vocab_cache": vocab_cache})
    out = t(pa.table({"id": ["q"], "messages": [messages_json([{"role": "user", "content": "How do I use "
                                                                  "list comprehensions in Python?"}])]}))
    assert out["labels"].to_pylist() == [["python programming"]]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 3.0), st.floats(-0.5, 0.5), st.integers(1, 8))
def test_the_margin_keeps_only_tags_clearly_above_the_records_mean(seed, margin, floor, k):
    """tag_batch with diversity 0 against the rule written here: per record, the best similarity
    over its turns; the k best tags at or above max(floor, mean + margin * std), the margin's bar
    capped at the record's best tag (60 tags: margins up to 3 often bind, and sometimes exceed the
    best tag)."""
    rng = np.random.default_rng(seed)
    vocab_emb = rng.normal(size=(60, 8)).astype(np.float32)
    vocab_emb /= np.linalg.norm(vocab_emb, axis=1, keepdims=True)
    vocab = [f"tag{i:02d}" for i in range(60)]
    turns = [[f"text {seed} {i} {j}" for j in range(int(rng.integers(1, 4)))] for i in range(6)]
    table = {t: rng.normal(size=8) for ts in turns for t in ts}

    def encode(texts: list[str]) -> np.ndarray:
        v = np.array([table[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    cfg = EmbeddingTaggerConfig(top_k=k, min_similarity=floor, diversity=0.0, margin=margin)
    msgs = [messages_json([{"role": "user", "content": t} for t in ts]) for ts in turns]
    out = tag_batch({"id": np.array([str(i) for i in range(6)], dtype=object),
                     "messages": np.array(msgs, dtype=object)}, cfg, encode, vocab, vocab_emb).to_pylist()
    for row, ts in zip(out, turns, strict=True):
        sims = (encode(ts).astype(np.float64) @ vocab_emb.T.astype(np.float64)).max(axis=0)
        bar = max(floor, min(sims.max(), sims.mean() + margin * sims.std()))
        clear = [j for j in np.argsort(-sims, kind="stable") if sims[j] >= bar + 1e-5]
        unclear = {j for j in range(60) if abs(sims[j] - bar) <= 1e-5}
        got = [vocab.index(t) for t in row["labels"]]
        assert got[:len(clear[:k])] == clear[:k] or unclear, (got, clear[:k])
        assert all(sims[j] >= bar - 1e-5 for j in got)
        assert got or sims.max() < floor + 1e-5  # the margin alone never empties a record


def test_max_tokens_cuts_each_turn(vocab_cache):
    head = "Write a python function that sorts a list of numbers from the largest to the smallest one. "
    a, b = head + "Then bake bread. " * 60, head + "Then water the garden. " * 60
    batch = pa.table({"id": ["a", "b"], "messages": [messages_json([{"role": "user", "content": t}])
                                                     for t in (a, b)]})
    cut = EmbeddingTagger(EmbeddingTaggerConfig(vocab_cache=vocab_cache, max_tokens=16))
    assert cut.model.max_seq_length == 16
    rows = cut(batch).to_pylist()
    np.testing.assert_allclose(rows[0][SAMPLE_VECTOR], rows[1][SAMPLE_VECTOR], atol=1e-6)
    assert rows[0]["labels"] == rows[1]["labels"]
    full = EmbeddingTagger(EmbeddingTaggerConfig(vocab_cache=vocab_cache, max_tokens=None)).model
    assert full.max_seq_length == 256
