"""Read a JSONL annotated pool on every core: blocks of lines in worker processes, merged in order.

Why: on 10^6 records the single-core read (a JSON parse plus a few microseconds of Python per
record) was the largest phase of `mig-ray select`. Each worker parses its block and takes id,
score and labels through the same per-record functions as `read_annotated` (`released_fast`, then
the checked path `record_fields` for whatever it declines), so values and reject reasons are the
reader's; it keeps no per-record Python state beyond those, and its labels become codes in one
vectorised pass. Duplicate ids and the label vocabulary depend on everything before a record, so
they are settled in the merge, in line order: the result (arrays, vocabulary order, counts,
rejects with their order and messages) equals `read_annotated`'s.

Measured against column checks in numpy (types, turn counts and the turn-by-turn score on flat
lists of every record's fields): those cost about 3 us a record on this machine, `released_fast`
about 1 us, so the per-record function stays the fast path.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import orjson

from mig_ray.errors import BadRecord
from mig_ray.pools.annotated import BOM, AnnotatedPool
from mig_ray.pools.fields import FieldSpec, record_fields, released_fast
from mig_ray.pools.rejects import Rejects

BLOCK_BYTES = 16 << 20  # a block per task: small enough to balance two cores, large enough to amortise
MIN_PARALLEL_BYTES = 32 << 20  # below this the single-core reader is as quick (no process start)


@dataclass
class BlockResult:
    """What a worker sends back for one block: its accepted-by-fields records in line order (ids,
    scores, labels as codes into `names`, the block's own first-seen list), where they are, and
    its rejects; duplicates and the valid-tag filter are left to the merge."""

    ids: list[str]
    scores: np.ndarray  # float64
    label_counts: np.ndarray  # int64: labels per record
    codes: np.ndarray  # int32: into names
    names: list[str]
    lines: np.ndarray  # int64: line number within the block, from 1
    locations: np.ndarray  # int64: byte offset of the line in the file
    rejects: list[tuple[int, str, bytes]]  # (line within the block, reason, raw line)
    n_lines: int
    read: int
    blank: int


def use_parallel(path: object, spec: FieldSpec, workers: int) -> bool:
    """Whether `read_jsonl_parallel` applies: a local JSONL file large enough, more than one worker,
    and no group or cost per record (those are read by the single-core reader)."""
    return (workers > 1 and isinstance(path, Path) and path.is_file()
            and path.suffix.lower() in (".jsonl", ".ndjson", ".json")
            and spec.group_field is None and spec.cost_field is None
            and path.stat().st_size >= MIN_PARALLEL_BYTES)


def line_blocks(path: Path, block_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of about block_bytes each, cut at line starts."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] + block_bytes < size:
            f.seek(cuts[-1] + block_bytes - 1)
            f.readline()  # to the first line start at or after the target
            cuts.append(f.tell())
    if cuts[-1] < size:
        cuts.append(size)
    return list(zip(cuts, cuts[1:], strict=False))


def read_block(path: str, start: int, end: int, spec: FieldSpec, fast: bool = True) -> BlockResult:
    """One block of lines: parse, check, and pull out id, score and labels. `fast=False` sends every
    record through the checked path (the reference the fast path is tested against).

    The cyclic collector is off meanwhile: the block's parsed lists (no cycles) stay alive until the
    columns are checked, and its passes over them took half the block's time (measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        return _read_block(path, start, end, spec, fast)
    finally:
        if was:
            gc.enable()


def _read_block(path: str, start: int, end: int, spec: FieldSpec, fast: bool) -> BlockResult:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return parse_lines(data, start, spec, fast)


def parse_lines(data: bytes, start: int, spec: FieldSpec, fast: bool = True) -> BlockResult:
    """The block of the file's bytes `data` that begins at byte `start` (a line start)."""
    # the lines as the file's line iterator cuts them (at b"\n" only), without their b"\n"
    lines = data.split(b"\n")
    ended = data.endswith(b"\n")
    if ended or not data:
        lines.pop()  # what follows the last b"\n" is not a line
    starts = np.zeros(len(lines), dtype=np.int64)
    np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))[:-1] + 1, out=starts[1:])
    starts += start
    if start == 0 and lines and lines[0].startswith(BOM):  # a file-level marker, as the single-core reader
        lines[0] = lines[0][len(BOM):]
        starts[0] = len(BOM)
    rejects: list[tuple[int, str, bytes]] = []
    ids: list[str] = []
    labels: list[str] = []  # every record's labels, one after the other
    counts, taken, scores = array("q"), array("q"), array("d")
    read = blank = 0
    loads = orjson.loads
    fields = released_fast if fast and spec.is_released else None
    for i, raw in enumerate(lines):
        if raw.isspace() or not raw:
            blank += 1
            continue
        read += 1
        try:
            rec = loads(raw)
        except orjson.JSONDecodeError:
            whole = raw + b"\n" if ended or i + 1 < len(lines) else raw
            rejects.append((i + 1, f"invalid JSON: {_parse_error(whole)}", whole))
            continue
        got = fields(rec) if fields is not None and type(rec) is dict else None
        if got is None:
            try:
                got = record_fields(rec, spec)
            except BadRecord as e:
                rejects.append((i + 1, e.reason, raw))
                continue
        ids.append(got[0])
        scores.append(got[1])
        labels.extend(got[2])
        counts.append(len(got[2]))
        taken.append(i)
    index = {t: j for j, t in enumerate(dict.fromkeys(labels))}
    codes = np.fromiter(map(index.__getitem__, labels), dtype=np.int32, count=len(labels))
    rows = np.frombuffer(taken, dtype=np.int64)
    return BlockResult(ids, np.frombuffer(scores, dtype=np.float64), np.frombuffer(counts, dtype=np.int64),
                       codes, list(index), rows + 1, starts[rows], rejects, len(lines), read, blank)


