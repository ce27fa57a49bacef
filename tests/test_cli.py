"""`mig-ray select` end to end, through a subprocess, on the real example and on generated pools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from fixtures import DATA, TULU3_TAGS
from pools import random_pool
from reference import dense_graph, phi_value, propagated, reference_order

ROOT = Path(__file__).resolve().parents[1]


def mig_ray(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mig_ray", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.with_name(out.stem + ".manifest.jsonl").read_text().splitlines()]


def test_real_example_with_bundled_model(tmp_path):
    pool = DATA / "mig_example_tulu3_10.jsonl"
    out = tmp_path / "sel.jsonl"
    proc = mig_ray("select", pool, "-n", 4, "-o", out, "--valid-tags", TULU3_TAGS,
                   "--target-degree", 2, "--no-progress")
    assert "selected 4 of 9 selectable records (read 10, rejected 1" in proc.stdout
    assert "label graph:" in proc.stderr and "mean degree" in proc.stderr
    rejects = [json.loads(x) for x in (tmp_path / "sel.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"][:12]) for r in rejects] == [(3, "invalid JSON")]
    # selected records are the input lines, byte for byte, in manifest order
    lines = pool.read_bytes().splitlines(keepends=True)
    m = manifest(out)
    assert [r["rank"] for r in m] == [1, 2, 3, 4]
    assert out.read_bytes() == b"".join(lines[r["line"] - 1] for r in m)
    assert all(a["greedy_key"] >= b["greedy_key"] for a, b in zip(m, m[1:], strict=False))  # keys only fall
    summary = json.loads((tmp_path / "sel.summary.json").read_text())
    # the graph's nodes: the valid labels the 9 selectable records carry, counted from the file
    valid = set(json.loads(TULU3_TAGS.read_text()))
    nodes = set()
    for line in lines:
        try:
            ann = json.loads(line)["annotation"]
        except ValueError:
            continue  # the broken line
        nodes |= set(ann["instag"]["content"]) & valid
    assert summary["counts"]["rejected"] == 1 and summary["graph"]["labels"] == len(nodes)
    assert summary["config"]["target_degree"] == 2 and summary["approximate"] is False
    assert set(summary["seconds"]) == {"read", "embed_labels", "graph", "vectors", "select", "write"}


def test_second_run_loads_the_valid_tag_embeddings_from_the_cache(tmp_path):
    pool = DATA / "mig_example_tulu3_10.jsonl"
    tulu = json.loads(TULU3_TAGS.read_text())
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps(sorted(tulu)[::15]
                                + [t for line in pool.read_text().splitlines() if line.startswith("{")
                                   for t in _example_tags(line)]))
    outs = []
    for run in ("first", "second"):
        out = tmp_path / run / "sel.jsonl"
        mig_ray("select", pool, "-n", 5, "-o", out, "--valid-tags", valid, "--target-degree", 3,
                "--embedding-cache-dir", tmp_path / "cache", "--no-progress")
        summary = json.loads(out.with_name("sel.summary.json").read_text())
        outs.append((out.read_bytes(), out.with_name("sel.manifest.jsonl").read_bytes(),
                     summary["label_embeddings"]["source"], summary["graph"]))
    assert outs[0][2] == "model: valid tags" and outs[1][2] == "cache"
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1] and outs[0][3] == outs[1][3]


def _example_tags(line: str) -> list[str]:
    try:
        return json.loads(line)["annotation"]["instag"]["content"]
    except (ValueError, KeyError, TypeError):
        return []


@pytest.mark.parametrize(("fmt", "extra"), [("jsonl", []), ("parquet", ["--propagation", "source",
                                                                       "--gain", "exact", "--norm"])])
def test_generated_pool_matches_naive_greedy(tmp_path, fmt, extra):
    vocab, emb, labels, scores = random_pool(5, n=120, n_labels=25)
    recs = [{"id": f"r{i}", "meta": {"tags": ls, "score": float(s)}, "text": "x" * i}
            for i, (ls, s) in enumerate(zip(labels, scores, strict=True))]
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)
    out = tmp_path / f"sel.{fmt}"
    mig_ray("select", pool, "-n", 50, "-o", out, "--label-embeddings", tmp_path / "emb.npz",
            "--labels-field", "meta.tags", "--score-field", "meta.score", "--sim-threshold", 0.7,
            "--no-progress", *extra)

    source = "--propagation" in extra
    want, _, _, _ = reference_order(labels, scores, vocab, emb, 50, 0.7, "source" if source else "target",
                                    1.0, source, "pow", "exact" if source else "gradient")
    assert [r["id"] for r in manifest(out)] == [f"r{i}" for i in want]
    got = pq.read_table(out).to_pylist() if fmt == "parquet" else [json.loads(x) for x in out.open()]
    assert got == [recs[i] for i in want]


def test_previous_selection_measured_on_this_graph(tmp_path):
    """--previous-manifest: an earlier selection's information on this run's graph. On the same pool
    and options it is this run's own information, bit for bit; on a grown pool and another threshold
    it is what the dense reference computes from the earlier manifest's labels and scores."""
    vocab, emb, labels, scores = random_pool(7, n=160, n_labels=25)
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)

    def pool_file(name, n):
        recs = [{"id": f"r{i}", "tags": ls, "score": float(s)}
                for i, (ls, s) in enumerate(zip(labels[:n], scores[:n], strict=True))]
        path = tmp_path / name
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
        return path

    common = ["--label-embeddings", tmp_path / "emb.npz", "--labels-field", "tags", "--score-field", "score",
              "--no-progress"]
    small = pool_file("small.jsonl", 100)
    first = tmp_path / "first.jsonl"
    mig_ray("select", small, "-n", 30, "-o", first, "--sim-threshold", 0.7, *common)
    previous = first.with_name("first.manifest.jsonl")

    again = tmp_path / "again.jsonl"
    proc = mig_ray("select", small, "-n", 30, "-o", again, "--sim-threshold", 0.7, *common,
                   "--previous-manifest", previous)
    info = json.loads((tmp_path / "again.summary.json").read_text())["information"]
    assert info["previous_selection"]["selected"] == info["selected"]
    assert info["previous_selection"]["samples"] == 30
    assert info["previous_selection"]["labels_not_in_graph"] == 0
    assert "previous selection (30 samples" in proc.stdout

    grown = tmp_path / "grown.jsonl"
    mig_ray("select", pool_file("all.jsonl", 160), "-n", 30, "-o", grown, "--sim-threshold", 0.6,
            *common, "--previous-manifest", previous)
    info = json.loads((tmp_path / "grown.summary.json").read_text())["information"]
    nodes = sorted({lab for ls in labels for lab in ls})
    w = dense_graph(emb[[vocab.index(u) for u in nodes]], 0.6)
    rows = manifest(first)
    ehat = propagated([r["labels"] for r in rows], [r["score"] for r in rows], nodes, w)
    want = float(phi_value("pow", ehat.sum(axis=0)).sum())
    assert info["previous_selection"]["selected"] == pytest.approx(want, rel=1e-9)

    # With --norm, a label that is no node of this graph (here one per row, given twice) is left out
    # before the score is spread, as the reference leaves out labels outside its nodes.
    odd = tmp_path / "odd.manifest.jsonl"
    odd.write_bytes(b"".join(orjson.dumps(r | {"labels": [*r["labels"], "zz", "zz"]}) + b"\n" for r in rows))
    normed = tmp_path / "normed.jsonl"
    mig_ray("select", pool_file("all.jsonl", 160), "-n", 30, "-o", normed, "--sim-threshold", 0.6, "--norm",
            *common, "--previous-manifest", odd)
    prev = json.loads((tmp_path / "normed.summary.json").read_text())["information"]["previous_selection"]
    ehat = propagated([r["labels"] + ["zz"] for r in rows], [r["score"] for r in rows], nodes, w, norm=True)
    assert prev["selected"] == pytest.approx(float(phi_value("pow", ehat.sum(axis=0)).sum()), rel=1e-9)
    assert prev["labels_not_in_graph"] == len(rows)

    bad = tmp_path / "bad.manifest.jsonl"
    bad.write_text(previous.read_text().splitlines()[0] + "\n" + '{"id": "x", "labels": "a", "score": 1}\n')
    proc = mig_ray("select", small, "-n", 3, "-o", tmp_path / "b.jsonl", *common, "--previous-manifest", bad,
                   check=False)
    assert proc.returncode == 2 and f"{bad}:2: field 'labels' must be a list of strings" in proc.stderr
    assert not (tmp_path / "b.jsonl").exists()  # checked before any work


