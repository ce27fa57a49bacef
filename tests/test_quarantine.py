"""A damaged cache, archive or stage output costs the work that made it, never the run: the file is
moved aside to <root>/quarantine/ (never deleted) with a one-line warning, its records are annotated
again or its stage runs again, and the outputs are the bytes of a run that met no damage. Real Ray,
a real tagger (the static one), real Parquet; S3 through the session's moto endpoint."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_job import DEMO_POOL, FINAL, small_job, stage_status

from mig_ray.annotate.cache import part_problem, scan_ids
from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job
from mig_ray.quarantine import FOLDER, quarantine
from mig_ray.storage import RemotePath


@pytest.fixture(scope="module")
def edits(quick_tagger) -> dict:
    """The job's edits: cache parts of 60 rows, and the static tagger (which tagger fills the cache
    does not matter here, only that a real one runs and its parts can be damaged)."""
    return {"annotate.part_rows": 60, "annotate.tagger": quick_tagger}


def tag_parts(cache: Path) -> list[Path]:
    return sorted((cache / "tags").glob("*/part-*.parquet"))


def truncate(path: Path) -> bytes:
    """Cut a file to half its bytes (a node lost mid-upload); the bytes left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


@pytest.fixture(scope="module")
def clean(tmp_path_factory, ray_address, edits) -> tuple[Path, Path, Path]:
    """The demo job run once without damage: (folder, its OUTDIR, its annotation cache)."""
    tmp = tmp_path_factory.mktemp("clean")
    out, cache = tmp / "out", tmp / "cache"
    run_job(load_job(small_job(tmp, DEMO_POOL, out, **edits, **{"annotate.cache_dir": str(cache)})))
    assert len(tag_parts(cache)) >= 3
    return tmp, out, cache


def same_outputs(out: Path, ref: Path) -> None:
    for name in FINAL:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_truncated_cache_part_is_moved_aside_and_its_records_annotated_again(tmp_path, clean, capfd,
                                                                               edits):
    """Another job sharing the cache meets a part cut in half: the part goes to
    <cache>/quarantine/ with the same bytes, one warning line names it, exactly its rows are
    annotated again, the summary counts it, and the selection is the undamaged run's."""
    _, ref, ref_cache = clean
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    part = tag_parts(cache)[1]
    rows = pq.ParquetFile(part).metadata.num_rows
    left = truncate(part)
    capfd.readouterr()
    summary = run_job(load_job(small_job(tmp_path, DEMO_POOL, tmp_path / "out", **edits,
                                         **{"annotate.cache_dir": str(cache)})))
    err = capfd.readouterr().err
    moved = cache / FOLDER / part.relative_to(cache)
    assert not part.exists() and moved.read_bytes() == left
    warning = [x for x in err.splitlines() if x.startswith(f"warning: {part}: unreadable")]
    assert len(warning) == 1 and str(moved) in warning[0], err
    tagging = summary["counts"]["tagging"]
    assert tagging["annotated"] == rows and tagging["quarantined"] == 1
    assert summary["counts"]["quarantined"] == 1
    assert summary["quarantined"] == [{"path": str(part), "moved_to": str(moved),
                                       "reason": summary["quarantined"][0]["reason"]}]
    same_outputs(tmp_path / "out", ref)


def test_a_cache_part_damaged_after_its_stage_was_done_has_the_stage_redone(tmp_path, clean, edits):
    """Tag done, the run stopped; a part is then truncated: assemble finds it in the join, moves it
    aside and the tag stage runs again for its rows, instead of a stuck pipeline."""
    _, ref, ref_cache = clean
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    job = small_job(tmp_path, DEMO_POOL, tmp_path / "out", **edits, **{"annotate.cache_dir": str(cache)})
    run_job(load_job(job), until="tag")
    part = tag_parts(cache)[0]
    rows = pq.ParquetFile(part).metadata.num_rows
    truncate(part)
    summary = run_job(load_job(job))
    assert stage_status(summary)["tag"] == "ran"
    assert summary["counts"]["tagging"]["annotated"] == rows
    assert (cache / FOLDER / part.relative_to(cache)).is_file()
    same_outputs(tmp_path / "out", ref)


def test_a_truncated_ingest_part_of_a_done_stage_has_ingest_redone(tmp_path, clean, edits):
    _, ref, ref_cache = clean
    out = tmp_path / "out"
    job = small_job(tmp_path, DEMO_POOL, out, **edits, **{"annotate.cache_dir": str(ref_cache)})
    run_job(load_job(job), until="ingest")
    part = sorted((out / "ingest" / "parts").glob("part-*.parquet"))[0]
    left = truncate(part)
    summary = run_job(load_job(job))
    assert stage_status(summary)["ingest"] == "ran"
    assert (out / FOLDER / "ingest" / "parts" / part.name).read_bytes() == left
    assert summary["counts"]["quarantined"] == 1
    same_outputs(out, ref)


