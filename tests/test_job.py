"""`mig-ray run JOB.yaml`: the demo job end to end, re-runs, kill -9 and resume, nightly increments,
invalid job files. Real Ray, the real embedding tagger and the bundled model throughout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from pools import random_pool

from mig_ray.errors import JobError
from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job

ROOT = Path(__file__).resolve().parents[1]
DEMO_JOB = ROOT / "jobs" / "demo.yaml"
DEMO_POOL = ROOT / "mig_ray" / "demo" / "demo_pool.jsonl"
FINAL = ("selected.jsonl", "selected.manifest.jsonl")


def cli(*args: object, cwd: Path = ROOT) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    return subprocess.Popen([sys.executable, "-m", "mig_ray", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def cli_run(*args: object) -> subprocess.CompletedProcess:
    proc = cli(*args)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def small_job(tmp_path: Path, pool: Path, out: Path, **extra) -> Path:
    """The demo job pointed at `pool` and `out` (and a cache of its own unless given)."""
    data = yaml.safe_load(DEMO_JOB.read_text())
    data["input"]["paths"] = [str(pool)]
    data["output"]["dir"] = str(out)
    data["progress"] = False
    # the tests written before the dedup stage check counts and selections of the whole pool; the
    # demo pool holds near duplicates, so they run with it off (tests/test_dedup_job.py runs it on)
    data.setdefault("dedup", {"enabled": False})
    for key, value in extra.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / f"job-{out.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def stage_status(summary: dict) -> dict[str, str]:
    return {name: row["status"] for name, row in summary["stages"].items()}


def manifest_ids(out: Path) -> list[str]:
    return [orjson.loads(x)["id"] for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, ray_address) -> Path:
    """One uninterrupted run of the demo job (in process, on the session's Ray) to compare against."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    run_job(load_job(small_job(tmp, DEMO_POOL, out)))
    return out


def test_sharded_selection_in_the_job_gives_the_same_outputs(tmp_path, reference_run):
    """selection.shards = 3 (shard actors on the session's Ray), annotations from the reference
    run's cache: the same records in the same order."""
    out = tmp_path / "sharded"
    job = small_job(tmp_path, DEMO_POOL, out, **{"selection.shards": 3, "selection.batch": 4,
                                                 "annotate.cache_dir": str(reference_run / "cache")})
    summary = run_job(load_job(job))
    assert summary["counts"]["tagging"]["annotated"] == 0
    assert summary["greedy"]["engine"] == "ray" and summary["greedy"]["shards"] == 3
    for name in FINAL:
        assert (out / name).read_bytes() == (reference_run / name).read_bytes(), name


def test_demo_job_through_the_cli_then_rerun_does_no_work(tmp_path, reference_run):
    """The shipped demo job (dedup on) through the CLI gives the bytes of the same job run in process
    elsewhere (its annotations from the reference run's cache), and a re-run does no work."""
    want = tmp_path / "in_process"
    run_job(load_job(small_job(tmp_path, DEMO_POOL, want, **{
        "dedup.enabled": True, "annotate.cache_dir": str(reference_run / "cache")})))
    out = tmp_path / "demo"
    proc = cli_run("run", DEMO_JOB, "-o", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "selected 30 of" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(stage_status(summary).values()) == {"ran"}
    # Ray's start is in the summary and its shutdown in the log (after every output was written)
    assert 0 < summary["ray"]["start_seconds"] < summary["stages"]["ingest"]["seconds"]
    assert re.search(r"ray: started in \d+\.\d\d s, shut down in \d+\.\d\d s", proc.stderr), proc.stderr
    assert summary["counts"]["tagging"]["annotated"] == summary["counts"]["ingested"] > 200
    for name in FINAL:  # same bytes as the in-process run of the same job elsewhere
        assert (out / name).read_bytes() == (want / name).read_bytes(), name
    # the selected records are input lines, byte for byte, in manifest order
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)
    manifest = [orjson.loads(x) for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]
    assert (out / "selected.jsonl").read_bytes() == b"".join(lines[m["line"] - 1] for m in manifest)
    assert yaml.safe_load((out / "job.resolved.yaml").read_text())["selection"]["n"] == 30

    again = cli_run("run", DEMO_JOB, "-o", out, "--no-progress")
    assert again.returncode == 0, again.stderr
    summary2 = json.loads((out / "summary.json").read_text())
    assert set(stage_status(summary2).values()) == {"skipped"}
    assert "ray" not in summary2 and "ray: started" not in again.stderr  # nothing to do: no Ray
    for name in FINAL:
        assert (out / name).read_bytes() == (want / name).read_bytes(), name


def start_then_kill_when(job: Path, tmp_path: Path, ready, done_marker: Path) -> None:
    """Start `mig-ray run JOB` and kill -9 it (its whole process group, as a crash would) as soon as
    `ready()` holds: stopped first, so that it cannot finish between the check and the kill. Its
    stderr goes to a file: an unread pipe could block it, and a blocking read could pass any deadline."""
    err = tmp_path / "killed.stderr"
    with err.open("wb") as f:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
        proc = subprocess.Popen([sys.executable, "-m", "mig_ray", "run", str(job)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGSTOP)
        seen = err.read_text(errors="replace")
        assert proc.poll() is None, f"the job ended before the event it is killed on:\n{seen}"
        assert ready(), f"no kill event within 300 s:\n{seen}"
        assert not done_marker.exists(), "the stage finished before the kill"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_9_mid_tag_then_rerun_annotates_only_what_the_cache_lacks(tmp_path, reference_run, ray_address):
    """Killed once the tagger has written a cache part: the re-run serves those from the cache,
    annotates only the rest, and ends with the uninterrupted run's bytes."""
    out, cache = tmp_path / "killed", tmp_path / "cache"
    job = small_job(tmp_path, DEMO_POOL, out, **{"annotate.cache_dir": str(cache), "annotate.part_rows": 32,
                                                 "annotate.tagger.resources.batch_size": 16,
                                                 "ray.address": ray_address})

    def parts() -> list[Path]:
        return sorted(cache.glob("tags/*/part-*.parquet"))

    start_then_kill_when(job, tmp_path, lambda: len(parts()) > 0, out / "tag" / "_DONE.json")
    cached = sum(pq.read_metadata(p).num_rows for p in parts())
    assert not (out / "selected.jsonl").exists()
    summary = run_job(load_job(job))  # the re-run, on the test session's Ray
    status = stage_status(summary)
    assert status["ingest"] == "skipped" and status["tag"] == "ran"
    tagging = summary["counts"]["tagging"]
    assert tagging["cached"] == cached > 0  # the work the killed run saved
    assert tagging["annotated"] == tagging["total"] - cached == summary["counts"]["ingested"] - cached
    for name in FINAL:
        assert (out / name).read_bytes() == (reference_run / name).read_bytes(), name


def released_pool(path: Path, labels: list[list[str]], scores) -> None:
    """A pool in the released annotated layout, ids r0, r1, ... (one turn, the score as quality)."""
    rows = [{"_id": f"r{i}", "dialogs": [{"role": "user", "content": f"question {i}"},
                                         {"role": "assistant", "content": f"answer {i}"}],
             "annotation": {"instag": {"content": ls}, "deita": {"quality_scores": [float(s)],
                                                                 "complexity_scores": [1.0]}}}
            for i, (ls, s) in enumerate(zip(labels, scores, strict=True))]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def test_kill_9_mid_select_then_rerun_resumes_from_the_checkpoint(tmp_path, ray_address):
    """The selection checkpoint survives the select stage's re-run: killed after it has committed
    samples, the re-run restores them and ends with naive greedy's order."""
    from test_distributed import naive_ids

    vocab, emb, labels, scores = random_pool(5, n=2000, n_labels=60)
    pool = tmp_path / "pool.jsonl"
    released_pool(pool, labels, scores)
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)
    out = tmp_path / "killed"
    job = small_job(tmp_path, pool, out, **{
        "annotate.tagger": {"kind": "from-data"}, "annotate.scorer": {"kind": "field"},
        "graph": {"label_embeddings": str(tmp_path / "emb.npz"), "sim_threshold": 0.7},
        "selection": {"n": 1500, "shards": 2, "batch": 0, "checkpoint_seconds": 0.1},
        "ray.address": ray_address})
    ckpt = out / "select" / "selected.checkpoint.npz"

    def committed() -> int:
        try:
            with np.load(ckpt) as z:
                return len(z["positions"])
        except (OSError, ValueError, KeyError):  # not there yet
            return 0

    start_then_kill_when(job, tmp_path, lambda: committed() >= 100, out / "select" / "_DONE.json")
    saved = committed()
    summary = run_job(load_job(job))
    status = stage_status(summary)
    assert status["assemble"] == "skipped" and status["select"] == "ran"
    assert summary["stages"]["select"]["counts"]["resumed_from_checkpoint"] >= saved >= 100
    assert summary["greedy"]["resumed_from_checkpoint"] >= saved
    assert not ckpt.exists()  # a finished selection leaves no checkpoint behind
    assert manifest_ids(out) == naive_ids(vocab, emb, labels, scores, 1500, 0.7)


def test_nightly_increment_annotates_only_new_ids_and_writes_the_diff(tmp_path, ray_address, quick_tagger):
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(lines[:150]))
    out, cache = tmp_path / "nightly", tmp_path / "cache"
    job = small_job(tmp_path, pool, out, **{"annotate.cache_dir": str(cache),
                                            "annotate.tagger": quick_tagger})
    first = run_job(load_job(job))
    assert first["counts"]["tagging"]["annotated"] == 150
    before = manifest_ids(out)

    pool.write_bytes(b"".join(lines))  # the night's new records arrive
    with pytest.raises(JobError, match="--incremental"):
        run_job(load_job(job))
    second = run_job(load_job(job, {"incremental": True}))
    assert second["counts"]["tagging"]["annotated"] == len(lines) - 150
    assert second["counts"]["tagging"]["cached"] == 150
    after = manifest_ids(out)
    diff = json.loads((out / "diff.json").read_text())
    assert diff["added"] == [i for i in after if i not in set(before)]
    assert diff["dropped"] == [i for i in before if i not in set(after)]
    assert diff["kept"] == len(set(before) & set(after))
    assert diff["information"]["before"] == first["information"]["selected"]
    assert diff["information"]["after"] == second["information"]["selected"]
    # last night's selection re-measured on tonight's graph, the measure `after` is on
    select = json.loads((out / "select" / "selected.summary.json").read_text())
    prev = select["information"]["previous_selection"]
    assert prev["samples"] == len(before) and prev["labels_not_in_graph"] == 0
    assert diff["information"]["before_on_this_graph"] == prev["selected"] > 0

    # the third night the pool shrinks to its last 141 records: all of them are in the cache
    pool.write_bytes(b"".join(lines[100:]))
    third = run_job(load_job(job, {"incremental": True}))
    left = len(lines) - 100
    assert third["counts"]["tagging"] == {"total": left, "cached": left, "annotated": 0, "failed": 0,
                                          "model_calls": 0}
    assert manifest_ids(out / "previous") == after
    gone = {orjson.loads(x)["_id"] for x in lines[:100]}
    assert not gone & set(manifest_ids(out))
    diff = json.loads((out / "diff.json").read_text())
    assert diff["dropped"] == [i for i in after if i not in set(manifest_ids(out))]


