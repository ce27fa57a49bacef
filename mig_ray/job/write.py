"""Stage `write`: the selected records unchanged, in selection order, and the manifest with each
one's origin (file, line). One Ray task per ingest part keeps its selected rows, cut by rank into
chunks of WRITE_ROWS; one task per chunk writes its rows in order; one more joins the chunks. The
driver reads the K selected ids and the manifest's chunk offsets, streaming, so no process holds
K records. A Parquet output is one chunk: its schema is inferred over every selected record."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mig_ray import metrics
from mig_ray.job.context import RunContext
from mig_ray.job.stages import StageResult
from mig_ray.job.stages import fingerprint as digest
from mig_ray.runtime.session import run_tasks
from mig_ray.storage import (
    Location,
    concat_files,
    copy_file,
    location,
    open_read,
    parquet_file,
    read_parquet,
    rmtree,
    write_atomic,
    write_parquet_atomic,
)

NAME = "write"
WRITE_ROWS = 100_000  # selected records per write task (JSONL): memory does not grow with K


@dataclass(frozen=True)
class Chunk:
    """Ranks [lo, lo + rows) of the selection: its lines of the select manifest by byte range."""

    c: int
    lo: int
    start: int
    end: int


def fingerprint(ctx: RunContext) -> str:
    return digest("write", ctx.fingerprints["select"], ctx.job.output.format)


def run(ctx: RunContext) -> StageResult:
    path = ctx.stage_dir(NAME)
    manifest = ctx.stage_dir("select") / "selected.manifest.jsonl"
    fmt = ctx.job.output.format
    ids, offsets = ids_and_offsets(manifest, WRITE_ROWS if fmt == "jsonl" else 0)
    rows = WRITE_ROWS if fmt == "jsonl" else max(1, len(ids))
    matched = path / "_matched"
    matched.mkdir()
    run_tasks([(k, str(p)) for k, p in enumerate(ctx.record_parts())], match_part,
              {"ids": ids, "out": str(matched), "chunk": rows})
    chunks = [Chunk(c, c * rows, a, b) for c, (a, b) in enumerate(zip(offsets, offsets[1:], strict=False))]
    written = run_tasks(chunks, write_chunk, {"manifest": str(manifest), "matched": str(matched),
                                              "fmt": fmt, "out": str(path / "_chunks")})
    run_tasks([str(path)], join_chunks, {"chunks": str(path / "_chunks"), "fmt": fmt, "n": len(chunks)})
    rmtree(matched)
    rmtree(path / "_chunks")
    metrics.bytes_written("write", sum(f.stat().st_size for f in path.glob("selected.*")))
    return StageResult({"written": sum(written)})


def ids_and_offsets(manifest: Location, chunk: int) -> tuple[pa.Array, list[int]]:
    """The selected ids in rank order, and the byte offsets in the manifest where each chunk of
    `chunk` rows starts (one chunk when `chunk` is 0), read line by line."""
    ids: list[str] = []
    offsets, at = [0], 0
    with open_read(manifest) as f:
        for line in f:
            if chunk and ids and len(ids) % chunk == 0:
                offsets.append(at)
            ids.append(orjson.loads(line)["id"])
            at += len(line)
    offsets.append(at)
    return pa.array(ids, pa.string()), offsets


def match_part(item: tuple[int, str], ids: pa.Array, out: str, chunk: int) -> int:
    """In a Ray task: the selected rows (id, file, line, record, rank) of ingest part k, one file
    per chunk of ranks they fall in; returns how many it matched."""
    k, path = item
    part = parquet_file(location(path))
    rank = pc.index_in(part.read(columns=["id"]).column("id"), value_set=ids)
    mask = pc.is_valid(rank)
    n = pc.sum(mask).as_py() or 0
    if n:
        table = part.read(columns=["id", "file", "line", "record"]).filter(mask)
        ranks = rank.filter(mask).to_numpy(zero_copy_only=False).astype(np.int64)
        table = table.append_column("rank", pa.array(ranks))
        of = ranks // chunk
        for c in np.unique(of):
            write_parquet_atomic(table.filter(pa.array(of == c)),
                                 location(out) / f"chunk-{c:06d}" / f"part-{k:06d}.parquet")
    return n


def write_chunk(chunk: Chunk, manifest: str, matched: str, fmt: str, out: str) -> int:
    """In a Ray task: one chunk's records in rank order, and its rows of the manifest with their
    origin; returns how many records it wrote."""
    with open_read(location(manifest)) as f:
        f.seek(chunk.start)
        rows = [orjson.loads(x) for x in f.read(chunk.end - chunk.start).splitlines()]
    parts = sorted((location(matched) / f"chunk-{chunk.c:06d}").glob("part-*.parquet"))
    table = pa.concat_tables([read_parquet(p) for p in parts]) if parts else pa.table(
        {c: pa.array([], pa.string()) for c in ("id", "file", "record")}
        | {"line": pa.array([], pa.int64()), "rank": pa.array([], pa.int64())})
    table = table.take(pc.sort_indices(table.column("rank")))
    if table.column("rank").to_pylist() != list(range(chunk.lo, chunk.lo + len(rows))):
        raise RuntimeError(f"write: chunk {chunk.c} matched {table.num_rows} of its {len(rows)} "
                           "selected records in the ingest parts")
    records = table.column("record").to_pylist()
    dst = location(out) / f"chunk-{chunk.c:06d}"
    if fmt == "jsonl":
        write_atomic(dst / "selected.jsonl", b"".join(r.encode() + b"\n" for r in records))
    else:
        from mig_ray.pools.write import write_parquet_records

        with tempfile.TemporaryDirectory() as local:
            tmp = Path(local) / "selected.parquet"
            write_parquet_records([orjson.loads(r) for r in records], tmp)
            copy_file(tmp, dst / "selected.parquet")
    out_manifest = [{"rank": m["rank"], "id": m["id"], "greedy_key": m["greedy_key"], "gain": m["gain"],
                     "score": m["score"], "labels": m["labels"], "file": f, "line": ln}
                    for m, f, ln in zip(rows, table.column("file").to_pylist(),
                                        table.column("line").to_pylist(), strict=True)]
    write_atomic(dst / "selected.manifest.jsonl", b"".join(orjson.dumps(m) + b"\n" for m in out_manifest))
    return len(records)


def join_chunks(out: str, chunks: str, fmt: str, n: int) -> int:
    """In a Ray task: the chunks' files one after another into OUT (bytes streamed, never held)."""
    folders = [location(chunks) / f"chunk-{c:06d}" for c in range(n)]
    for name in (f"selected.{fmt}", "selected.manifest.jsonl"):
        if n == 1:
            copy_file(folders[0] / name, location(out) / name)
        else:
            concat_files([f / name for f in folders], location(out) / name)
    return 2
