"""`mig-ray select` under quotas and a budget, end to end from a JSONL pool: in process and on Ray
with 2 and 3 shards, the selection equals the naive constrained greedy (tests/reference.py) on the
engine's propagated vectors; bad groups and costs are quarantined; bad constraints are one-line
errors naming the option."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from pools import random_pool
from reference import naive_budgeted
from test_distributed import config, manifest_ids
from test_greedy_equivalence import engine_vectors

from mig_ray.errors import PoolError
from mig_ray.selection.run import run_select

GROUPS = ["chat", "code", "math", "web"]  # sorted: the engine's group codes


def limited_pool(tmp_path, seed: int, n: int = 60):
    vocab, emb, labels, scores = random_pool(seed, n=n, n_labels=12)
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, len(GROUPS), n)
    costs = rng.integers(1, 6, n)
    lines = [orjson.dumps({"id": f"r{i}", "tags": ls, "score": float(s), "source": GROUPS[g], "ntok": int(c)})
             for i, (ls, s, g, c) in enumerate(zip(labels, scores, groups, costs, strict=True))]
    bad = [{"id": "neg", "tags": ["tag00"], "score": 1.0, "source": "web", "ntok": -3},
           {"id": "nocost", "tags": ["tag00"], "score": 1.0, "source": "web"},
           {"id": "listgroup", "tags": ["tag00"], "score": 1.0, "source": ["web"], "ntok": 2}]
    for j, rec in enumerate(bad):
        lines.insert(5 + 7 * j, orjson.dumps(rec))
    pool = tmp_path / f"pool{seed}.jsonl"
    pool.write_bytes(b"\n".join(lines) + b"\n")
    np.savez(tmp_path / f"emb{seed}.npz", labels=np.array(vocab), embeddings=emb)
    _, vectors = engine_vectors(vocab, emb, labels, scores, 0.7, "target", 1.0, False)
    return pool, tmp_path / f"emb{seed}.npz", vectors.toarray(), groups, costs.astype(float)


def want_ids(ehat, k, groups, costs, budget):
    caps = np.array([4, 4, 6, 4])  # {"math": 0.3, "default": 4} with n = 20: floor(0.3 * 20) = 6
    order, _, which = naive_budgeted(ehat, k, groups, caps, costs, budget)
    return [f"r{i}" for i in order], which


@pytest.mark.parametrize(("shards", "batch"), [(1, 0), (2, 4), (3, 0)])
def test_select_under_quotas_and_budget_equals_the_reference(tmp_path, ray_address, shards, batch):
    for seed, budget in ((3, 25.0), (4, 40.0)):
        pool, emb, ehat, groups, costs = limited_pool(tmp_path, seed)
        want, which = want_ids(ehat, 20, groups, costs, budget)
        cfg = config(tmp_path, pool, emb, f"s{seed}-{shards}", n=20, groups="source",
                     quotas={"math": 0.3, "default": 4}, budget_tokens=budget, cost="ntok", shards=shards,
                     batch=batch, ray_address=ray_address if shards > 1 else None)
        summary = run_select(cfg)
        assert manifest_ids(cfg) == want, (seed, shards)
        c = summary["constraints"]
        assert c["greedy"]["greedy"] == {"ratio": "cost_benefit", "gain": "gain"}[which]
        assert c["used"] <= budget and c["budget"] == budget
        for name, row in c["groups"].items():
            assert row["selected"] <= row["cap"] and row["pool"] == int(np.sum(groups == GROUPS.index(name)))
        rejects = [json.loads(x) for x in cfg.out.with_name("sel.rejects.jsonl").read_text().splitlines()]
        reasons = sorted(r["reason"] for r in rejects)
        assert reasons == ["cost not positive: ntok = -3", "group not a single value: source",
                           "missing cost: ntok"], reasons


def test_a_budget_below_the_cheapest_sample_and_an_unknown_group(tmp_path, capsys):
    pool, emb, *_ = limited_pool(tmp_path, 5)
    cfg = config(tmp_path, pool, emb, "cheap", n=5, budget_tokens=0.5, cost="ntok")
    with pytest.raises(PoolError, match=r"^budget_tokens: 0.5 is smaller than the cheapest selectable"):
        run_select(cfg)
    cfg = config(tmp_path, pool, emb, "unknown", n=5, groups="source", quotas={"poetry": 2})
    run_select(cfg)
    assert "warning: quotas: no record has group 'poetry'" in capsys.readouterr().err


@pytest.mark.parametrize(("shards", "batch"), [(1, 0), (2, 4)])
def test_select_with_floors_equals_the_reference(tmp_path, ray_address, shards, batch):
    pool, emb, ehat, groups, costs = limited_pool(tmp_path, 6)
    caps, floors = np.array([4, 4, 6, 4]), np.array([0, 3, 0, 4])  # code 3, web 4; sorted: code first
    want, _, which = naive_budgeted(ehat, 20, groups, caps, costs, 30.0, floors=floors)
    cfg = config(tmp_path, pool, emb, f"fl{shards}", n=20, groups="source",
                 quotas={"math": 0.3, "default": 4}, floors={"code": 3, "web": 4}, budget_tokens=30.0,
                 cost="ntok", shards=shards, batch=batch, ray_address=ray_address if shards > 1 else None)
    summary = run_select(cfg)
    assert manifest_ids(cfg) == [f"r{i}" for i in want]
    assert summary["constraints"]["groups"]["web"]["floor"] == 4
    assert summary["constraints"]["greedy"]["greedy"] == {"ratio": "cost_benefit", "gain": "gain"}[which]


def test_bad_floors_are_one_line_errors_naming_the_field(tmp_path, capsys):
    pool, emb, *_ = limited_pool(tmp_path, 5)
    cfg = config(tmp_path, pool, emb, "above", n=10, groups="source", quotas={"web": 2}, floors={"web": 3})
    with pytest.raises(PoolError, match=r"^floors: group 'web' has a floor of 3 above its cap of 2 "):
        run_select(cfg)
    cfg = config(tmp_path, pool, emb, "sum", n=10, groups="source", floors={"web": 6, "code": 5})
    with pytest.raises(PoolError, match=r"^floors: they add up to 11 samples, more than n \(10\)$"):
        run_select(cfg)
    cfg = config(tmp_path, pool, emb, "size", n=60, groups="source", floors={"web": 59})
    run_select(cfg)
    assert "warning: floors: group 'web' has a floor of 59 but only" in capsys.readouterr().err


def test_a_killed_selection_with_floors_resumes_from_its_checkpoint(tmp_path, ray_address):
    """On Ray the floor phases are recomputed and the checkpoint, which extends their picks, resumes
    the last phase: the order equals an uninterrupted run's and the reference's."""
    pool, emb, ehat, groups, costs = limited_pool(tmp_path, 7)
    kw = dict(n=20, groups="source", quotas={"default": 6}, floors={"code": 3, "web": 4}, shards=2, batch=0,
              ray_address=ray_address, checkpoint_seconds=0.0)
    want, _, _ = naive_budgeted(ehat, 20, groups, np.full(4, 6), costs, np.inf, floors=np.array([0, 3, 0, 4]))
    calls = [0]

    def stop(r, actors):
        calls[0] += r > 0
        if calls[0] == 12:  # 7 floor picks, then 5 of the last phase (one pick per round)
            raise KeyboardInterrupt

    cfg = config(tmp_path, pool, emb, "killed", **kw)
    with pytest.raises(KeyboardInterrupt):
        run_select(cfg, on_round=stop)
    assert cfg.out.with_name("sel.checkpoint.npz").is_file()
    summary = run_select(cfg)
    assert manifest_ids(cfg) == [f"r{i}" for i in want]
    assert summary["greedy"]["resumed_from_checkpoint"] == 12
