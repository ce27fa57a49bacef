"""`compare` under the selection's quotas, floors and budget: every baseline's order is its own
ranking walked by one filter (checked here against the direct rankings of test_compare and a filter
written in this file), `mig` is `select`'s constrained order (in process and on Ray), a group capped
at 0 never appears, and the metrics carry the tokens and per-group counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from test_compare import (
    config,
    manifest_rows,
    positions,
    ref_deita,
    ref_instag,
    ref_kcenter,
    ref_random,
    ref_score,
    write_pool,
)
from test_report import mig_ray

from mig_ray.compare.run import CompareOptions, run_compare
from mig_ray.selection.run import run_select

GROUPS = ["chat", "code", "math"]  # sorted: the group codes


def grouped_pool(tmp_path: Path, seed: int, n: int):
    """test_compare's pool with a `source` group and an integer cost `ntok` on every record."""
    pool, lemb, vocab, _, labels, scores, emb = write_pool(tmp_path, seed, n, 14)
    rng = np.random.default_rng(seed + 7)
    groups = rng.integers(0, len(GROUPS), n)
    costs = rng.integers(1, 9, n).astype(float)
    recs = [orjson.loads(line) for line in pool.read_bytes().splitlines()]
    for r, g, c in zip(recs, groups, costs, strict=True):
        r["source"], r["ntok"] = GROUPS[g], int(c)
    pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return pool, lemb, labels, scores, emb, groups, costs


def walk(order, groups, costs, caps, budget, k, floors=None):
    """The filter, written here: floors first (each floor group's samples in the order, up to the
    floor), then take a sample when its group is below its cap and its cost fits what is left."""
    counts, used, out = [0] * len(caps), 0.0, []
    phases = [(g, f) for g, f in enumerate(floors or []) if f] + [(None, None)]
    for only, floor in phases:
        for i in order:
            if len(out) == k:
                break
            g = groups[i]
            if i in out or (only is not None and (g != only or counts[g] >= floor)):
                continue
            if counts[g] < caps[g] and used + costs[i] <= budget:
                out.append(i)
                counts[g] += 1
                used += costs[i]
    return out


CASES = [  # (quotas, caps as counts for k = 30, budget, floors)
    ({"chat": 0.5, "code": 6, "default": 0.2}, [15, 6, 6], 1e9, {}),
    ({"chat": 0.5, "code": 6, "default": 0.2}, [15, 6, 6], 70.0, {}),
    ({"math": 0}, [10**9, 10**9, 0], 95.0, {}),
    ({"default": 0.5}, [15, 15, 15], 80.0, {"code": 4, "math": 3}),
]


@pytest.mark.parametrize("seed", [2, 13])
@pytest.mark.parametrize(("quotas", "caps", "budget", "floors"), CASES)
def test_each_baseline_is_its_own_ranking_walked_under_the_limits(tmp_path, seed, quotas, caps, budget,
                                                                  floors):
    n, k = 90, 30
    pool, lemb, labels, scores, emb, groups, costs = grouped_pool(tmp_path, seed, n)
    thr = 0.5
    cfg = config(tmp_path, pool, lemb, k, groups="source", quotas=quotas, budget_tokens=budget, cost="ntok",
                 floors=floors)
    res = run_compare(cfg, tmp_path / "cmp", CompareOptions(
        methods=("mig", "random", "score", "instag", "deita", "kcenter", "longest"), seed=seed,
        embeddings_field="emb", deita_threshold=thr))
    got = {name: positions(Path(m["manifest"])) for name, m in res["methods"].items()}
    fl = [floors.get(g, 0) for g in GROUPS]
    full = {"random": ref_random(n, n, seed), "score": ref_score(scores, n),
            "instag": ref_instag(labels, scores, n), "deita": ref_deita(emb, scores, n, thr),
            "kcenter": ref_kcenter(emb, n, seed)}
    for name, ranking in full.items():
        want = walk(ranking, groups, costs, caps, budget, k, fl)
        assert got[name] == want, name
    for name, order in got.items():
        m = res["methods"][name]["metrics"]
        assert m["tokens"] == pytest.approx(float(costs[order].sum())) and m["tokens"] <= budget
        counts = np.bincount(groups[order], minlength=3)
        assert m["groups"] == dict(zip(GROUPS, counts.tolist(), strict=True)), name
        assert np.all(counts <= caps), name
        if not caps[2]:
            assert counts[2] == 0, name  # a group capped at 0 never appears
    # mig: the constrained greedy of select itself
    run_select(cfg)
    assert got["mig"] == positions(tmp_path / "sel" / "selected.manifest.jsonl")
    assert res["constraints"]["quotas"] == quotas and "walked" in res["constraints"]["applied"]


def test_mig_under_limits_is_select_order_on_ray_too(tmp_path, ray_address):
    pool, lemb, *_ = grouped_pool(tmp_path, 4, 120)
    kw = dict(groups="source", quotas={"chat": 0.3, "default": 15}, budget_tokens=120.0, cost="ntok",
              floors={"math": 5})
    cfg = config(tmp_path, pool, lemb, 40, **kw)
    run_select(cfg)
    want = positions(tmp_path / "sel" / "selected.manifest.jsonl")
    sharded = run_compare(config(tmp_path, pool, lemb, 40, shards=2, batch=4, ray_address=ray_address, **kw),
                          tmp_path / "sharded", CompareOptions(methods=("mig", "random")))
    assert positions(Path(sharded["methods"]["mig"]["manifest"])) == want
    assert sharded["mig_order_from"].startswith("select on Ray (2 shards)")


def test_cli_takes_the_select_constraint_flags_and_prints_tokens_and_groups(tmp_path):
    pool, lemb, *_ = grouped_pool(tmp_path, 9, 70)
    proc = mig_ray("compare", pool, "-n", 20, "--label-embeddings", lemb, "--labels-field", "tags",
                   "--score-field", "score", "--sim-threshold", 0.7, "--no-progress", "-o", tmp_path / "out",
                   "--methods", "mig,random,score", "--groups", "source", "--quota", "math=0",
                   "--quota", "default=0.5", "--budget-tokens", 60, "--cost", "ntok")
    lines = proc.stdout.splitlines()
    assert lines[0].split()[-2:] == ["tokens", "seconds"]
    assert sum(ln.strip().startswith("per group: chat") for ln in lines) == 3
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    for m in data["methods"].values():
        assert m["metrics"]["groups"]["math"] == 0 and m["metrics"]["tokens"] <= 60
        assert m["constraints"]["groups"]["math"]["cap"] == 0
    bad = mig_ray("compare", pool, "-n", 20, "-o", tmp_path / "bad", "--quota", "math=0", check=False)
    assert bad.returncode == 2 and "quotas need groups" in bad.stderr
    rows = manifest_rows(tmp_path / "out" / "random.manifest.jsonl")
    assert len(rows) <= 20
    # the report's compare table: a tokens column and the per-group counts of every method
    from mig_ray.report.compare import load, sections

    html = "".join(sections(*load(tmp_path / "out" / "compare.json")))
    assert "<th>tokens</th>" in html and "<th>per group</th>" in html
    for name, m in data["methods"].items():
        row = html[html.index(f'<tr data-method="{name}">'):]
        row = row[:row.index("</tr>")]
        assert f'<td data-metric="tokens">{m["metrics"]["tokens"]:,.5g}<br>' in row, name
        assert "math: 0" in row and f"chat: {m['metrics']['groups']['chat']:,}" in row, name
    assert "Quotas and budget: every method" in html
