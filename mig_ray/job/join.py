"""The assemble stage's join of the pool with an annotation cache, hash-partitioned.

Before, each assemble task (one per ingest part) read the whole cache of an identity to pick its
own ids: O(ingest parts x cache rows). Here every id goes to bucket `blake2b(id) % B`:

1. cache side, a task per cache part i (in `parts()` order): an Arrow IPC file of B record
   batches, batch b = the part's rows of bucket b in row order, with `order` = (i, row) so that
   "the first written wins" (load_annotations' rule) can be applied later;
2. pool side, a task per ingest part k: an IPC file of B batches of (id, row in the part);
3. a task per bucket b reads batch b of every cache and pool file, keeps the first cache row per
   id, left-joins the pool's ids and writes an IPC file of P batches (batch k: part k's rows);
4. the assemble task of part k reads batch k of each of the B join files (`part_annotations`).

Total work O(cache + pool); the driver holds only file paths and counts. The pure steps
(`bucket_of`, `split_by_bucket`, `first_per_id`, `join_bucket`, `part_annotations`) need no Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mig_ray.annotate.cache import RESULTS, cache_folder, parts, quarantine_parts
from mig_ray.job.kept import dropped_positions, without
from mig_ray.pools.ingest import blake_hashes, bucket_order
from mig_ray.quarantine import Damaged, one_line
from mig_ray.storage import Location, location, open_read, parquet_file, read_parquet, write_atomic

# cache + pool rows per bucket: a join task holds about this many rows
ROWS_PER_BUCKET = 2_000_000
_ROW_BITS = 40  # order = cache part index << 40 | row in the part
STAGE_OF_KIND = {"tags": "tag", "score": "score"}  # the stage that fills each kind of the cache


def buckets_for(rows: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """B: about `rows_per_bucket` cache + pool rows per bucket, at least 1."""
    return max(1, -(-rows // max(1, rows_per_bucket)))


def bucket_of(ids: pa.Array | pa.ChunkedArray | list[str], buckets: int) -> np.ndarray:
    """The bucket of each id: its 64-bit blake2b hash (as ingest's duplicate check) mod B."""
    values = ids.to_pylist() if isinstance(ids, pa.Array | pa.ChunkedArray) else ids
    return (blake_hashes(values) % np.uint64(buckets)).astype(np.int64)


def _batch(table: pa.Table) -> pa.RecordBatch:
    """The table as one record batch (an empty one when it has no rows)."""
    table = table.combine_chunks()
    batches = table.to_batches()
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return pa.record_batch([pa.array([], type=f.type) for f in table.schema], schema=table.schema)
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def split_by_bucket(table: pa.Table, bucket: np.ndarray, buckets: int) -> list[pa.RecordBatch]:
    """Exactly `buckets` batches: batch b = the rows of bucket b in their order (empty ones too)."""
    order, bounds = bucket_order(bucket, buckets)
    whole = _batch(table.take(pa.array(order, pa.int64())))
    return [whole.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b])) for b in range(buckets)]


def cache_schema(kind: str) -> pa.Schema:
    name, typ = RESULTS[kind]
    return pa.schema([("id", pa.string()), ("status", pa.string()), ("error", pa.string()), (name, typ),
                      ("order", pa.int64())])


def cache_rows(table: pa.Table, kind: str, index: int) -> pa.Table:
    """A cache part's rows in the join's columns: its ids (null ids, never asked for, dropped),
    status, error and result in the contract types, and `order` = (index, row)."""
    name, _ = RESULTS[kind]
    if table.num_rows >= 1 << _ROW_BITS:
        raise ValueError(f"a cache part of {table.num_rows} rows is over the join's 2**{_ROW_BITS}")
    schema = cache_schema(kind)
    order = pa.array((np.int64(index) << _ROW_BITS) + np.arange(table.num_rows, dtype=np.int64))
    cols = [table.column(c).cast(schema.field(c).type) for c in ("id", "status", "error", name)]
    out = pa.Table.from_arrays([*cols, order], schema=schema)
    return out.filter(pc.is_valid(out.column("id")))


