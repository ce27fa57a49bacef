"""The dedup stage's tasks, over files, as the assemble join's (join.py): the driver holds paths,
counts and the verified duplicate edges, never records or signatures.

A *source* is one file of signatures with a range of positions: tonight's ingest parts (positions
>= 0, in input order) and, with --incremental, the kept records of earlier nights from the cache
(negative positions, oldest night first, so that an earlier night's record is always the lower one
and stays). `source_of(starts, pos)` finds the source of a position from the sources' first positions.

1. `sign_part` per ingest part (`sign_cached` per cache part): decontaminate, normalise, MinHash;
   write the signatures (pos, id, exact hash, signature) and the band rows split into B buckets;
2. `bucket_pairs` per bucket: its rows of every source -> candidate pairs (a < b), split by source(a);
3. `attach` per source s: the pairs whose a it holds, with a's id, exact hash and signature, split by
   source(b);
4. `verify` per source s: the pairs whose b it holds -> the estimated Jaccard; the edges at or above
   the threshold (or of equal exact hashes) go back to the driver: 8 + 8 + 4 + 1 = 21 bytes an edge.
The driver's clusters (keep the lowest) give one (kept, dropped) pair per dropped record; they take
steps 3 again, then
5. `finish_part` per ingest part: its duplicates.jsonl rows (with the kept twin's id and Jaccard),
   the positions it drops (job/kept.py: later stages read the ingest part less those) and
   (incremental) its kept records' signatures for the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mig_ray.curate.contamination import NgramIndex
from mig_ray.curate.lsh import EXACT_BAND, candidate_pairs, unique_pairs
from mig_ray.curate.minhash import band_keys, estimated_jaccard, text_signatures
from mig_ray.curate.text import conversation_text, text_hashes, turn_texts
from mig_ray.job.join import read_batch, split_by_bucket, write_ipc
from mig_ray.job.kept import write_dropped
from mig_ray.pools.ingest import blake_hashes
from mig_ray.storage import location, parquet_file, read_parquet, write_atomic, write_parquet_atomic

BAND_SCHEMA = pa.schema([("band", pa.int16()), ("key", pa.uint64()), ("aux", pa.uint64()),
                         ("pos", pa.int64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])
CACHE_COLUMNS = ["id", "exact", "sig"]


def sig_schema(num_perm: int) -> pa.Schema:
    return pa.schema([("pos", pa.int64()), ("id", pa.string()), ("exact", pa.uint64()),
                      ("sig", pa.list_(pa.uint32(), num_perm))])


def attach_schema(num_perm: int) -> pa.Schema:
    return pa.schema([("a", pa.int64()), ("b", pa.int64()), ("id_a", pa.string()), ("exact_a", pa.uint64()),
                      ("sig_a", pa.list_(pa.uint32(), num_perm))])


@dataclass(frozen=True)
class CurateSpec:
    """The stage's settings and where its tasks write; broadcast once to every task (`run_tasks`
    puts its kwargs in the object store), the benchmark index with it."""

    turns: str
    exact: bool
    near: bool
    ngram: int
    num_perm: int
    bands: int
    seed: int
    threshold: float
    buckets: int
    work: str  # folder of the intermediate files
    index: NgramIndex | None = None


@dataclass(frozen=True)
class Signed:
    """What `sign_part` / `sign_cached` report: counts, first and last position, and its files."""

    k: int
    rows: int
    contaminated: int
    lo: int
    hi: int
    sig_file: str
    band_file: str
    contaminated_file: str


def source_of(starts: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The source index of each position (`starts`: each source's first position, ascending)."""
    return np.searchsorted(starts, pos, side="right") - 1


def one_batch(table: pa.Table) -> pa.RecordBatch:
    """The table as one record batch (an empty one when it has no rows)."""
    batches = table.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return pa.record_batch([pa.array([], type=f.type) for f in table.schema], schema=table.schema)
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def split_by_source(table: pa.Table, column: str, starts: np.ndarray) -> list[pa.RecordBatch]:
    src = source_of(starts, table.column(column).to_numpy()) if table.num_rows else np.zeros(0, np.int64)
    return split_by_bucket(table, src, len(starts))


