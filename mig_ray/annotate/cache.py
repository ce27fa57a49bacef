"""The annotation cache: Parquet parts at <cache>/<kind>/<identity hash>/part-*.parquet.

Keyed by sample id under an annotator's identity (model, prompt version, parameters), so a pool
that grew is annotated only for its new ids, and changing the annotator starts a fresh folder
instead of mixing results. Parts are written under a temp name and renamed: a killed run leaves
whole parts or none, and readers only look at `part-*.parquet`.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mig_ray.quarantine import Quarantined, one_line, quarantine
from mig_ray.storage import Location, location, read_parquet, write_atomic, write_parquet_atomic

# kind -> (result column, its type)
RESULTS: dict[str, tuple[str, pa.DataType]] = {
    "tags": ("labels", pa.list_(pa.string())),
    "score": ("score", pa.float64()),
}
BASE = [("id", pa.string()), ("status", pa.string()), ("error", pa.string()), ("calls", pa.int64())]
STALE_TMP_SECONDS = 3600


def check_kind(kind: str) -> str:
    """'tags' or 'score': the kinds whose result column the cache knows."""
    if kind not in RESULTS:
        raise ValueError(f"unknown annotation kind {kind!r}: expected one of {', '.join(RESULTS)}")
    return kind


def identity_of(identity: Any) -> dict:
    """An identity dict, or a config that has `identity()`."""
    ident = identity.identity() if hasattr(identity, "identity") else identity
    if not isinstance(ident, dict):
        raise TypeError(f"identity must be a dict or have identity() -> dict, got {type(identity).__name__}")
    return ident


def identity_hash(kind: str, identity: Any) -> str:
    """sha256 of the canonical JSON of kind + identity (sorted keys), 16 hex."""
    doc = {"kind": check_kind(kind), "identity": identity_of(identity)}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]


def cache_folder(cache_dir: Location | str, kind: str, identity: Any) -> Location:
    """Where the parts of one (kind, identity) live."""
    return location(cache_dir) / check_kind(kind) / identity_hash(kind, identity)


def prepare_folder(folder: Location, kind: str, identity: Any) -> None:
    """Create the folder with an identity.json for humans; drop temp files of long-dead writers
    (an object store has none: its objects appear whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    ident = folder / "identity.json"
    if not ident.exists():
        write_atomic(ident, orjson.dumps({"kind": kind, "identity": identity_of(identity)},
                                         option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str))
    if not isinstance(folder, Path):
        return
    now = time.time()
    for t in folder.glob(".part-*.tmp"):
        try:
            if now - t.stat().st_mtime > STALE_TMP_SECONDS:
                t.unlink()
        except OSError:
            pass


def parts(folder: Location) -> list[Location]:
    """The finished parts only: temp files of running or killed writers are not `part-*.parquet`."""
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def result_table(table: pa.Table, kind: str) -> pa.Table:
    """An annotator's output with the contract columns in their types (extra columns kept)."""
    name, typ = RESULTS[kind]
    cols: dict[str, pa.Array] = {}
    for col, t in [*BASE, (name, typ)]:
        if col not in table.column_names:
            raise ValueError(f"annotator output lacks column {col!r} (has {table.column_names})")
        cols[col] = _as_type(table.column(col), t)
    for col in table.column_names:
        if col not in cols:
            cols[col] = table.column(col)
    return pa.table(cols)


def _as_type(col: pa.ChunkedArray, t: pa.DataType) -> pa.ChunkedArray | pa.Array:
    if col.type == t:
        return col
    try:
        return col.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        # e.g. Ray's tensor extension types for ragged lists: go through Python values
        return pa.array([_plain(v) for v in col.to_pylist()], type=t)


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def write_part(table: pa.Table, folder: Location) -> Location:
    """One part, atomically: locally a temp name, then rename; on an object store one upload."""
    name = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
    if isinstance(folder, Path):
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
    else:
        write_parquet_atomic(table, folder / name)
    return folder / name


def part_problem(path: Location, kind: str) -> str | None:
    """Why a cache part cannot be used, or None when it reads whole: its contract columns (not the
    extras, which may be large) are decoded and cast to their types. A truncated upload, a stray
    file or another tool's table under a part's name all end here instead of in every later run."""
    try:
        result_table(read_parquet(path, columns=[c for c, _ in [*BASE, RESULTS[kind]]]), kind)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as e:
        return one_line(e)
    return None


def scan_ids(folder: Location, kind: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Sorted ids of the cache's readable parts as fixed-width bytes (exact membership by
    searchsorted, zero-copy for the Ray tasks that filter the pool with it), and (part, reason) of
    each part that cannot be read: the caller moves those aside, and their ids count as not cached."""
    chunks, bad = [], []
    for p in parts(folder):
        problem = part_problem(p, kind)
        if problem is not None:
            bad.append((str(p), problem))
            continue
        chunks += read_parquet(p, columns=["id"]).column("id").chunks
    if not chunks:
        return np.zeros(0, dtype="S1"), bad
    arr = np.array(pc.cast(pa.concat_arrays(chunks), pa.binary()).to_pylist(), dtype="S")
    return np.unique(arr), bad


def quarantine_parts(cache_dir: Location | str, bad: list[tuple[str, str]]) -> list[Quarantined]:
    """Move unreadable parts to <cache_dir>/quarantine/ (never deleted), one warning line each."""
    return [quarantine(location(p), location(cache_dir), reason, "its records are annotated again")
            for p, reason in bad]


def contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `ids` (bytes) are in `sorted_ids`."""
    if len(sorted_ids) == 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    idx = np.searchsorted(sorted_ids, ids)
    idx[idx == len(sorted_ids)] = 0
    return sorted_ids[idx] == ids


def load_annotations(cache_dir: Location | str, kind: str, identity: Any,
                     ids: list[str] | pa.Array | None = None, extras: bool = True) -> pa.Table:
    """The cached annotations of one identity (one row per id, the first written wins), optionally
    only for `ids`. Columns: id, status, error, calls, the result (labels or score) and, unless
    `extras` is False, the annotator's extra columns (the embedding tagger's vectors are large)."""
    folder = cache_folder(cache_dir, kind, identity)
    name, typ = RESULTS[kind]
    ps = parts(folder)
    if not ps:
        return pa.table({c: pa.array([], type=t) for c, t in [*BASE, (name, typ)]})
    columns = None if extras else [c for c, _ in [*BASE, (name, typ)]]
    bad = [(str(p), why) for p in ps if (why := part_problem(p, kind)) is not None]
    quarantine_parts(cache_dir, bad)
    ps = [p for p in ps if str(p) not in {b for b, _ in bad}]
    if not ps:
        return pa.table({c: pa.array([], type=t) for c, t in [*BASE, (name, typ)]})
    table = pa.concat_tables([read_parquet(p, columns) for p in ps], promote_options="permissive")
    if ids is not None:
        table = table.filter(pc.is_in(table.column("id"), value_set=pa.array(ids, type=pa.string())))
    # concurrent runs may have annotated the same id: keep one row per id
    first = pc.equal(_row_index(table), _first_index(table))
    return table.filter(first)


def _row_index(table: pa.Table) -> pa.Array:
    return pa.array(np.arange(table.num_rows, dtype=np.int64))


def _first_index(table: pa.Table) -> pa.Array:
    """For each row, the index of the first row with its id."""
    ids = table.column("id").to_numpy(zero_copy_only=False)
    _, first, inverse = np.unique(ids.astype(str), return_index=True, return_inverse=True)
    return pa.array(first[inverse].astype(np.int64))