def first_per_id(cache: pa.Table) -> pa.Table:
    """One row per id: the one of least `order` (the first written wins)."""
    if cache.num_rows == 0:
        return cache
    cache = cache.take(pc.sort_indices(cache.column("order")))
    codes = pc.dictionary_encode(cache.column("id").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    return cache.take(pa.array(np.sort(first), pa.int64()))


def join_schema(kind: str) -> pa.Schema:
    name, typ = RESULTS[kind]
    return pa.schema([("row", pa.int64()), ("found", pa.bool_()), ("status", pa.string()),
                      ("error", pa.string()), (name, typ)])


def join_bucket(cache: list[pa.RecordBatch], pool: list[pa.RecordBatch], kind: str) -> list[pa.RecordBatch]:
    """One bucket: the cache's batches (any order; `order` decides) and the pool's, one per ingest
    part in part order, each (id, row). Batch k of the result: part k's rows of the bucket with
    their first cache row (found False and nulls where the cache has none)."""
    name, _ = RESULTS[kind]
    schema = join_schema(kind)
    got = first_per_id(pa.Table.from_batches(cache, schema=cache_schema(kind)))
    out = []
    for batch in pool:
        at = pc.index_in(batch.column("id"), value_set=got.column("id").combine_chunks())
        take = got.take(at)
        cols = [batch.column("row"), pc.is_valid(at), *(take.column(c).combine_chunks()
                                                        for c in ("status", "error", name))]
        out.append(pa.record_batch(cols, schema=schema))
    return out


def part_annotations(batches: list[pa.RecordBatch], ids: pa.Array | pa.ChunkedArray, kind: str) -> pa.Table:
    """An ingest part's batches of every join file -> what `load_annotations(..., ids,
    extras=False)` gave it: id, status, error and result of the ids the cache has, one row each."""
    name, _ = RESULTS[kind]
    table = pa.Table.from_batches(batches, schema=join_schema(kind))
    if table.num_rows != len(ids):
        raise ValueError(f"the join has {table.num_rows} rows for a part of {len(ids)}")
    table = table.take(pc.sort_indices(table.column("row")))
    if not np.array_equal(table.column("row").to_numpy(), np.arange(len(ids))):  # each row once
        raise ValueError("the join's rows of a part are not its rows 0..n-1")
    table = table.filter(table.column("found"))
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pa.table({"id": ids.take(table.column("row")), "status": table.column("status"),
                     "error": table.column("error"), name: table.column(name)})


# ---------------------------------------------------------------- the tasks, over files

def write_ipc(path: Location, schema: pa.Schema, batches: list[pa.RecordBatch]) -> None:
    """An Arrow IPC file of these batches, whole or not at all under its name."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for b in batches:
            writer.write_batch(b)
    write_atomic(path, memoryview(sink.getvalue()))


def read_batch(path: Location, index: int) -> pa.RecordBatch:
    """Batch `index` of an IPC file, read without the others."""
    with open_read(path) as f:
        reader = pa.ipc.open_file(f)
        if reader.num_record_batches <= index:
            raise ValueError(f"{path}: {reader.num_record_batches} batches, no batch {index}")
        return reader.get_batch(index)


def cache_side(row: dict, kind: str, buckets: int, out: str) -> dict:
    """In a task: cache part row["i"] -> its IPC file of `buckets` batches."""
    name, _ = RESULTS[kind]
    try:
        table = cache_rows(read_parquet(location(row["part"]), ["id", "status", "error", name]), kind,
                           row["i"])
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as e:
        # the driver moves the part aside and has its annotation stage redone
        return {"i": row["i"], "rows": 0, "file": None, "part": row["part"], "problem": one_line(e)}
    path = location(out) / f"cache-{row['i']:06d}.arrow"
    batches = split_by_bucket(table, bucket_of(table.column("id"), buckets), buckets)
    write_ipc(path, cache_schema(kind), batches)
    return {"i": row["i"], "rows": table.num_rows, "file": str(path)}


POOL_SCHEMA = pa.schema([("id", pa.string()), ("row", pa.int64())])


def pool_side(row: dict, buckets: int, out: str, dropped: str | None = None) -> dict:
    """In a task: ingest part row["k"] (less its dropped rows) -> its IPC file of `buckets` batches of
    (id, row)."""
    part = location(row["part"])
    table = without(read_parquet(part, ["id", "position"]), dropped_positions(dropped, part.name))
    ids = table.column("id").cast(pa.string())
    table = pa.Table.from_arrays([ids, pa.array(np.arange(len(ids), dtype=np.int64))], schema=POOL_SCHEMA)
    path = location(out) / f"pool-{row['k']:06d}.arrow"
    write_ipc(path, POOL_SCHEMA, split_by_bucket(table, bucket_of(ids, buckets), buckets))
    return {"k": row["k"], "rows": table.num_rows, "file": str(path)}


def join_side(row: dict, kind: str, caches: list[str], pools: list[str], out: str) -> dict:
    """In a task: bucket row["b"] of every cache and pool file -> a join file of one batch per part."""
    b = row["b"]
    cache = [read_batch(location(f), b) for f in caches]
    pool = [read_batch(location(f), b) for f in pools]
    path = location(out) / f"join-{kind}-{b:06d}.arrow"
    write_ipc(path, join_schema(kind), join_bucket(cache, pool, kind))
    return {"b": b, "file": str(path)}


def footer_rows(part: Location) -> int | str:
    """A Parquet file's row count from its footer, or why the footer cannot be read."""
    try:
        return parquet_file(part).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
        return one_line(e)


Runner = Callable[[list[dict], Callable, dict], list[dict]]


def join_pool(cache_dir: Location | str, kinds: dict[str, Any], ingest_parts: list[Location], out: Location,
              run: Runner, rows_per_bucket: int = ROWS_PER_BUCKET,
              dropped: str | None = None) -> dict[str, Any]:
    """Join the ingest parts (less the dedup stage's `dropped` positions, kept.py) with the cache of
    each {kind: identity}; `run(items, fn, kwargs)` runs the tasks (Ray's `run_tasks` in the job).
    Returns {"buckets": B, "files": {kind: [B join files]}}: the assemble task of part k reads batch
    k of each (`annotations_of_part`)."""
    out = location(out)
    folders = {kind: parts(cache_folder(cache_dir, kind, ident)) for kind, ident in kinds.items()}
    rows = sum(parquet_file(p).metadata.num_rows for p in ingest_parts)
    for kind, ps in folders.items():
        footers = [(p, footer_rows(p)) for p in ps]
        bad = [(str(p), n) for p, n in footers if isinstance(n, str)]
        if bad:  # read after its stage was done: the cache lost these parts since
            raise Damaged((STAGE_OF_KIND[kind],), quarantine_parts(cache_dir, bad))
        rows += sum(n for _, n in footers)
    buckets = buckets_for(rows, rows_per_bucket)
    pools = run([{"k": k, "part": str(p)} for k, p in enumerate(ingest_parts)], pool_side,
                {"buckets": buckets, "out": str(out), "dropped": dropped})
    files = {}
    for kind, ps in folders.items():
        caches = run([{"i": i, "part": str(p)} for i, p in enumerate(ps)], cache_side,
                     {"kind": kind, "buckets": buckets, "out": str(out)})
        bad = [(c["part"], c["problem"]) for c in caches if c.get("problem")]
        if bad:  # read after its stage was done: the cache lost these parts since
            raise Damaged((STAGE_OF_KIND[kind],), quarantine_parts(cache_dir, bad))
        joined = run([{"b": b} for b in range(buckets)], join_side,
                     {"kind": kind, "caches": [c["file"] for c in caches],
                      "pools": [p["file"] for p in pools], "out": str(out)})
        files[kind] = [j["file"] for j in joined]
    return {"buckets": buckets, "files": files}


def annotations_of_part(files: list[str], k: int, ids: pa.Array | pa.ChunkedArray, kind: str) -> pa.Table:
    """In the assemble task of ingest part k: its rows of every join file, as load_annotations gave."""
    return part_annotations([read_batch(location(f), k) for f in files], ids, kind)
