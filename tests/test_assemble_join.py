"""The assemble stage's hash join of the pool with an annotation cache gives each ingest part
exactly what `load_annotations(..., ids, extras=False)` + `annotation_column` gave it: a random cache of
several parts (ids repeated across and within parts with other values, failed rows, NaN scores,
empty and missing labels, ids the cache lacks) against random ingest parts, with few rows per
bucket so that buckets and parts interleave, compared per id with the old way computed here."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mig_ray.annotate.cache import cache_folder, load_annotations, prepare_folder, write_part
from mig_ray.job.assemble import annotation_column
from mig_ray.job.join import (
    annotations_of_part,
    bucket_of,
    first_per_id,
    join_pool,
    split_by_bucket,
)
from mig_ray.storage import location

IDENT = {"tags": {"model": "t", "v": 1}, "score": {"model": "s", "v": 2}}
NAME = {"tags": "labels", "score": "score"}


def _in_order(items: list[dict], fn, kwargs: dict) -> list[dict]:
    """The tasks one after another in this process (the job runs them as Ray tasks)."""
    return [fn(item, **kwargs) for item in items]


def _value(rng: random.Random, kind: str):
    if kind == "tags":
        return rng.choice([None, [], ["a"], ["b", "a"], ["c"] * 3, [f"t{rng.randrange(9)}"]])
    return rng.choice([None, float("nan"), 0.0, -1.5, rng.uniform(1, 6), float("inf")])


def _cache(cache_dir, kind: str, rng: random.Random, universe: list[str], n_parts: int) -> None:
    folder = cache_folder(cache_dir, kind, IDENT[kind])
    prepare_folder(folder, kind, IDENT[kind])
    typ = pa.list_(pa.string()) if kind == "tags" else pa.float64()
    for _ in range(n_parts):
        n = rng.randrange(0, 60)
        ids = [rng.choice(universe[: len(universe) * 3 // 4]) for _ in range(n)]  # the rest: never cached
        ids += rng.sample(ids, min(len(ids), 5))  # the same ids again in this part, other values
        status = [rng.choice(["ok", "ok", "ok", "failed", "error"]) for _ in ids]
        table = pa.table({
            "id": pa.array(ids, pa.string()),
            "status": pa.array(status, pa.string()),
            "error": pa.array([None if s == "ok" else f"boom {rng.randrange(99)}" for s in status],
                              pa.string()),
            "calls": pa.array([rng.randrange(3) for _ in ids], pa.int64()),
            NAME[kind]: pa.array([_value(rng, kind) for _ in ids], typ),
            "vector": pa.array([[rng.random()] for _ in ids], pa.list_(pa.float32())),  # an extra column
        })
        write_part(table, folder)


def _ingest(tmp, rng: random.Random, universe: list[str], n_parts: int) -> list:
    ids = rng.sample(universe, len(universe) * 9 // 10)
    cuts = sorted(rng.sample(range(1, len(ids)), n_parts - 2)) if n_parts > 2 else []
    chunks = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True)] + [[]]  # an empty part
    rng.shuffle(chunks)
    out = []
    for k, chunk in enumerate(chunks):
        path = tmp / "ingest" / f"part-{k:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": pa.array(chunk, pa.string()),
                                 "position": pa.array(range(len(chunk)), pa.int64())}), path)
        out.append(path)
    return out


def _rows(table: pa.Table, name: str) -> dict[str, tuple]:
    """id -> (status, error, repr(value)): NaN compares by its repr."""
    return {r["id"]: (r["status"], r["error"], repr(r[name])) for r in table.to_pylist()}


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("seed", "rows_per_bucket"), [(1, 23), (2, 7), (3, 100_000), (4, 1)])
def test_the_join_gives_each_part_what_load_annotations_gave(tmp_path, seed, rows_per_bucket):
    rng = random.Random(seed)
    universe = [f"rec-{i:04d}" for i in range(300)] + ["", "é", "None"]
    cache_dir = tmp_path / "cache"
    for kind in ("tags", "score"):
        _cache(cache_dir, kind, rng, universe, n_parts=rng.randrange(3, 7))
    ingest = _ingest(tmp_path, rng, universe, n_parts=rng.randrange(3, 7))
    out = tmp_path / "assemble" / "_join"
    got = join_pool(cache_dir, IDENT, ingest, out, _in_order, rows_per_bucket=rows_per_bucket)
    buckets = got["buckets"]
    assert buckets == 1 if rows_per_bucket == 100_000 else buckets > 1
    checked, reasons = {"tags": 0, "score": 0}, set()
    for k, part in enumerate(ingest):
        ids = pq.read_table(part).column("id")
        pyids = ids.to_pylist()
        for kind in ("tags", "score"):
            name = NAME[kind]
            new = annotations_of_part(got["files"][kind], k, ids, kind)
            old = load_annotations(cache_dir, kind, IDENT[kind], pyids, extras=False)
            assert new.num_rows == old.num_rows
            assert _rows(new, name) == _rows(old, name)
            new_values, new_reasons = annotation_column(new, pyids, name)
            old_values, old_reasons = annotation_column(old, pyids, name)
            assert new_reasons == old_reasons
            assert _same(new_values, old_values)
            checked[kind] += sum(r is None for r in new_reasons)
            reasons |= {r.split(":")[0] for r in new_reasons if r}
    # the case mix is there: kept values, and each reason
    assert checked["tags"] > 0 and checked["score"] > 0
    assert reasons == {"not annotated", "labels failed", "score failed"}


def test_a_cache_with_no_parts_annotates_nothing(tmp_path):
    ingest = _ingest(tmp_path, random.Random(5), [f"r{i}" for i in range(40)], n_parts=3)
    got = join_pool(tmp_path / "cache", {"score": IDENT["score"]}, ingest, tmp_path / "_join", _in_order, 10)
    for k, part in enumerate(ingest):
        ids = pq.read_table(part).column("id")
        new = annotations_of_part(got["files"]["score"], k, ids, "score")
        assert new.num_rows == 0
        missing = ["not annotated: no score in the cache"] * len(ids)
        assert annotation_column(new, ids.to_pylist(), "score")[1] == missing


def test_split_by_bucket_keeps_every_bucket_and_the_row_order():
    table = pa.table({"id": [f"x{i}" for i in range(50)], "row": list(range(50))})
    bucket = bucket_of(table.column("id"), 80)
    batches = split_by_bucket(table, bucket, 80)
    assert len(batches) == 80 and sum(b.num_rows == 0 for b in batches) > 0
    for b, batch in enumerate(batches):
        rows = batch.column("row").to_pylist()
        assert rows == sorted(rows) and all(bucket[r] == b for r in rows)
    assert sorted(r for b in batches for r in b.column("row").to_pylist()) == list(range(50))


def test_first_per_id_keeps_the_least_order_whatever_the_row_order():
    table = pa.table({"id": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5], "order": [9, 4, 2, 7, 8]})
    got = first_per_id(table)
    assert sorted(zip(got["id"].to_pylist(), got["v"].to_pylist(), strict=True)) == [("a", 3), ("b", 2),
                                                                                     ("c", 4)]


def test_the_join_on_ray_over_s3(ray_address, s3_endpoint, tmp_path):
    """The same through Ray's tasks, its temporary files on an object store."""
    import boto3

    from mig_ray.runtime.session import run_tasks
    from mig_ray.storage import rmtree

    rng = random.Random(11)
    universe = [f"rec-{i:04d}" for i in range(200)]
    cache_dir = tmp_path / "cache"
    _cache(cache_dir, "score", rng, universe, n_parts=4)
    ingest = _ingest(tmp_path, rng, universe, n_parts=4)
    bucket = f"join-{rng.randrange(1 << 30):x}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    out = location(f"s3://{bucket}/assemble/_join")
    got = join_pool(cache_dir, {"score": IDENT["score"]}, ingest, out, run_tasks, rows_per_bucket=40)
    assert got["buckets"] > 1 and all(f.startswith("s3://") for f in got["files"]["score"])
    for k, part in enumerate(ingest):
        ids = pq.read_table(part).column("id")
        new = annotations_of_part(got["files"]["score"], k, ids, "score")
        old = load_annotations(cache_dir, "score", IDENT["score"], ids.to_pylist(), extras=False)
        assert _rows(new, "score") == _rows(old, "score")
    rmtree(out)
    assert not out.is_dir()