# ---------------------------------------------------------------- 1. signatures and band rows

def sign_part(item: tuple[int, str], spec: CurateSpec) -> Signed:
    """In a Ray task: ingest part k -> its contaminated rows, signatures and band rows."""
    k, part = item
    table = read_parquet(location(part), columns=["id", "position", "file", "line", "messages"])
    messages = [orjson.loads(m) for m in table.column("messages").to_pylist()]
    keep = np.ones(table.num_rows, dtype=bool)
    bad_rows = []
    if spec.index is not None:
        hits = spec.index.match([turn_texts(m, "user") for m in messages])
        meta = table.select(["id", "position", "file", "line"]).to_pylist()
        for i, hit in enumerate(hits):
            if hit is not None:
                keep[i] = False
                bad_rows.append({**meta[i], "benchmark": hit[0], "ngram": hit[1]})
    bad_file = location(spec.work) / f"contaminated-{k:06d}.jsonl"
    write_atomic(bad_file, b"".join(orjson.dumps(r) + b"\n" for r in bad_rows))
    kept = table.filter(pa.array(keep))
    texts = [conversation_text(m, spec.turns) for m, ok in zip(messages, keep, strict=True) if ok]
    sig = signature_matrix(texts, spec)
    signed = signed_files(f"part-{k:06d}", kept.column("position").to_numpy(), kept.column("id"),
                          text_hashes(texts), sig, spec)
    return Signed(k, table.num_rows, len(bad_rows), *signed, str(bad_file))


def sign_cached(item: tuple[int, str, int], spec: CurateSpec) -> Signed:
    """In a Ray task: an earlier night's cached signatures, at positions base, base + 1, ..."""
    i, part, base = item
    table = read_parquet(location(part), columns=CACHE_COLUMNS)
    sig = signature_array(table.column("sig"), spec.num_perm)
    pos = base + np.arange(table.num_rows, dtype=np.int64)
    signed = signed_files(f"cache-{i:06d}", pos, table.column("id"), table.column("exact").to_numpy(), sig,
                          spec, has_shingles=(sig != np.uint32(0xFFFFFFFF)).any(axis=1))
    return Signed(-1 - i, table.num_rows, 0, *signed, "")


def signature_matrix(texts: list[str], spec: CurateSpec) -> np.ndarray:
    """uint32 [len(texts), num_perm] (no columns when near duplicates are off)."""
    if not spec.near:
        return np.zeros((len(texts), 0), dtype=np.uint32)
    return text_signatures(texts, spec.ngram, spec.num_perm, spec.seed)[0]


def signature_array(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A fixed-size-list column of uint32 -> a [rows, width] array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), width).astype(np.uint32, copy=False)


def signed_files(name: str, pos: np.ndarray, ids: pa.ChunkedArray | pa.Array, exact: np.ndarray,
                 sig: np.ndarray, spec: CurateSpec, has_shingles: np.ndarray | None = None) -> tuple:
    """Write a source's signature file and band file; (lo, hi, sig file, band file)."""
    work = location(spec.work)
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    width = sig.shape[1]
    sig_col = pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), width) if width else \
        pa.array([[]] * len(pos), pa.list_(pa.uint32(), 0))
    sig_table = pa.Table.from_arrays([pa.array(pos, pa.int64()), ids.cast(pa.string()),
                                      pa.array(exact, pa.uint64()),
                                      sig_col], schema=sig_schema(width))
    sig_file = work / f"sig-{name}.arrow"
    write_ipc(sig_file, sig_schema(width), [one_batch(sig_table)])
    idh = blake_hashes(ids.to_pylist()) if len(pos) else np.zeros(0, np.uint64)
    band, key, aux, at = [], [], [], []
    if spec.exact:
        band.append(np.full(len(pos), EXACT_BAND, np.int16))
        key.append(exact)
        aux.append(idh)
        at.append(pos)
    if width:
        with_shingles = (sig != np.uint32(0xFFFFFFFF)).any(axis=1) if has_shingles is None else has_shingles
        rows = np.flatnonzero(with_shingles)
        keys = band_keys(sig[rows], spec.bands)
        band.append(np.repeat(np.arange(spec.bands, dtype=np.int16)[None, :], len(rows), 0).reshape(-1))
        key.append(keys.reshape(-1))
        # a band group collapses one text (exact on) or one record of several nights (exact off)
        aux.append(np.repeat(exact[rows] if spec.exact else idh[rows], spec.bands))
        at.append(np.repeat(pos[rows], spec.bands))
    cols = [np.concatenate(c) if c else np.zeros(0, t) for c, t in
            ((band, np.int16), (key, np.uint64), (aux, np.uint64), (at, np.int64))]
    bands = pa.Table.from_arrays([pa.array(c) for c in cols], schema=BAND_SCHEMA)
    bucket = (cols[1] % np.uint64(spec.buckets)).astype(np.int64)
    band_file = work / f"bands-{name}.arrow"
    write_ipc(band_file, BAND_SCHEMA, split_by_bucket(bands, bucket, spec.buckets))
    lo, hi = (int(pos[0]), int(pos[-1])) if len(pos) else (0, -1)
    return lo, hi, str(sig_file), str(band_file)


