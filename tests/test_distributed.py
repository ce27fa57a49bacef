"""Sharded selection on a real local Ray cluster: same order as naive greedy, faults, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from pools import random_pool
from reference import naive_greedy, propagated

from mig_ray.config import SelectConfig
from mig_ray.graph import LabelGraph
from mig_ray.selection import run_select

ROOT = Path(__file__).resolve().parents[1]


def write_pool(tmp_path: Path, seed: int, n: int, n_labels: int, dup_every: int = 0):
    vocab, emb, labels, scores = random_pool(seed, n=n, n_labels=n_labels)
    recs = [{"id": f"r{i}", "tags": ls, "score": float(s)} for i, (ls, s) in enumerate(zip(labels, scores,
                                                                                           strict=True))]
    lines = [orjson.dumps(r) for r in recs]
    if dup_every:  # duplicated ids later in the file: rejected, whichever block they land in
        lines += [orjson.dumps(recs[i] | {"score": 99.0}) for i in range(0, n, dup_every)]
    lines.insert(n // 2, b"{broken")
    pool = tmp_path / f"pool{seed}.jsonl"
    pool.write_bytes(b"\n".join(lines) + b"\n")
    np.savez(tmp_path / f"emb{seed}.npz", labels=np.array(vocab), embeddings=emb)
    return pool, tmp_path / f"emb{seed}.npz", vocab, emb, labels, scores


def naive_ids(vocab, emb, labels, scores, k, threshold, **kw):
    used = sorted({lab for ls in labels for lab in ls})
    graph = LabelGraph.build(used, emb[[vocab.index(u) for u in used]], threshold=threshold)
    ehat = propagated(labels, scores, graph.labels, graph.W.toarray(), kw.get("propagation", "target"),
                      1.0, kw.get("norm", False))
    want, _ = naive_greedy(ehat, k, kw.get("phi", "pow"), kw.get("gain", "gradient"))
    return [f"r{i}" for i in want]


def config(tmp_path, pool, emb, name, **kw) -> SelectConfig:
    base = {"pool": pool, "out": tmp_path / name / "sel.jsonl", "label_embeddings": emb,
            "labels_field": "tags", "score_field": "score", "sim_threshold": 0.7, "progress": False}
    return SelectConfig(**(base | kw))


def manifest_ids(cfg: SelectConfig) -> list[str]:
    path = cfg.out.with_name("sel.manifest.jsonl")
    return [json.loads(x)["id"] for x in path.read_text().splitlines()]


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", [0, 32])
def test_sharded_on_ray_equals_naive_and_local(tmp_path, ray_address, shards, batch):
    pool, emb_path, vocab, emb, labels, scores = write_pool(tmp_path, 40 + shards, n=160, n_labels=30,
                                                            dup_every=0)
    k = 60 if batch else 160
    kw = {"gain": "exact", "phi": "exp"} if shards % 2 else {"propagation": "source", "norm": True}
    want = naive_ids(vocab, emb, labels, scores, k, 0.7, **kw)
    local = config(tmp_path, pool, emb_path, "local", n=k, **kw)
    sharded = config(tmp_path, pool, emb_path, "ray", n=k, shards=shards, batch=batch,
                     ray_address=ray_address, **kw)
    s_local, s_ray = run_select(local), run_select(sharded)
    assert manifest_ids(local) == want
    assert manifest_ids(sharded) == want
    assert sharded.out.read_bytes() == local.out.read_bytes()
    assert s_ray["counts"] == s_local["counts"]
    assert s_ray["greedy"]["engine"] == "ray" and s_ray["greedy"]["shards"] == shards
    assert s_ray["information"]["selected"] == pytest.approx(s_local["information"]["selected"], rel=1e-12)
    if batch == 0:
        assert s_ray["greedy"]["rounds"] == k


def test_cross_shard_duplicates_and_rejects_match_local(tmp_path, ray_address):
    pool, emb_path, *_ = write_pool(tmp_path, 7, n=120, n_labels=20, dup_every=9)
    local = config(tmp_path, pool, emb_path, "local", n=50)
    sharded = config(tmp_path, pool, emb_path, "ray", n=50, shards=3, ray_address=ray_address)
    s_local, s_ray = run_select(local), run_select(sharded)
    assert s_local["counts"]["rejected"] == 1 + len(range(0, 120, 9))
    assert s_ray["counts"] == s_local["counts"]
    rej = [json.loads(x) for x in (tmp_path / "ray" / "sel.rejects.jsonl").read_text().splitlines()]
    assert rej == [json.loads(x) for x in (tmp_path / "local" / "sel.rejects.jsonl").read_text().splitlines()]
    assert manifest_ids(sharded) == manifest_ids(local)


def test_killed_shard_actor_is_rebuilt_and_order_unchanged(tmp_path, ray_address):
    import ray

    pool, emb_path, vocab, emb, labels, scores = write_pool(tmp_path, 3, n=300, n_labels=40)
    want = naive_ids(vocab, emb, labels, scores, 150, 0.7)
    killed = []

    def kill_one(rnd, actors):
        if rnd == 3:
            ray.kill(actors[1], no_restart=False)
            killed.append(rnd)

    cfg = config(tmp_path, pool, emb_path, "ray", n=150, shards=3, batch=4, ray_address=ray_address)
    summary = run_select(cfg, on_round=kill_one)
    assert killed == [3] and summary["greedy"]["shard_restarts"] >= 1
    assert manifest_ids(cfg) == want


def test_resumed_driver_gives_same_output(tmp_path, ray_address):
    pool, emb_path, *_ = write_pool(tmp_path, 5, n=2000, n_labels=60)
    args = [sys.executable, "-m", "mig_ray", "select", str(pool), "-n", "1500", "--label-embeddings",
            str(emb_path), "--labels-field", "tags", "--score-field", "score", "--sim-threshold", "0.7",
            "--shards", "2", "--batch", "0", "--ray-address", ray_address, "--checkpoint-every", "0.2",
            "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole" / "sel.jsonl"
    subprocess.run([*args, "-o", str(whole)], check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)

    out = tmp_path / "resumed" / "sel.jsonl"
    ckpt = out.with_name("sel.checkpoint.npz")
    proc = subprocess.Popen([*args, "-o", str(out)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            with np.load(ckpt) as z:
                if len(z["positions"]) >= 200:
                    break
        time.sleep(0.05)
    assert proc.poll() is None, "the driver finished before it could be killed; make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with np.load(ckpt) as z:
        done_before = len(z["positions"])
    assert not out.exists()
    rerun = subprocess.run([*args, "-o", str(out)], check=True, env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    summary = json.loads(out.with_name("sel.summary.json").read_text())
    assert summary["greedy"]["resumed_from_checkpoint"] >= done_before > 0, rerun.stderr
    assert out.read_bytes() == whole.read_bytes()
    manifest = "sel.manifest.jsonl"
    assert out.with_name(manifest).read_bytes() == whole.with_name(manifest).read_bytes()
    assert not ckpt.exists()
