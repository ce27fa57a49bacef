"""The job on a real multi-node Ray cluster: a head and two worker nodes on this machine (real
raylets on loopback, started by tests/multinode_driver.py in a process of its own, apart from the
session's cluster). Annotation and shard actors go to the worker nodes through the job's resource
options; a worker node killed mid-selection costs restarts, not the result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from reference import dense_graph, naive_greedy, propagated

from mig_ray.errors import JobError
from mig_ray.job.jobfile import load_job

ROOT = Path(__file__).resolve().parents[1]
DEMO_POOL = ROOT / "mig_ray" / "demo" / "demo_pool.jsonl"
FINAL = ("selected.jsonl", "selected.manifest.jsonl")
THRESHOLD = 0.5
K = 24


def write_jobs(tmp: Path) -> None:
    """A small pool (the demo pool's first 80 records), a vocabulary of their own released tags
    for the embedding tagger, field scores; three jobs that differ only in shards and output."""
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)[:80]
    (tmp / "pool.jsonl").write_bytes(b"".join(lines))
    vocab = sorted({t for x in lines for t in orjson.loads(x)["annotation"]["instag"]["content"]})
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    on_workers = {"mig_worker": 1}
    for name, shards in (("single", 1), ("multi", 2), ("killed", 2)):
        job = {
            "name": f"multinode-{name}",
            "input": {"paths": [str(tmp / "pool.jsonl")]},
            "annotate": {
                "tagger": {"kind": "embedding",
                           "options": {"vocabulary": str(tmp / "vocab.json"), "top_k": 4},
                           "resources": {"concurrency": 1, "num_cpus": 0.5, "batch_size": 40,
                                         "custom_resources": on_workers}},
                "scorer": {"kind": "field"},
                "cache_dir": str(tmp / "cache"),
            },
            "graph": {"sim_threshold": THRESHOLD},
            "selection": {"n": K, "shards": shards, "batch": 0},
            "output": {"dir": str(tmp / name)},
            "ray": {"shard_actors": {"num_cpus": 0.5, "custom_resources": on_workers}},
            "progress": False,
        }
        (tmp / f"job-{name}.yaml").write_text(yaml.safe_dump(job))


def naive_ids(out: Path) -> list[str]:
    """The naive dense greedy on the job's assembled pool and the tagger's label embeddings."""
    pool = pq.read_table(out / "assemble" / "pool.parquet").sort_by("position").to_pylist()
    with np.load(out / "tag" / "label_embeddings.npz") as z:
        row = {str(lab): i for i, lab in enumerate(z["labels"])}
        emb = z["embeddings"]
    nodes = sorted({lab for r in pool for lab in r["labels"]})
    w = dense_graph(emb[[row[n] for n in nodes]], THRESHOLD)
    ehat = propagated([r["labels"] for r in pool], [r["score"] for r in pool], nodes, w)
    order, _ = naive_greedy(ehat, K)
    return [pool[i]["id"] for i in order]


def manifest_ids(out: Path) -> list[str]:
    return [orjson.loads(x)["id"] for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]


def test_job_on_three_nodes_places_actors_on_workers_and_survives_a_dead_worker(tmp_path):
    write_jobs(tmp_path)
    ray_tmp = tempfile.mkdtemp(prefix="mr-mn-", dir="/tmp")  # short: Unix socket paths are limited
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "multinode_driver.py"), str(tmp_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, log[-6000:]
    report = json.loads((tmp_path / "report.json").read_text())
    print("seconds:", report["seconds"])
    assert report["nodes"] == ["head", "worker_a", "worker_b"]

    # the tagger's actors (Ray Data's actor pool) ran on the workers only, never on the head
    annotators = [a for a in report["actors_after_single"] if "_Annotate" in a["class"]]
    assert annotators and {a["node"] for a in annotators} <= {"worker_a", "worker_b"}, annotators
    assert report["single"]["counts"]["tagging"]["annotated"] == 80
    assert report["single"]["greedy"]["engine"] == "local"
    assert not any(a["class"] == "ShardActor" for a in report["actors_after_single"])

    # two shard actors, one on each worker (custom resource + SPREAD)
    assert report["multi"]["greedy"]["engine"] == "ray" and report["multi"]["greedy"]["shards"] == 2
    assert sorted(report["multi_shard_nodes"]) == ["worker_a", "worker_b"]
    assert report["multi"]["ran"] == ["select", "write"]

    # worker_a died at round KILL_ROUND; its shard came back on worker_b and the job finished
    seen = report["killed_shard_nodes"]
    assert "worker_a" in seen["before"] and seen["killed_pids"], seen
    assert seen["after"] == ["worker_b", "worker_b"], seen
    assert report["killed"]["greedy"]["shard_restarts"] >= 1
    assert report["killed"]["greedy"]["rounds"] == K  # batch 0: one pick per round, rounds > KILL_ROUND
    assert report["killed"]["ran"] == ["select", "write"]

    # the same selection, byte for byte, whatever the cluster did; and the naive greedy's order
    single = tmp_path / "single"
    for name in ("multi", "killed"):
        for f in FINAL:
            assert (tmp_path / name / f).read_bytes() == (single / f).read_bytes(), (name, f)
    assert len(manifest_ids(single)) == K
    assert manifest_ids(single) == naive_ids(single)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ray.shard_actors.custom_resources", {"CPU": 1}, "'CPU' is not a custom resource"),
    ("annotate.tagger.resources.custom_resources", {"tagger": 0}, "the quantity must be > 0"),
    ("annotate.scorer.resources.custom_resources", {"scorer": 1.5}, "must be a whole number"),
])
def test_custom_resources_are_checked_when_the_job_is_read(tmp_path, key, value, message):
    """Ray would refuse these only when it creates the actor, after the stages before it ran."""
    write_jobs(tmp_path)
    with pytest.raises(JobError) as err:
        load_job(tmp_path / "job-multi.yaml", {key: value})
    text = str(err.value)
    assert "\n" not in text and f"job-multi.yaml: {key}: " in text and message in text, text


def test_resources_no_node_has_stop_a_local_run_with_exit_2(tmp_path):
    """A local Ray has no custom resources: its actors would wait forever, so the run stops."""
    write_jobs(tmp_path)
    job = yaml.safe_load((tmp_path / "job-multi.yaml").read_text())
    job["annotate"]["tagger"] = {"kind": "from-data"}
    job["ray"]["shard_actors"]["custom_resources"] = {"nowhere": 1}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "mig_ray", "run", str(tmp_path / "job.yaml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "job.yaml: ray.shard_actors.custom_resources: no node of this Ray has {'nowhere': 1.0}" in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "multi" / "ingest").exists()
