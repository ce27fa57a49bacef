"""Pools, annotation cache and outputs on object storage: a real S3 endpoint (moto's server on
loopback, the session's `s3_endpoint`), the job's Ray tasks and shard actors reading and writing
`s3://` paths, and a `kill -9` in the middle."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import orjson
import pyarrow as pa
import pytest
from test_job import DEMO_POOL, small_job, stage_status, start_then_kill_when

from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job
from mig_ray.storage import (
    RemotePath,
    concat_files,
    copy_file,
    location,
    read_parquet,
    rmtree,
    write_atomic,
    write_parquet_atomic,
)


def new_bucket() -> str:
    name = f"mig-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under the prefix, read with boto3 (not through the code under test)."""
    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if not o["Key"].endswith("/"):  # pyarrow's folder markers
                out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def test_storage_functions_do_on_s3_what_they_do_on_disk(s3_endpoint, tmp_path):
    """The same calls on a local folder and on a bucket give the same listings, bytes and tables."""
    bucket = new_bucket()
    table = pa.table({"id": ["a", "b", "c"], "score": [1.0, 2.0, 3.5]})
    listings, reads = [], []
    for root in (tmp_path / "local", RemotePath(f"s3://{bucket}/root")):
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / "x" / "b.jsonl", b'{"k": 2}\n')
        write_atomic(root / "x" / "a.jsonl", '{"k": 1}\n')
        write_parquet_atomic(table, root / "x" / "part-000001.parquet")
        concat_files([root / "x" / "a.jsonl", root / "x" / "b.jsonl"], root / "joined.jsonl")
        copy_file(root / "joined.jsonl", root / "copy" / "joined.jsonl")
        listings.append((sorted(p.name for p in (root / "x").glob("*.jsonl")),
                         sorted(p.name for p in root.iterdir()),
                         (root / "x").is_dir(), (root / "joined.jsonl").is_file(),
                         (root / "nothing").exists(), (root / "joined.jsonl").stat().st_size))
        reads.append(((root / "copy" / "joined.jsonl").read_bytes(),
                      read_parquet(root / "x" / "part-000001.parquet")))
        rmtree(root / "x")
        rmtree(root / "never-there")
        assert not (root / "x").exists() and (root / "joined.jsonl").exists()
    assert listings[0] == listings[1] == (["a.jsonl", "b.jsonl"], ["copy", "joined.jsonl", "x"], True, True,
                                          False, 18)
    assert reads[0][0] == reads[1][0] == b'{"k": 1}\n{"k": 2}\n'
    assert reads[0][1].equals(table) and reads[1][1].equals(table)
    # what boto3 sees: the objects themselves, no temporary names left behind
    assert set(objects(bucket)) == {"root/joined.jsonl", "root/copy/joined.jsonl"}
    assert isinstance(location(f"s3://{bucket}/a"), RemotePath) and isinstance(location("a/b"), Path)
    with pytest.raises(ValueError, match="not allowed"):
        RemotePath(f"s3://{bucket}/a/../b")


def hostile_pool(path: Path) -> bytes:
    """The demo records, then an invalid line, a blank line and a duplicate of the first record:
    the rejects and the duplicate check run too."""
    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)
    data = b"".join(lines) + b"{not json\n\n" + lines[0]
    path.write_bytes(data)
    return data


def _local_names(data: bytes, uri: str, local: Path) -> bytes:
    """A JSONL output with the pool's URI written where the local run writes its path: each
    record names the file it came from, and the two runs read the same bytes from two places."""
    return data.replace(orjson.dumps(uri)[1:-1], orjson.dumps(str(local))[1:-1])


def test_job_on_s3_killed_mid_tag_then_rerun_matches_the_run_on_local_disk(s3_endpoint, tmp_path,
                                                                            ray_address):
    """Input, annotation cache and output on S3, selection on two shard actors that read the
    assembled pool's parts from the bucket; killed with -9 once the tagger has written a cache
    part, re-run: the re-run tags only what the cache lacks and ends with the bytes of the same job
    run on local disk in one process."""
    local_pool = tmp_path / "pool.jsonl"
    data = hostile_pool(local_pool)
    settings = {"annotate.part_rows": 16, "annotate.tagger.resources.batch_size": 8, "selection.n": 15,
                "ray.address": ray_address, "dedup": {"enabled": True}}  # its parts on s3 too (issue 19)
    ref_out = tmp_path / "local-out"
    run_job(load_job(small_job(tmp_path, local_pool, ref_out, **settings,
                               **{"annotate.cache_dir": str(tmp_path / "local-cache")})))

    bucket = new_bucket()
    boto3.client("s3").put_object(Bucket=bucket, Key="in/pool.jsonl", Body=data)
    pool_uri = f"s3://{bucket}/in/pool.jsonl"
    out = RemotePath(f"s3://{bucket}/out")
    job = small_job(tmp_path, Path("unused"), Path("s3-run"), **settings, **{
        "input.paths": [pool_uri], "output.dir": str(out), "annotate.cache_dir": f"s3://{bucket}/cache",
        "selection.shards": 2, "selection.batch": 4})

    def cache_parts() -> list[str]:
        return [k for k in objects(bucket, "cache/tags/") if k.rsplit("/", 1)[-1].startswith("part-")]

    start_then_kill_when(job, tmp_path, lambda: len(cache_parts()) > 0, out / "tag" / "_DONE.json")
    cached_parts = cache_parts()
    assert cached_parts and not (out / "selected.jsonl").exists()

    summary = run_job(load_job(job))
    status = stage_status(summary)
    assert status["ingest"] == "skipped" and status["tag"] == "ran"
    tagging = summary["counts"]["tagging"]
    kept = summary["stages"]["dedup"]["counts"]["kept"]  # the demo pool's near duplicates are dropped
    assert 0 < tagging["cached"] < tagging["total"] == kept < len(DEMO_POOL.read_bytes().splitlines())
    assert tagging["annotated"] == tagging["total"] - tagging["cached"]
    assert summary["greedy"]["engine"] == "ray" and summary["greedy"]["shards"] == 2

    got = objects(bucket, "out/")
    for name in ("selected.jsonl", "selected.manifest.jsonl", "ingest/rejects.jsonl",
                 "dedup/duplicates.jsonl", "assemble/unselectable.jsonl"):
        want = (ref_out / name).read_bytes()
        assert _local_names(got[f"out/{name}"], pool_uri, local_pool) == want, name
    assert got["out/selected.jsonl"] == (ref_out / "selected.jsonl").read_bytes()  # records, byte for byte
    rejects = [orjson.loads(x) for x in got["out/ingest/rejects.jsonl"].splitlines()]
    assert [r["reason"].split(":")[0] for r in rejects] == ["invalid JSON", "duplicate id"]
    assert {"out/run.json", "out/summary.json", "out/logs/ray.log",
            "out/select/selected.summary.json"} <= set(got)
    assert not any("checkpoint" in k or ".tmp" in k for k in got)  # a finished selection leaves none
    assert not any(k.startswith("out/assemble/_join") for k in got)  # the cache join's files are gone
    assert not Path("s3-run").exists() and not Path("unused").exists()  # nothing went to local disk