def test_the_driver_gets_only_summaries_from_the_join(tmp_path):
    """What the join's tasks hand back to the driver (paths, row counts, bucket numbers) does not
    grow with the rows: on a pool of 18,000 ids and a cache of about 20,000 rows, every task's
    answer and join_pool's own result stay a few hundred bytes each."""
    import pickle

    sizes: list[int] = []

    def measured(items: list[dict], fn, kwargs: dict) -> list[dict]:
        out = _in_order(items, fn, kwargs)
        sizes.extend(len(pickle.dumps(x)) for x in out)
        return out

    rng = random.Random(5)
    universe = [f"rec-{i:06d}" for i in range(20_000)]
    cache_dir = tmp_path / "cache"
    folder = cache_folder(cache_dir, "score", IDENT["score"])
    prepare_folder(folder, "score", IDENT["score"])
    for part in range(3):
        ids = universe[part::3]
        write_part(pa.table({"id": pa.array(ids, pa.string()), "status": pa.array(["ok"] * len(ids)),
                             "error": pa.array([None] * len(ids), pa.string()),
                             "calls": pa.array([1] * len(ids), pa.int64()),
                             "score": pa.array([rng.random() for _ in ids], pa.float64())}), folder)
    ingest = _ingest(tmp_path, rng, universe, n_parts=3)
    got = join_pool(cache_dir, {"score": IDENT["score"]}, ingest, tmp_path / "_join", measured,
                    rows_per_bucket=5_000)
    assert got["buckets"] > 4 and len(sizes) == len(ingest) + 3 + got["buckets"]
    assert max(sizes) < 400, sizes
    assert len(pickle.dumps(got)) < 200 * got["buckets"]