@pytest.mark.parametrize(("edit", "message"), [
    ({"selektion": {"n": 3}}, "unknown key 'selektion'"),
    ({"selection": {"n": "many"}}, "selection.n"),
    ({"annotate": {"tagger": {"kind": "gpt"}}}, "'gpt' is not allowed"),
    ({"input": None}, "input"),
    ({"input": {"paths": ["/nonexistent/pool.jsonl"]}}, "does not exist"),
    ({"annotate": {"tagger": {"kind": "embedding", "options": {"top_kk": 3}}}}, "top_kk"),
    ({"input": {"id_field": " "}}, "input.id_field: bad dotted field path"),  # was an internal error
    ({"annotate": {"scorer": {"kind": "field", "field": "a..b"}}}, "annotate.scorer.field: bad dotted"),
    ({"selection": {"n": 3, "groups": "meta."}}, "selection: bad dotted field path 'meta.'"),
    ({"compare": {"methods": ["mig", "qdit"], "options": {"qdit": {"alpha": 2}}}}, "qdit.alpha must be in"),
    ({"compare": {"options": {"qdit": {"alfa": 0.5}}}}, "qdit: unknown option 'alfa'"),
])
def test_invalid_job_files_fail_fast_with_exit_2_and_write_nothing(tmp_path, edit, message):
    data = yaml.safe_load(DEMO_JOB.read_text())
    out = tmp_path / "never"
    data["output"]["dir"] = str(out)
    data["input"]["paths"] = [str(DEMO_POOL)]
    for key, value in edit.items():
        if value is None:
            del data[key]
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    job = tmp_path / "bad.yaml"
    job.write_text(yaml.safe_dump(data))
    proc = cli_run("run", job)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and str(job) in proc.stderr
    assert not out.exists()


