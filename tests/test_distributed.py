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
from reference import reference_order

from mig_ray.core.graph import LabelGraph
from mig_ray.selection.config import SelectConfig
from mig_ray.selection.run import run_select

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
    want, _, _, _ = reference_order(labels, scores, vocab, emb, k, threshold,
                                    kw.get("propagation", "target"), 1.0, kw.get("norm", False),
                                    kw.get("phi", "pow"), kw.get("gain", "gradient"))
    return [f"r{i}" for i in want]


def config(tmp_path, pool, emb, name, **kw) -> SelectConfig:
    base = {"pool": pool, "out": tmp_path / name / "sel.jsonl", "label_embeddings": emb,
            "labels_field": "tags", "score_field": "score", "sim_threshold": 0.7, "progress": False}
    return SelectConfig(**(base | kw))


def manifest_ids(cfg: SelectConfig) -> list[str]:
    path = cfg.out.with_name("sel.manifest.jsonl")
    return [json.loads(x)["id"] for x in path.read_text().splitlines()]


@pytest.mark.parametrize("shards", [1, 2, 3, 5, 7])
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
    sharded = config(tmp_path, pool, emb_path, "ray", n=50, shards=3, ray_address=ray_address,
                     previous_manifest=local.out.with_name("sel.manifest.jsonl"))
    s_local, s_ray = run_select(local), run_select(sharded)
    # the local run's selection measured on the sharded run's graph: the same set on the same graph
    prev = s_ray["information"]["previous_selection"]
    assert prev["samples"] == 50 and prev["labels_not_in_graph"] == 0
    assert prev["selected"] == pytest.approx(s_local["information"]["selected"], rel=1e-12)
    assert s_local["counts"]["rejected"] == 1 + len(range(0, 120, 9))
    assert s_ray["counts"] == s_local["counts"]
    rej = [json.loads(x) for x in (tmp_path / "ray" / "sel.rejects.jsonl").read_text().splitlines()]
    assert rej == [json.loads(x) for x in (tmp_path / "local" / "sel.rejects.jsonl").read_text().splitlines()]
    assert manifest_ids(sharded) == manifest_ids(local)


@pytest.mark.parametrize(("kill_round", "batch"), [(0, 4), (3, 4), (5, 0)])
def test_killed_shard_actor_is_rebuilt_and_order_unchanged(tmp_path, ray_address, kill_round, batch):
    """Round 0 kills a shard right after its block is loaded (before the graph); later rounds kill
    one mid-selection."""
    import ray

    pool, emb_path, vocab, emb, labels, scores = write_pool(tmp_path, 3, n=300, n_labels=40)
    want = naive_ids(vocab, emb, labels, scores, 150, 0.7)
    killed = []

    def kill_one(rnd, actors):
        if rnd == kill_round:
            ray.kill(actors[1], no_restart=False)
            killed.append(rnd)

    cfg = config(tmp_path, pool, emb_path, "ray", n=150, shards=3, batch=batch, ray_address=ray_address)
    summary = run_select(cfg, on_round=kill_one)
    assert killed == [kill_round] and summary["greedy"]["shard_restarts"] >= 1
    assert manifest_ids(cfg) == want