def test_a_bucket_that_cannot_be_written_or_an_input_that_is_not_there_is_a_one_line_error(
        s3_endpoint, tmp_path, capsys):
    from mig_ray.cli import main

    bucket = new_bucket()
    boto3.client("s3").put_object(Bucket=bucket, Key="in/pool.jsonl", Body=DEMO_POOL.read_bytes()[:2000])
    cases = {
        "no-such-bucket": ({"input.paths": [f"s3://{bucket}/in/pool.jsonl"],
                            "output.dir": "s3://mig-ray-no-such-bucket/out"},
                           "s3://mig-ray-no-such-bucket/out"),
        "missing input": ({"input.paths": [f"s3://{bucket}/in/nothing-*.jsonl"],
                           "output.dir": str(tmp_path / "o")},
                          f"s3://{bucket}/in/nothing-*.jsonl matches no file"),
    }
    for what, (settings, expected) in cases.items():
        job = small_job(tmp_path, Path("unused"), Path(what.replace(" ", "-")), **settings)
        with pytest.raises(SystemExit) as e:
            main(["run", str(job)])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2, (what, err)
        assert "\n" not in err and "Traceback" not in err and expected in err, (what, err)


def test_job_on_s3_killed_mid_select_resumes_from_the_checkpoint_in_the_bucket(s3_endpoint, tmp_path,
                                                                                 ray_address):
    """The sharded selection checkpoints into the bucket, not onto the driver's disk: killed after
    it has committed samples, the re-run (whose local scratch is wiped first, as on a new driver
    machine) restores them from there and ends with naive greedy's order."""
    import io
    import shutil

    import numpy as np
    from pools import random_pool
    from test_distributed import naive_ids
    from test_job import manifest_ids, released_pool

    from mig_ray.job.context import local_scratch

    vocab, emb, labels, scores = random_pool(5, n=2000, n_labels=60)
    pool = tmp_path / "pool.jsonl"
    released_pool(pool, labels, scores)
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)
    bucket = new_bucket()
    out = RemotePath(f"s3://{bucket}/out")
    job = small_job(tmp_path, pool, Path("s3-run"), **{
        "output.dir": str(out), "annotate.tagger": {"kind": "from-data"},
        "annotate.scorer": {"kind": "field"},
        "graph": {"label_embeddings": str(tmp_path / "emb.npz"), "sim_threshold": 0.7},
        "selection": {"n": 1500, "shards": 2, "batch": 0, "checkpoint_seconds": 0.1},
        "ray.address": ray_address})
    key = "out/select/selected.checkpoint.npz"

    def committed() -> int:
        try:
            body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            with np.load(io.BytesIO(body)) as z:
                return len(z["positions"])
        except Exception:  # not there yet
            return 0

    start_then_kill_when(job, tmp_path, lambda: committed() >= 100, out / "select" / "_DONE.json")
    saved = committed()
    shutil.rmtree(local_scratch(out))  # nothing of the killed driver's disk helps the re-run
    summary = run_job(load_job(job))
    status = stage_status(summary)
    assert status["assemble"] == "skipped" and status["select"] == "ran"
    assert summary["stages"]["select"]["counts"]["resumed_from_checkpoint"] >= saved >= 100
    assert key not in objects(bucket, "out/")  # a finished selection leaves no checkpoint behind
    local = tmp_path / "copied"
    local.mkdir()
    (local / "selected.manifest.jsonl").write_bytes(objects(bucket, "out/")["out/selected.manifest.jsonl"])
    assert manifest_ids(local) == naive_ids(vocab, emb, labels, scores, 1500, 0.7)


def test_report_on_an_s3_folder_says_to_copy_it_down(capsys):
    from mig_ray.cli import main

    with pytest.raises(SystemExit) as e:
        main(["report", "s3://some-bucket/runs/tulu3"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert err.startswith("error: s3://some-bucket/runs/tulu3: the report reads a local folder")