# ---------------------------------------------------------------- 2. candidate pairs per bucket

def bucket_pairs(b: int, band_files: list[str], starts: list[int], work: str) -> dict:
    """In a Ray task: bucket b of every source's band rows -> its candidate pairs by source(a)."""
    rows = pa.Table.from_batches([read_batch(location(f), b) for f in band_files], schema=BAND_SCHEMA)
    a, bb = candidate_pairs(*(rows.column(c).to_numpy() for c in ("band", "key", "aux", "pos")))
    pairs = pa.Table.from_arrays([pa.array(a, pa.int64()), pa.array(bb, pa.int64())], schema=PAIR_SCHEMA)
    path = location(work) / f"pairs-{b:06d}.arrow"
    write_ipc(path, PAIR_SCHEMA, split_by_source(pairs, "a", np.asarray(starts)))
    return {"b": b, "pairs": len(a), "file": str(path)}


# ---------------------------------------------------------------- 3. a's signature to b's source

def read_signatures(path: str) -> pa.Table:
    """A source's signature table (one batch)."""
    return pa.Table.from_batches([read_batch(location(path), 0)])


def rows_of(sig_table: pa.Table, pos: np.ndarray) -> np.ndarray:
    """Row indices of these positions in a source's signature table (sorted by pos)."""
    have = sig_table.column("pos").to_numpy()
    at = np.searchsorted(have, pos)
    if len(pos) and (at.max() >= len(have) or not np.array_equal(have[at], pos)):
        raise ValueError("a pair names a position its source does not hold")
    return at


def attach(s: int, pair_files: list[str], sig_files: list[str], starts: list[int], num_perm: int,
           work: str, tag: str) -> dict:
    """In a Ray task: the pairs whose a is in source s, with a's id, exact hash and signature,
    written split by source(b)."""
    pairs = pa.Table.from_batches([read_batch(location(f), s) for f in pair_files], schema=PAIR_SCHEMA)
    a, b = unique_pairs(pairs.column("a").to_numpy(), pairs.column("b").to_numpy())
    schema = attach_schema(num_perm)
    sig = read_signatures(sig_files[s])
    take = pa.array(rows_of(sig, a), pa.int64())
    out = pa.Table.from_arrays([pa.array(a, pa.int64()), pa.array(b, pa.int64()), sig.column("id").take(take),
                                sig.column("exact").take(take), sig.column("sig").take(take)], schema=schema)
    path = location(work) / f"attach-{tag}-{s:06d}.arrow"
    write_ipc(path, schema, split_by_source(out, "b", np.asarray(starts)))
    return {"s": s, "pairs": len(a), "file": str(path)}


def joined(s: int, attach_files: list[str], sig_file: str,
           num_perm: int) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """The attached pairs whose b is in source s (sorted by b, a), with b's signature rows: (pairs,
    source s's signature table, the row of each b in it)."""
    pairs = pa.Table.from_batches([read_batch(location(f), s) for f in attach_files],
                                  schema=attach_schema(num_perm))
    pairs = pairs.take(pc.sort_indices(pairs, [("b", "ascending"), ("a", "ascending")]))
    sig = read_signatures(sig_file)
    return pairs, sig, rows_of(sig, pairs.column("b").to_numpy())