def test_an_empty_valid_tags_file_fails_at_load_not_after_tagging(tmp_path):
    empty = tmp_path / "valid.txt"
    empty.write_text("\n")
    job = small_job(tmp_path, DEMO_POOL, tmp_path / "out", **{"graph.valid_tags": str(empty)})
    with pytest.raises(JobError, match=r"graph\.valid_tags: .*valid\.txt: the valid-tags file holds no tags"):
        load_job(job)


def test_output_inside_input_is_refused(tmp_path):
    src = tmp_path / "pooldir"
    src.mkdir()
    (src / "pool.jsonl").write_bytes(DEMO_POOL.read_bytes())
    job = small_job(tmp_path, src, src / "out")
    with pytest.raises(JobError, match="inside or equal to the input"):
        load_job(job)
    job = small_job(tmp_path, src / "pool.jsonl", src)
    with pytest.raises(JobError, match="holds the input"):
        load_job(job)
    assert not (src / "out").exists()


def test_yaml_is_safe_loaded(tmp_path):
    job = tmp_path / "evil.yaml"
    job.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(JobError, match="not valid YAML"):
        load_job(job)


@pytest.mark.parametrize("name", ["demo.yaml", "tulu3-cluster.yaml", "nightly.yaml"])
def test_example_jobs_are_valid_job_files(tmp_path, name):
    """The shipped jobs validate, annotator options included, once their cluster paths exist."""
    from mig_ray.job.annotators import annotators
    from mig_ray.job.jobfile import parse_job

    data = yaml.safe_load((ROOT / "jobs" / name).read_text())
    model = tmp_path / "model"
    model.mkdir()
    data["input"]["paths"] = [str(DEMO_POOL)]
    data["output"]["dir"] = str(tmp_path / "out")
    if data["graph"].get("valid_tags"):
        data["graph"]["valid_tags"] = str(ROOT / "mig_ray" / "data" / "valid_tags_tulu3.json")
    for part in ("tagger", "scorer"):
        opts = data["annotate"][part].get("options", {})
        for key in ("model", "complexity_model"):
            if key in opts:
                opts[key] = str(model)
        if "valid_tags" in opts:
            opts["valid_tags"] = data["graph"]["valid_tags"]
    job = parse_job(data, name)
    annotators(job, name)
    assert job.selection.k(1000) > 0