def test_a_damaged_nightly_archive_is_moved_aside_and_the_run_goes_on(tmp_path, clean, edits):
    """run.json not JSON, last night's manifest cut mid-line: both go to OUTDIR/quarantine/, the
    night runs (select again, against no previous manifest) and selects what the clean run did."""
    _, ref, ref_cache = clean
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    record = json.loads((out / "run.json").read_text())
    (out / "previous").mkdir()
    (out / "previous" / "run.json").write_text(json.dumps({**record, "ingest_fingerprint": "yesterday"}))
    manifest = (out / "selected.manifest.jsonl").read_bytes()
    (out / "previous" / "selected.manifest.jsonl").write_bytes(manifest[: len(manifest) // 2])
    (out / "run.json").write_text('{"ingest_fingerprint": ')
    (out / "select" / "_DONE.json").unlink()
    job = small_job(tmp_path, DEMO_POOL, out, **edits, **{"annotate.cache_dir": str(ref_cache)})
    summary = run_job(load_job(job))
    assert (out / FOLDER / "run.json").read_text() == '{"ingest_fingerprint": '
    cut = manifest[: len(manifest) // 2]
    assert (out / FOLDER / "previous" / "selected.manifest.jsonl").read_bytes() == cut
    assert summary["counts"]["quarantined"] == 2
    assert summary["diff"]["previous_selected"] == 0
    same_outputs(out, ref)


def test_a_truncated_cache_part_on_s3_is_moved_aside_in_the_bucket(tmp_path, clean, s3_endpoint, edits):
    _, ref, ref_cache = clean
    bucket = f"mig-ray-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    keys = []
    for f in sorted(p for p in ref_cache.rglob("*") if p.is_file() and "tags" in p.parts):
        key = f"cache/{f.relative_to(ref_cache)}"
        s3.put_object(Bucket=bucket, Key=key, Body=f.read_bytes())
        keys.append(key)
    victim = [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-")][1]
    rows = pq.ParquetFile(ref_cache / victim.removeprefix("cache/")).metadata.num_rows
    body = (ref_cache / victim.removeprefix("cache/")).read_bytes()
    s3.put_object(Bucket=bucket, Key=victim, Body=body[: len(body) // 2])
    summary = run_job(load_job(small_job(tmp_path, DEMO_POOL, tmp_path / "out", **edits,
                                         **{"annotate.cache_dir": f"s3://{bucket}/cache"})))
    assert summary["counts"]["tagging"]["annotated"] == rows
    moved = s3.get_object(Bucket=bucket, Key=f"cache/{FOLDER}/{victim.removeprefix('cache/')}")["Body"].read()
    assert moved == body[: len(body) // 2]
    left = s3.list_objects_v2(Bucket=bucket, Prefix=victim)["KeyCount"]
    assert left == 0
    assert summary["quarantined"][0]["moved_to"].startswith(f"s3://{bucket}/cache/{FOLDER}/")
    same_outputs(tmp_path / "out", ref)


def _part(path: Path, n: int) -> None:
    table = pa.table({"id": [f"id{i}" for i in range(n)], "status": ["ok"] * n, "error": [""] * n,
                      "calls": [1] * n, "labels": [["a", "b"]] * n})
    pq.write_table(table, path)


@settings(max_examples=60, deadline=None)
@given(cut=st.floats(0.0, 0.999), garbage=st.binary(max_size=64))
def test_any_truncation_of_a_part_is_named_never_raised(tmp_path_factory, cut, garbage):
    """A part cut anywhere (and garbage appended) is reported with a reason, never read as a part,
    and scan_ids returns exactly the ids of the intact parts."""
    folder = tmp_path_factory.mktemp("cache")
    _part(folder / "part-a.parquet", 5)
    _part(folder / "part-b.parquet", 7)
    data = (folder / "part-b.parquet").read_bytes()
    (folder / "part-b.parquet").write_bytes(data[: int(cut * len(data))] + garbage)
    assert part_problem(folder / "part-a.parquet", "tags") is None
    assert isinstance(part_problem(folder / "part-b.parquet", "tags"), str)
    ids, bad = scan_ids(folder, "tags")
    assert sorted(ids.tolist()) == sorted(f"id{i}".encode() for i in range(5))
    assert [p for p, _ in bad] == [str(folder / "part-b.parquet")]


def test_a_part_of_another_schema_is_damaged_too(tmp_path):
    pq.write_table(pa.table({"id": [1, 2], "labels": ["x", "y"]}), tmp_path / "part-x.parquet")
    pq.write_table(pa.table({"id": ["a"], "status": ["ok"], "error": [""], "calls": [1],
                             "score": ["high"]}), tmp_path / "part-y.parquet")
    assert "status" in part_problem(tmp_path / "part-x.parquet", "tags")
    assert part_problem(tmp_path / "part-y.parquet", "score")


def test_quarantine_keeps_every_copy_and_never_overwrites(tmp_path, capsys, s3_endpoint):
    for root in (tmp_path / "root", RemotePath(f"s3://{_bucket()}/root")):
        for i in range(3):
            f = root / "tags" / "h" / "part-1.parquet"
            if isinstance(f, Path):
                f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"copy %d" % i)
            q = quarantine(f, root, "test", "again")
            assert not f.exists()
        kept = sorted((root / FOLDER / "tags" / "h").iterdir())
        assert [p.name for p in kept] == ["part-1.parquet", "part-1.parquet.1", "part-1.parquet.2"]
        assert [p.read_bytes() for p in kept] == [b"copy 0", b"copy 1", b"copy 2"]
        assert q.moved_to == str(kept[-1])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6 and all(x.startswith("warning: ") and x.endswith("; again") for x in lines)


def _bucket() -> str:
    name = f"mig-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