def similarity(pairs: pa.Table, sig: pa.Table, rows: np.ndarray,
               num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the estimated Jaccard (1 for equal exact hashes) and whether the texts are equal."""
    exact = pairs.column("exact_a").to_numpy() == sig.column("exact").to_numpy()[rows]
    if num_perm:
        sig_b = signature_array(sig.column("sig").take(pa.array(rows, pa.int64())), num_perm)
        jac = estimated_jaccard(signature_array(pairs.column("sig_a"), num_perm), sig_b)
    else:
        jac = np.zeros(len(rows))
    return np.where(exact, 1.0, jac), exact


def verify(s: int, attach_files: list[str], sig_files: list[str], num_perm: int, threshold: float) -> dict:
    """In a Ray task: the candidate pairs whose b is in source s -> the duplicate edges."""
    pairs, sig, rows = joined(s, attach_files, sig_files[s], num_perm)
    jac, exact = similarity(pairs, sig, rows, num_perm)
    keep = exact | (jac >= threshold)
    return {"s": s, "candidates": pairs.num_rows, "a": pairs.column("a").to_numpy()[keep],
            "b": pairs.column("b").to_numpy()[keep]}


# ---------------------------------------------------------------- 5. the outputs of each part

@dataclass(frozen=True)
class Finished:
    k: int
    kept: int
    exact: int
    near: int
    earlier_nights: int  # dropped as duplicates of an earlier night's record
    duplicates_file: str


def finish_part(item: tuple[int, str, int, str], attach_files: list[str], num_perm: int, dropped: str,
                cache: str | None) -> Finished:
    """In a Ray task: ingest part k (its signature file; source s, -1 when that file is empty) -> its
    duplicates.jsonl rows, the positions it drops (contaminated and duplicate rows; job/kept.py) and
    (incremental) its kept records' signatures for the cache. The part's records are not rewritten."""
    k, part, s, sig_file = item
    name = f"part-{k:06d}"
    rows: list[dict] = []
    drop = np.zeros(0, np.int64)
    sig = read_signatures(sig_file)
    if s >= 0:
        pairs, sig, at = joined(s, attach_files, sig_file, num_perm)
        jac, exact = similarity(pairs, sig, at, num_perm)
        drop = pairs.column("b").to_numpy()
        kept_pos = pairs.column("a").to_numpy()
        ids = sig.column("id").take(pa.array(at, pa.int64())).to_pylist()
        for i, (rid, twin) in enumerate(zip(ids, pairs.column("id_a").to_pylist(), strict=True)):
            rows.append({"id": rid, "kept_id": twin, "jaccard": round(float(jac[i]), 4),
                         "reason": "exact" if exact[i] else "near", "position": int(drop[i]),
                         "kept_position": int(kept_pos[i])})
    positions = read_parquet(location(part), columns=["position"]).column("position").to_numpy()
    # the signature rows are the part's rows that were not contaminated; of those, the undropped stay
    signed = sig.column("pos").to_numpy()
    contaminated = positions[~np.isin(positions, signed)]
    write_dropped(location(dropped), f"{name}.parquet", np.concatenate([contaminated, drop]))
    if cache is not None:
        left = sig.filter(pc.invert(pc.is_in(sig.column("pos"), value_set=pa.array(drop, pa.int64()))))
        write_parquet_atomic(left.select(CACHE_COLUMNS), location(cache) / f"{name}.parquet")
    dup_file = location(dropped).parent / "_duplicates" / f"{name}.jsonl"
    write_atomic(dup_file, b"".join(orjson.dumps(r) + b"\n" for r in rows))
    n_exact = sum(r["reason"] == "exact" for r in rows)
    earlier = sum(r["kept_position"] < 0 for r in rows)
    return Finished(k, len(positions) - len(contaminated) - len(drop), n_exact, len(rows) - n_exact, earlier,
                    str(dup_file))


def part_rows(path: str) -> int:
    return parquet_file(location(path)).metadata.num_rows