def test_from_data_labels_and_field_scores_at_dotted_paths(tmp_path, ray_address):
    """Labels and scores read from the raw records at dotted paths (the job's `_from_records`) give
    what `mig-ray select --labels-field/--score-field` gives on the same file; bad values become
    unselectable with the field named."""
    rows = []
    for i, line in enumerate(DEMO_POOL.read_bytes().splitlines()[:60]):
        rec = orjson.loads(line)
        ann = rec.pop("annotation")
        deita = ann["deita"]
        score = sum(q * c for q, c in zip(deita["quality_scores"], deita["complexity_scores"], strict=True))
        rec["meta"] = {"tags": ann["instag"]["content"], "score": score / len(deita["quality_scores"])}
        if i == 7:
            rec["meta"]["score"] = "high"
        if i == 11:
            del rec["meta"]["tags"]
        rows.append(rec)
    pool = tmp_path / "meta_pool.jsonl"
    pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "out"
    job = small_job(tmp_path, pool, out, **{
        "annotate.tagger": {"kind": "from-data", "labels_field": "meta.tags"},
        "annotate.scorer": {"kind": "field", "field": "meta.score"}, "selection.n": 12})
    summary = run_job(load_job(job))
    assert summary["counts"]["selectable"] == 58 and summary["counts"]["unselectable"] == 2
    # the summary table says where labels and scores came from, and the resolved job the threshold
    assert summary["stages"]["score"]["source"] == "field: meta.score"
    assert summary["stages"]["tag"]["source"] == "from the data: meta.tags"
    last = (out / "job.resolved.yaml").read_text().splitlines()[-1]
    assert last.startswith(f"# graph as built by this run: sim_threshold {summary['graph']['threshold']:.6g} "
                           "(from target_degree 5; target_degree given)")
    bad = (out / "assemble" / "unselectable.jsonl").read_bytes().splitlines()
    reasons = sorted(orjson.loads(x)["reason"] for x in bad)
    assert reasons[0].startswith("missing labels: meta.tags")
    assert reasons[1].startswith("score not numeric: meta.score")

    direct = tmp_path / "direct" / "sel.jsonl"
    argv = ["select", pool, "-n", 12, "-o", direct, "--labels-field", "meta.tags", "--score-field",
            "meta.score", "--target-degree", 5, "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "mig_ray", *map(str, argv)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    want = [orjson.loads(x)["id"] for x in direct.with_name("sel.manifest.jsonl").read_bytes().splitlines()]
    assert manifest_ids(out) == want


def test_nightly_grow_then_shrink_with_a_crash_before_finishing_then_report(tmp_path, ray_address,
                                                                            monkeypatch):
    """Three nights over one output folder (labels and scores from the data): the pool grows, then
    shrinks; the third run crashes after every stage, before its final outputs, and its re-run still
    diffs against the second night. Each night's order is naive greedy's on that night's pool, and
    `mig-ray report` on the output shows the diff."""
    from test_distributed import naive_ids

    from mig_ray.job import summary as job_summary

    vocab, emb, labels, scores = random_pool(21, n=120, n_labels=24)
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)
    pool, out = tmp_path / "pool.jsonl", tmp_path / "nightly"
    job = small_job(tmp_path, pool, out, **{
        "annotate.tagger": {"kind": "from-data"}, "annotate.scorer": {"kind": "field"},
        "graph": {"label_embeddings": str(tmp_path / "emb.npz"), "sim_threshold": 0.7},
        "selection": {"n": 12}, "ray.address": ray_address})

    def night(rows: range) -> list[str]:
        """Write the night's pool (records r<i> for i in rows); naive greedy's ids on it."""
        released_pool(pool, [labels[i] for i in rows], [scores[i] for i in rows])
        text = [orjson.loads(x) for x in pool.read_bytes().splitlines()]
        for rec, i in zip(text, rows, strict=True):
            rec["_id"] = f"r{i}"
        pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in text))
        picked = naive_ids(vocab, emb, [labels[i] for i in rows], scores[list(rows)], 12, 0.7)
        return [f"r{rows[int(x[1:])]}" for x in picked]

    def diff_of(before: list[str], after: list[str]) -> dict:
        return {"previous_selected": len(before), "selected": len(after),
                "kept": len(set(before) & set(after)), "added": [i for i in after if i not in before],
                "dropped": [i for i in before if i not in after]}

    want1 = night(range(0, 80))
    run_job(load_job(job))
    assert manifest_ids(out) == want1

    want2 = night(range(0, 120))  # grows
    second = run_job(load_job(job, {"incremental": True}))
    assert manifest_ids(out) == want2
    got = json.loads((out / "diff.json").read_text())
    assert {k: got[k] for k in diff_of(want1, want2)} == diff_of(want1, want2)
    assert second["counts"]["selectable"] == 120

    want3 = night(range(50, 120))  # shrinks: the first 50 records are gone
    assert set(want2) - set(want3), "the shrink must drop some of the second night's selection"

    def crash(ctx, stage_log):
        raise RuntimeError("crash after the last stage, before the final outputs")

    with monkeypatch.context() as m:
        m.setattr(job_summary, "finish", crash)
        with pytest.raises(RuntimeError, match="crash after the last stage"):
            run_job(load_job(job, {"incremental": True}))
    assert manifest_ids(out / "previous") == want2  # archived before the crash
    assert manifest_ids(out) == want2  # the final outputs are still the second night's
    third = run_job(load_job(job, {"incremental": True}))
    assert set(stage_status(third).values()) == {"skipped"}
    assert manifest_ids(out) == want3 and manifest_ids(out / "previous") == want2
    got = json.loads((out / "diff.json").read_text())
    assert {k: got[k] for k in diff_of(want2, want3)} == diff_of(want2, want3)
    assert third["counts"]["selectable"] == 70

    proc = cli_run("report", out)
    assert proc.returncode == 0, proc.stderr
    numbers = json.loads((out / "report" / "summary.json").read_text())
    d = diff_of(want2, want3)
    assert numbers["diff"] == {**{k: d[k] for k in ("previous_selected", "selected", "kept")},
                               "added": len(d["added"]), "dropped": len(d["dropped"]),
                               "information": got["information"]}
    html = (out / "report" / "report.html").read_text()
    section = html[html.index('id="diff"'):]
    section = section[:section.index("</section>")]
    for name, value in (("added", len(d["added"])), ("dropped", len(d["dropped"])), ("kept", d["kept"])):
        assert re.search(rf"<t[hd]>{name}</t[hd]>\s*<td>{value}</td>", section), (name, value, section)