def test_restarted_actor_without_state_is_restored(tmp_path, ray_address):
    """A call that reaches an actor Ray already restarted (empty state) fails loudly (ShardLost) and
    the driver restores the actor, instead of reading proposals from an empty shard."""
    import ray

    from mig_ray.core.objective import Phi
    from mig_ray.pools.annotated import split_blocks
    from mig_ray.pools.fields import FieldSpec
    from mig_ray.selection.engine import ShardPlan, Shards
    from mig_ray.selection.shard import ShardActor

    pool, emb_path, vocab, emb, labels, scores = write_pool(tmp_path, 11, n=80, n_labels=20)
    graph = LabelGraph.build(vocab, emb, threshold=0.7)
    p_ref, nodes_ref = ray.put(graph.propagation("target", 1.0)), ray.put(graph.labels)
    block = split_blocks(pool, 1)[0]
    actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=0)(ShardActor).remote(
        str(pool), block, FieldSpec("tags", "score", None), None, False)
    try:
        shards = Shards([actor], [ShardPlan(block, np.zeros(0, dtype=np.int64))])
        shards.call_each("load", [(block.first_line,)])
        shards.level = "loaded"
        shards.restore_args = (nodes_ref, p_ref, Phi(), "gradient", False, None, None)  # no limits
        shards.level = "built"
        shards.call_each("build", [(nodes_ref, p_ref, 0, Phi(), "gradient", False)], replayed_by_restore=True)
        before = shards.call("propose", 5)[0]
        pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 60
        while True:  # until Ray has restarted it (a new process): then it answers, but holds nothing
            try:
                if ray.get(actor.__ray_call__.remote(lambda self: os.getpid())) == pid:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)  # the kill has not reached the old process yet
                    continue
                ray.get(actor.propose.remote(5))
                raise AssertionError("a restarted shard answered from empty state")
            except ray.exceptions.RayTaskError as e:
                assert "ShardLost" in str(e)
                break
            except ray.exceptions.RayActorError:  # dead or restarting: not yet
                assert time.monotonic() < deadline
                time.sleep(0.2)
        after = shards.call("propose", 5)[0]
        assert shards.restarts >= 1
        assert after.positions.tolist() == before.positions.tolist()
        assert after.gains.tolist() == before.gains.tolist() and after.bound == before.bound
    finally:
        ray.kill(actor)


def test_default_local_ray_is_loopback_without_dashboard(ray_address):
    """The session cluster comes from ray_up(None): no web dashboard, and every socket that Ray's
    processes (servers, agents, workers) listen on is bound to loopback."""
    import ray

    psutil = pytest.importorskip("psutil")
    node = ray._private.worker._global_node
    assert not node.webui_url
    for info in node.all_processes.get("dashboard", []):  # Ray keeps a head process with no web UI
        assert "--disable-frontend" in psutil.Process(info.process.pid).cmdline()
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    procs = {}
    for infos in node.all_processes.values():
        for info in infos:
            proc = psutil.Process(info.process.pid)
            procs[proc.pid] = proc
            procs.update({c.pid: c for c in proc.children(recursive=True)})
    listening = set()
    for proc in procs.values():
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        listening |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    assert listening and listening <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, listening


def test_a_parquet_read_starts_one_footer_reader_per_8_task_slots(tmp_path, ray_address):
    """Ray Data 2.60 lists a `read_parquet` with 32 new FooterReader actors, a worker process each
    (about 5 s per read on 2 cores); a Ray that mig_ray starts or joins sizes that pool to the
    cluster: one per 8 task slots, 1 to 32."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray._private.state as ray_state
    import ray.data

    from mig_ray.runtime.session import FOOTER_ACTORS, ensure_ray, task_slots

    ensure_ray()
    want = max(1, min(32, task_slots() // 8))
    assert os.environ[FOOTER_ACTORS] == str(want)

    def readers() -> int:
        return sum(a.get("ActorClassName") == "FooterReader" for a in ray_state.actors().values())

    for i in range(3):
        pq.write_table(pa.table({"id": [f"{i}-{j}" for j in range(50)]}), tmp_path / f"part-{i}.parquet")
    before = readers()
    read = ray.data.read_parquet(str(tmp_path)).map_batches(lambda b: b, batch_format="pyarrow")
    assert read.count() == 150
    assert readers() - before == want


def test_cli_joins_running_cluster_with_auto(tmp_path, ray_address):
    """`--ray-address auto` joins the running cluster (it fails if there is none to join). The
    cluster it finds is named by RAY_ADDRESS (as inside a Ray job): the test session's, never another
    Ray that happens to run on the machine."""
    pool, emb_path, vocab, emb, labels, scores = write_pool(tmp_path, 13, n=120, n_labels=20)
    want = naive_ids(vocab, emb, labels, scores, 40, 0.7)
    out = tmp_path / "auto" / "sel.jsonl"
    run = subprocess.run([sys.executable, "-m", "mig_ray", "select", str(pool), "-n", "40", "-o", str(out),
                          "--label-embeddings", str(emb_path), "--labels-field", "tags", "--score-field",
                          "score", "--sim-threshold", "0.7", "--shards", "2", "--ray-address", "auto",
                          "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ray_address})
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.with_name("sel.summary.json").read_text())
    assert summary["greedy"]["engine"] == "ray" and summary["approximate"] is False
    assert [json.loads(x)["id"] for x in out.with_name("sel.manifest.jsonl").read_text().splitlines()] == want


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
