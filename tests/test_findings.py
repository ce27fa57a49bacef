"""What a new user hit in a round of trials (issue 22's list), each as it should behave now: one
list of layout names, no command replacing another's outputs unasked, the --out flag named, the
read bar in records for a Parquet pool, which types are ids, valid-tag drops on screen, inputs
checked before Ray starts."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mig_ray.errors import BadRecord
from mig_ray.job.jobfile import Layout
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.layouts import LAYOUTS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TULU3_TAGS = ROOT / "mig_ray" / "data" / "valid_tags_tulu3.json"


def cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mig_ray", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def record_in(layout: str, i: int) -> dict:
    """One conversation in `layout`, written from that layout's definition, not from the reader."""
    user, answer = f"question {i}", f"answer {i}"
    return {
        "released": {"_id": f"r{i}", "dialogs": [{"role": "user", "content": user},
                                                  {"role": "assistant", "content": answer}]},
        "sharegpt": {"id": f"s{i}", "conversations": [{"from": "human", "value": user},
                                                      {"from": "gpt", "value": answer}]},
        "openai": {"id": f"o{i}", "messages": [{"role": "user", "content": user},
                                               {"role": "assistant", "content": answer}]},
        "alpaca": {"instruction": user, "input": "", "output": answer},
    }[layout]


@pytest.mark.parametrize("layout", typing.get_args(Layout))
def test_every_layout_the_job_schema_accepts_runs(tmp_path, ray_address, layout):
    """The job file's layout names are ingest's (one list): each reads a pool in that layout."""
    from mig_ray.pools.ingest import ingest

    assert set(typing.get_args(Layout)) == {"auto", *LAYOUTS}
    pools = LAYOUTS if layout == "auto" else (layout,)
    path = tmp_path / "pool.jsonl"
    path.write_bytes(b"".join(orjson.dumps(record_in(p, i)) + b"\n" for p in pools for i in range(5)))
    result = ingest([path], tmp_path / "parts", layout=layout, progress=False)
    assert result.accepted == 5 * len(pools) and result.rejected == 0


def test_ingest_checks_its_inputs_before_ray_starts(tmp_path):
    code = ("import ray\nfrom mig_ray.errors import PoolError\nfrom mig_ray.pools.ingest import ingest\n"
            f"try:\n    ingest([{str(tmp_path / 'missing.jsonl')!r}], {str(tmp_path / 'out')!r})\n"
            "except PoolError as e:\n    print('error', e, 'ray', ray.is_initialized())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip().endswith("no such file ray False"), proc.stdout + proc.stderr


@pytest.mark.parametrize(("value", "ok"),
                         [("a1", True), (7, True), (True, False), (1.5, False), ([1], False)])
def test_ids_are_strings_or_whole_numbers_in_every_field(value, ok):
    for field in ("_id", "id"):
        spec = FieldSpec()
        if ok:
            assert spec.record_id({field: value}) == str(value)
        else:
            with pytest.raises(BadRecord, match=f"id not a string or a whole number: {field} = "):
                spec.record_id({field: value})


def test_out_that_is_the_pool_names_the_out_flag(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes((DATA / "mig_example_tulu3_10.jsonl").read_bytes())
    proc = cli("select", pool, "-n", 2, "-o", pool)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --out: output ") and "would overwrite the input pool" in proc.stderr


def test_select_and_demo_do_not_replace_a_jobs_outputs_unless_forced(tmp_path):
    """A folder holding a job's outputs (run.json, job.resolved.yaml beside selected.*) is left alone
    by `select` and `demo`; --force replaces them. The demo's default folder is not the demo job's."""
    out = tmp_path / "demo_out"
    out.mkdir()
    (out / "job.resolved.yaml").write_text("name: a job\n")
    (out / "selected.jsonl").write_text("the job's selection\n")
    proc = cli("demo", "-o", out, "-n", 3, "--no-progress")
    assert proc.returncode == 2 and "holds the outputs of a job (mig-ray run)" in proc.stderr, proc.stderr
    assert "--force" in proc.stderr and (out / "selected.jsonl").read_text() == "the job's selection\n"
    proc = cli("select", DATA / "mig_example_tulu3_10.jsonl", "-n", 2, "-o", out / "selected.jsonl")
    assert proc.returncode == 2 and (out / "selected.jsonl").read_text() == "the job's selection\n"
    proc = cli("demo", "-o", out, "-n", 3, "--no-progress", "--force")
    assert proc.returncode == 0, proc.stderr
    assert len((out / "selected.manifest.jsonl").read_text().splitlines()) == 3
    assert "demo_select" in cli("demo", "--help").stdout


def test_a_job_does_not_replace_a_selects_outputs(tmp_path):
    from mig_ray.errors import JobError
    from mig_ray.job.jobfile import load_job
    from mig_ray.job.pipeline import run_job

    out = tmp_path / "out"
    out.mkdir()
    (out / "selected.summary.json").write_text('{"command": "select"}')
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{paths: [{DATA / 'mig_example_tulu3_10.jsonl'}]}}\n"
                   "annotate: {tagger: {kind: from-data}}\nselection: {n: 2}\n"
                   f"output: {{dir: {out}}}\n")
    with pytest.raises(JobError, match="holds the outputs of `mig-ray select`"):
        run_job(load_job(job))
    assert sorted(p.name for p in out.iterdir()) == ["selected.summary.json"]


def test_the_read_bar_counts_records_of_a_parquet_pool_and_valid_tag_drops_are_shown(tmp_path):
    rows = []
    for line in (DATA / "mig_example_tulu3_10.jsonl").read_bytes().splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue  # the fixture's broken line
    flat = [{"id": str(i), "labels": r["annotation"]["instag"]["content"] + ["not-a-tulu3-tag"],
             "score": 1.0 + i} for i, r in enumerate(rows)]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(flat), pool)
    emb = tmp_path / "emb.npz"

    labels = sorted({t for r in flat for t in r["labels"]})
    vectors = np.random.default_rng(0).normal(size=(len(labels), 8))
    np.savez(emb, labels=np.array(labels), embeddings=vectors)
    proc = cli("select", pool, "-n", 2, "-o", tmp_path / "sel.jsonl", "--labels-field", "labels",
               "--score-field", "score", "--id-field", "id", "--label-embeddings", emb, "--valid-tags",
               TULU3_TAGS)
    assert proc.returncode == 0, proc.stderr
    bar = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("read pool")]
    assert bar and all(f"/{len(flat)}" in line and "records" in line for line in bar), bar
    valid = set(orjson.loads(TULU3_TAGS.read_bytes()))
    dropped = sum(t not in valid for r in flat for t in r["labels"])
    assert f"({dropped} labels not in {TULU3_TAGS} dropped)" in proc.stderr