def test_n_larger_than_pool_selects_all(tmp_path):
    out = tmp_path / "all.jsonl"
    proc = mig_ray("select", DATA / "mig_example_tulu3_10.jsonl", "-n", 100, "-o", out,
                   "--no-progress")
    assert "is more than the 9 selectable records: selecting all of them" in proc.stderr
    assert len(manifest(out)) == 9
    summary = json.loads((tmp_path / "all.summary.json").read_text())
    assert summary["selected_all"] is True
    # no threshold given and the bundled model: the graph is built to mean degree 5, not at 0.9
    graph = summary["graph"]
    assert graph["threshold_rule"] == "default for the bundled model: target_degree 5"
    assert 5 <= graph["mean_degree"] < 6 and graph["threshold"] < 0.9
    assert "[default for the bundled model: target_degree 5]" in proc.stderr


def test_refuses_to_overwrite_input_and_strict_exit_code(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes((DATA / "mig_example_tulu3_10.jsonl").read_bytes())
    proc = mig_ray("select", pool, "-n", 2, "-o", pool, check=False)
    assert proc.returncode == 2 and "would overwrite the input pool" in proc.stderr
    assert pool.read_bytes() == (DATA / "mig_example_tulu3_10.jsonl").read_bytes()
    proc = mig_ray("select", pool, "-n", 2, "-o", tmp_path / "o.jsonl", "--strict", check=False)
    assert proc.returncode == 2
    assert f"{pool}:3: invalid JSON" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_options_exit_2(tmp_path):
    pool = DATA / "mig_example_tulu3_10.jsonl"
    proc = mig_ray("select", pool, "-n", 2, "-o", tmp_path / "o.jsonl", "--phi-b", 1.5, check=False)
    assert proc.returncode == 2 and "--phi-b" in proc.stderr
    proc = mig_ray("select", pool, "-n", 2, "-o", tmp_path / "o.csv", check=False)
    assert proc.returncode == 2 and ".jsonl or .parquet" in proc.stderr
    proc = mig_ray("select", pool, "-n", 2, "-o", tmp_path / "o.jsonl", "--embedding-model",
                   "sentence-transformers/all-MiniLM-L6-v2", check=False)
    assert proc.returncode == 2 and "never downloads" in proc.stderr
    # A folder that is not a sentence-transformers model fails in the background embedder.
    (tmp_path / "not_a_model").mkdir()
    proc = mig_ray("select", pool, "-n", 2, "-o", tmp_path / "o.jsonl", "--embedding-model",
                   tmp_path / "not_a_model", "--no-progress", check=False)
    assert proc.returncode == 2 and f"embedding model {tmp_path / 'not_a_model'}" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_help_explains_every_option():
    out = mig_ray("select", "--help").stdout
    for opt in ["--valid-tags", "--embedding-model", "--label-embeddings", "--sim-threshold",
                "--target-degree", "--prop-weight", "--propagation", "--phi", "--phi-a", "--phi-b",
                "--phi-alpha", "--norm", "--gain", "--shards", "--ray-address", "--labels-field",
                "--score-field", "--strict", "--embedding-cache", "--embedding-cache-dir",
                "--previous-manifest"]:
        assert opt in out, opt


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text().splitlines()
    blocks = [ln for ln in readme if ln.startswith("python3") or ln.startswith("bash ")]
    assert len(blocks) >= 2
    test_cmd = next(ln for ln in blocks if "pytest" in ln)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