def test_tag_score_until_and_run_commands_do_their_stages_only(tmp_path, ray_address, quick_tagger):
    """`mig-ray tag`, `mig-ray score` and `mig-ray run --until` stop after their stage, and the next
    command goes on from there: each stage runs once across the three commands and a full run. A
    changed option reruns its stage and those after it, and only those."""
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)[:40]
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(lines))
    out = tmp_path / "out"
    job = small_job(tmp_path, pool, out, **{"annotate.tagger": {"kind": "from-data"}, "selection.n": 6,
                                            "ray.address": ray_address})
    ran: dict[str, int] = {}
    for argv, last in ((["tag", job], "tag"), (["score", job], "score"),
                       (["run", job, "--until", "assemble"], "assemble")):
        proc = cli_run(*argv, "--no-progress")
        assert proc.returncode == 0, proc.stderr
        done = [s for s in ("ingest", "tag", "score", "assemble", "select", "write")
                if (out / s / "_DONE.json").exists()]
        assert done[-1] == last and len(done) == 1 + ["ingest", "tag", "score", "assemble", "select",
                                                      "write"].index(last), done
        for row in proc.stderr.splitlines():
            m = re.match(r"(\w+)\s+(ran|skipped)\s", row)
            if m and m.group(2) == "ran":
                ran[m.group(1)] = ran.get(m.group(1), 0) + 1
        assert f"stopped after stage {last}" in proc.stdout and not (out / "selected.jsonl").exists()
    assert ran == {"ingest": 1, "dedup": 1, "tag": 1, "score": 1, "assemble": 1}
    full = run_job(load_job(job))  # the rest, in process
    assert [name for name, st in stage_status(full).items() if st == "ran"] == ["select", "write"]
    pool_rows = pq.read_table(out / "assemble" / "pool.parquet").num_rows
    annotated = [{"instag", "deita"} <= set(orjson.loads(x).get("annotation", {})) for x in lines]
    assert pool_rows == sum(annotated)
    selected = (out / "selected.jsonl").read_bytes().splitlines(keepends=True)
    assert len(selected) == 6 and set(selected) <= set(lines)

    # An option of the selection changes in the same folder: ingest to assemble are kept, select and
    # write run again; greedy's first 4 picks are the first 4 of its 6 (the same graph, no randomness).
    first = manifest_ids(out)
    again = run_job(load_job(job, {"selection.n": 4}))
    assert stage_status(again) == {"ingest": "skipped", "dedup": "skipped", "tag": "skipped",
                                   "score": "skipped", "assemble": "skipped", "select": "ran", "write": "ran"}
    assert manifest_ids(out) == first[:4]
    assert (out / "selected.jsonl").read_bytes() == b"".join(selected[:4])

    # Another tagger in the same folder, then one of its options changed, each up to assemble: the
    # tagger's identity changed, so tag and assemble run again while ingest and score are kept; the
    # selection of the last full run is untouched.
    fewer = {**quick_tagger, "options": {**quick_tagger["options"], "top_k": 2}}
    for tagger in (quick_tagger, fewer):
        again = run_job(load_job(job, {"selection.n": 4, "annotate.tagger": tagger}), until="assemble")
        assert stage_status(again) == {"ingest": "skipped", "dedup": "skipped", "tag": "ran",
                                       "score": "skipped", "assemble": "ran"}
        assert again["stages"]["tag"]["counts"]["annotated"] == len(lines)
    assert (out / "selected.jsonl").read_bytes() == b"".join(selected[:4])


def test_demo_command_selects_from_the_bundled_pool(tmp_path):
    out = tmp_path / "demo"
    proc = cli_run("demo", "-o", out, "-n", 7)
    assert proc.returncode == 0, proc.stderr
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)
    manifest = [orjson.loads(x) for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]
    assert [m["rank"] for m in manifest] == list(range(1, 8))
    assert (out / "selected.jsonl").read_bytes() == b"".join(lines[m["line"] - 1] for m in manifest)
    assert len({m["id"] for m in manifest}) == 7