def _parse_error(raw: bytes) -> orjson.JSONDecodeError:
    """orjson's error on the line as the file holds it (its newline included: the message may give
    the position of the end of the data)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return e
    raise AssertionError("a line that failed to parse parsed")


def read_jsonl_parallel(path: Path, spec: FieldSpec, valid: set[str] | None, rejects: Rejects,
                        workers: int, progress: Callable[[int], None] | None = None,
                        block_bytes: int | None = None, fast: bool = True) -> AnnotatedPool:
    """The pool as `read_annotated` reads it, its blocks parsed by `workers` processes."""
    blocks = line_blocks(path, block_bytes or BLOCK_BYTES)
    args = [(str(path), a, b, spec, fast) for a, b in blocks]
    if workers <= 1 or len(blocks) <= 1:
        results = [_read_block_args(a) for a in args]
    else:
        with multiprocessing.get_context(start_method()).Pool(min(workers, len(blocks))) as pool:
            results = []
            for r, (_, end) in zip(pool.imap(_read_block_args, args), blocks, strict=True):
                results.append(r)
                if progress is not None:
                    progress(end)
    return merge_blocks(path, results, valid, rejects)


def start_method() -> str:
    """fork where it is safe (Linux, a process with no other thread: the usual `mig-ray select`),
    else spawn (measured: the 19 tests of tests/test_parallel_read.py pass either way): a child
    forked from a process with other threads (Ray's, in a notebook or a driver that joined a
    cluster) may inherit a lock some thread held, and hang."""
    import threading

    ray = sys.modules.get("ray")
    threads = threading.active_count() > 1 or (ray is not None and ray.is_initialized())
    return "fork" if sys.platform.startswith("linux") and not threads else "spawn"


def _read_block_args(a: tuple) -> BlockResult:
    return read_block(*a)


def merge_blocks(path: Path, results: list[BlockResult], valid: set[str] | None,
                 rejects: Rejects) -> AnnotatedPool:
    """Blocks in file order -> one pool: global line numbers, duplicate ids (the first stays), the
    valid-tag filter, the vocabulary in first-seen order, and the rejects in line order."""
    offsets = np.cumsum([0] + [r.n_lines for r in results])
    ids = results[0].ids if len(results) == 1 else list(chain.from_iterable(r.ids for r in results))
    lines = np.concatenate([r.lines + off for r, off in zip(results, offsets.tolist(), strict=False)]
                           or [np.zeros(0, np.int64)])
    all_rejects = [(line + off, reason, raw) for r, off in zip(results, offsets.tolist(), strict=False)
                   for line, reason, raw in r.rejects]
    accepted = np.ones(len(ids), dtype=bool)
    if len(set(ids)) != len(ids):  # duplicate ids: the first (in line order) stays
        first: dict[str, int] = {}
        for i, (rid, line) in enumerate(zip(ids, lines.tolist(), strict=True)):
            seen = first.setdefault(rid, line)
            if seen != line:
                accepted[i] = False
                all_rejects.append((line, f"duplicate id: {rid!r} (first at line {seen})", None))
        all_rejects.sort(key=lambda r: r[0])
    # labels: block-local codes -> one key per distinct name over all blocks
    key_of: dict[str, int] = {}
    block_keys = []
    for r in results:
        block_keys.append(np.array([key_of.setdefault(t, len(key_of)) for t in r.names], dtype=np.int64))
    names = list(key_of)
    if len(results) == 1:  # one block: its own codes are the keys (its names are distinct)
        keys = results[0].codes
    else:
        keys = np.concatenate([k[r.codes] for k, r in zip(block_keys, results, strict=True)]
                              or [np.zeros(0, np.int64)])
    counts = np.concatenate([r.label_counts for r in results] or [np.zeros(0, np.int64)])
    is_valid = np.array([valid is None or t in valid for t in names], dtype=bool)
    if accepted.all() and is_valid.all():  # the usual pool: every label of every record stays
        dropped, kept_keys, per_record = 0, keys, counts
    else:
        record_of = np.repeat(np.arange(len(counts)), counts)
        in_accepted = accepted[record_of]
        label_ok = is_valid[keys] if len(keys) else np.zeros(0, dtype=bool)
        dropped = int(np.sum(in_accepted & ~label_ok))
        take = in_accepted & label_ok
        kept_keys = keys[take]
        per_record = np.bincount(record_of[take], minlength=len(counts))[accepted]
    if accepted.all():  # keys are numbered in first-seen order over the blocks in order
        by_first = np.flatnonzero(is_valid)  # each name is some accepted record's label
    else:  # a duplicate's labels do not count: first-seen order over the accepted records
        uniq, first_at = np.unique(kept_keys, return_index=True)
        by_first = uniq[np.argsort(first_at)]
    if len(by_first) == len(names):  # keys already in first-seen order, none dropped
        codes = kept_keys.astype(np.int32, copy=False)
    else:
        rank = np.full(len(names), -1, dtype=np.int64)
        rank[by_first] = np.arange(len(by_first))
        codes = rank[kept_keys].astype(np.int32)
    indptr = np.zeros(len(per_record) + 1, dtype=np.int64)
    np.cumsum(per_record, out=indptr[1:])
    raws = {}
    if any(raw is None for _, _, raw in all_rejects):  # a duplicate's line: read back from the file
        want = {line for line, _, raw in all_rejects if raw is None}
        locations = np.concatenate([r.locations for r in results])
        raws = _lines_at(path, {line: int(loc) for line, loc in zip(lines.tolist(), locations.tolist(),
                                                                     strict=True) if line in want})
    for line, reason, raw in all_rejects:
        rejects.add(str(path), line, reason, raws[line] if raw is None else raw, "line")
    scores = np.concatenate([r.scores for r in results] or [np.zeros(0)])[accepted]
    locations = np.concatenate([r.locations for r in results] or [np.zeros(0, np.int64)])[accepted]
    kept_ids = ids if accepted.all() else [rid for rid, a in zip(ids, accepted.tolist(), strict=True) if a]
    total = {
        "read": sum(r.read for r in results),
        "blank_lines": sum(r.blank for r in results),
        "rejected": rejects.count,
        "selectable": len(kept_ids),
        "no_valid_label": int(np.sum(per_record == 0)),
        "labels_dropped_by_valid_tags": dropped,
    }
    vocab = [names[k] for k in by_first.tolist()]
    return AnnotatedPool(path, "jsonl", kept_ids, scores, indptr, codes, vocab, locations,
                         lines[accepted], total)


def _lines_at(path: Path, where: dict[int, int]) -> dict[int, bytes]:
    """The raw lines at these byte offsets (line number -> offset)."""
    out = {}
    with open(path, "rb") as f:
        for line, loc in where.items():
            f.seek(loc)
            out[line] = f.readline()
    return out
