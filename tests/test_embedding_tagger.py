"""The embedding tagger on real text with the bundled model and the shipped Tulu3 vocabulary."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import orjson
import pyarrow as pa
import pytest
from fixtures import DATA, TULU3_TAGS_SHA256
from pydantic import ValidationError

from mig_ray.annotate.embedding_tagger import (
    OUTPUT_SCHEMA,
    SAMPLE_VECTOR,
    EmbeddingTagger,
    EmbeddingTaggerConfig,
    default_vocab_cache,
    default_vocabulary,
    mmr,
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
