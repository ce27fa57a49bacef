"""Ingest: raw pools (JSONL, JSON array, Parquet, Hugging Face `save_to_disk` dirs) -> one Parquet
table of normalised conversations with stable ids, in Ray tasks (one per block of input).

Why two passes: positions must be the exact global input order (greedy ties go to the lowest), so
every input is cut into units (byte ranges of JSONL cut at line starts, row ranges of Parquet,
whole JSON arrays and Arrow shards), the units' record counts are taken first, and the parse of
each unit then knows its first line and position. Each parse task writes its own part file
(temp name, then rename), rejects file and 8-byte id hashes cut into hash buckets; one task per
bucket finds the hashes seen twice, so the driver only sees per-unit counts and the few candidate
rows, and a pool of 10^8 records never passes through it. Candidates are confirmed on the real ids
(first occurrence in input order wins), and tasks move the later occurrences to the rejects.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from mig_ray import metrics
from mig_ray.errors import BadRecord, PoolError
from mig_ray.pools.annotated import BOM, Block, count_lines, split_blocks
from mig_ray.pools.layouts import IdRule, check_layout, normalise, released_annotations
from mig_ray.runtime.session import ensure_ray, run_tasks, task_slots
from mig_ray.storage import (
    Location,
    RemotePath,
    concat_files,
    location,
    open_read,
    parquet_file,
    read_parquet,
    rmtree,
    write_parquet_atomic,
)

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("position", pa.int64()),
    ("file", pa.string()),
    ("line", pa.int64()),
    ("messages", pa.string()),
    ("record", pa.string()),
    ("labels", pa.list_(pa.string())),
    ("score", pa.float64()),
])
BLOCK_BYTES = 64 << 20
BLOCK_ROWS = 200_000
BUCKET_ROWS = 2_000_000
# zstd: the parts' record column, read back by write, decompressed 3x faster than with snappy and
# took 40% less space (a 143K-record part of the Tulu3-shaped pool: 12 MB against 20 MB)
PART_COMPRESSION = "zstd"
_TMP_REJECTS = "_rejects_tmp"


@dataclass
class IngestResult:
    """What an ingest did; `reasons` keys are the reject reasons up to their first colon."""

    out_dir: str
    rejects_path: str
    read: int = 0
    rejected: int = 0
    accepted: int = 0
    blank_lines: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, int] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    units: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Unit:
    """One parse task: a piece of one input. `fmt` jsonl: bytes [start, end); parquet: rows
    [start, end); json / arrow: the whole file. `name` is what the `file` column says."""

    idx: int
    fmt: str
    path: str
    name: str
    start: int = 0
    end: int = 0
    last: bool = True  # last unit of its file (a JSONL file's last line may lack its newline)
    first_line: int = 1
    base: int = 0  # position of the unit's first record
    listing: int = 0  # which of the inputs it comes from (a file listed twice is two inputs)


def ingest(inputs: list[Location] | list[str], out_dir: Location | str, layout: str = "auto",
           id_field: str | None = None, rejects_path: Location | str | None = None, progress: bool = True,
           block_bytes: int = BLOCK_BYTES, block_rows: int = BLOCK_ROWS,
           num_cpus: float = 1.0, bucket_rows: int = BUCKET_ROWS) -> IngestResult:
    """Read `inputs` in order into `out_dir/part-*.parquet` (schema: SCHEMA); bad records go to
    `rejects_path` (default `<out_dir>.rejects.jsonl`, outside out_dir so the folder stays pure Parquet).
    Existing part files in out_dir are replaced. Starts a local Ray when none is running.
    `bucket_rows`: about how many id hashes one task of the duplicate check compares. The work runs
    as plain Ray tasks, which draw no progress bar: `progress` is kept for callers."""
    t0 = time.perf_counter()
    check_layout(layout)
    IdRule(id_field)  # validate the path before any work
    out = location(out_dir)
    rej_path = location(rejects_path) if rejects_path is not None \
        else out.with_name(out.name + ".rejects.jsonl")
    for p in inputs:  # a missing or unknown input fails before Ray starts
        input_format(location(p))
    if inputs:
        ensure_ray()
    units = plan_units([location(p) for p in inputs], block_bytes, block_rows, task_slots() if inputs else 1)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    tmp_rej = out / _TMP_REJECTS
    rmtree(tmp_rej)
    tmp_rej.mkdir()
    result = IngestResult(str(out), str(rej_path), inputs=[str(p) for p in inputs], units=len(units))
    if units:
        counts = run_tasks([asdict(u) for u in units], _count_unit, {}, num_cpus)
        units = _place(units, {r["idx"]: r["n"] for r in counts})
        buckets = max(1, math.ceil(sum(r["n"] for r in counts) / bucket_rows))
        summaries = run_tasks([asdict(u) for u in units], _parse_unit,
                         {"out": str(out), "layout": layout, "id_field": id_field, "buckets": buckets},
                         num_cpus)
        summaries.sort(key=lambda r: r["idx"])
        dupes = _duplicates(summaries, buckets, out, num_cpus)
        fixed = run_tasks([{"idx": s["idx"], "part": s["part"], "rejects": s["rejects"],
                       "drop": json.dumps(dupes[s["idx"]])} for s in summaries if s["idx"] in dupes],
                     _drop_duplicates, {"layout": layout}, num_cpus)
        _finish(summaries, {f["idx"]: f for f in fixed}, rej_path, result)
    else:
        rej_path.parent.mkdir(parents=True, exist_ok=True)
        rej_path.write_bytes(b"")
    rmtree(tmp_rej)
    result.seconds = round(time.perf_counter() - t0, 3)
    metrics.ingested(result.accepted, result.rejected, result.reasons.get("duplicate id", 0),
                     sum(location(p).stat().st_size for p in result.parts))
    return result


# ---------------------------------------------------------------- planning (driver, metadata only)

def input_format(path: Location) -> str:
    """jsonl, json (a whole-file array), parquet or hf (a `save_to_disk` directory)."""
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf"
        raise PoolError(f"{path}: a directory that is not a Hugging Face save_to_disk dataset "
                        "(no state.json or dataset_dict.json)")
    if not path.is_file():
        raise PoolError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":  # an array, or JSON lines under a .json name: the first byte tells
        with open_read(path) as f:
            head = f.read(4096).removeprefix(BOM).lstrip()
            while not head and (chunk := f.read(4096)):
                head = chunk.lstrip()
        return "json" if head.startswith(b"[") else "jsonl"
    raise PoolError(f"{path}: unknown input format {suffix!r} (expected .jsonl, .json, .parquet or a "
                    "Hugging Face save_to_disk directory)")


def hf_shards(path: Location) -> list[tuple[str, list[Location]]]:
    """(name, arrow files) per split of a `save_to_disk` directory, splits in their saved order."""
    dd = path / "dataset_dict.json"
    if dd.is_file():
        splits = _read_json(dd).get("splits")
        if not isinstance(splits, list):
            raise PoolError(f"{dd}: no list of splits")
        return [s for split in splits for s in hf_shards(path / split)]
    state = _read_json(path / "state.json")
    files = state.get("_data_files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and "filename" in f for f in files):
        raise PoolError(f"{path / 'state.json'}: no _data_files list")
    if state.get("_indices_data_files"):
        raise PoolError(f"{path}: saved with an indices mapping; re-save it with flatten_indices()")
    arrows = [path / f["filename"] for f in files]
    for a in arrows:
        if not a.is_file():
            raise PoolError(f"{a}: listed in state.json but missing")
    return [(str(path), arrows)]


def _read_json(p: Location) -> dict:
    try:
        v = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise PoolError(f"{p}: unreadable ({e})") from e
    if not isinstance(v, dict):
        raise PoolError(f"{p}: not a JSON object")
    return v


def plan_units(inputs: list[Location], block_bytes: int, block_rows: int, slots: int = 1) -> list[_Unit]:
    """Units of work in input order; JSONL bytes and Parquet rows are cut so that `slots` tasks
    running at once stay busy to the last wave (see even_blocks; each file's share rounds up, so several
    files may add a few units)."""
    formats = [(p, input_format(p)) for p in inputs]
    sizes = {str(p): p.stat().st_size for p, fmt in formats if fmt == "jsonl"}
    rows_of: dict[str, int] = {}
    for p, fmt in formats:
        if fmt == "parquet":
            try:
                rows_of[str(p)] = parquet_file(p).metadata.num_rows
            except Exception as e:  # pyarrow raises several types for a broken file
                raise PoolError(f"{p}: not a readable Parquet file ({e})") from e
    bytes_total = sum(sizes[str(p)] for p, fmt in formats if fmt == "jsonl")  # a file listed twice, twice
    rows_total = sum(rows_of[str(p)] for p, fmt in formats if fmt == "parquet")
    byte_blocks = even_blocks(bytes_total, block_bytes, slots)
    row_blocks = even_blocks(rows_total, block_rows, slots)
    units: list[_Unit] = []
    for k, (path, fmt) in enumerate(formats):
        name = str(path)
        if fmt == "jsonl":
            blocks = split_blocks(path, _share(sizes[name], bytes_total, byte_blocks))
            for j, b in enumerate(blocks):
                units.append(_Unit(len(units), "jsonl", name, name, b.start, b.end, j == len(blocks) - 1,
                                   listing=k))
        elif fmt == "parquet":
            blocks = split_blocks(path, _share(rows_of[name], rows_total, row_blocks))
            for b in blocks:
                units.append(_Unit(len(units), "parquet", name, name, b.start, b.end, listing=k))
        elif fmt == "json":
            units.append(_Unit(len(units), "json", name, name, listing=k))
        else:
            for split_name, arrows in hf_shards(path):
                for j, a in enumerate(arrows):
                    units.append(_Unit(len(units), "arrow", str(a), split_name, last=j == len(arrows) - 1,
                                       listing=k))
    return units


def even_blocks(total: int, per_block: int, slots: int) -> int:
    """How many blocks to cut `total` (bytes or rows) into, near `per_block` each, so that `slots`
    cores stay busy to the end: a multiple of `slots` blocks, or, for a pool of fewer blocks, one
    per core down to an eighth of `per_block`."""
    blocks = max(1, math.ceil(total / per_block))
    if blocks >= slots:
        return math.ceil(blocks / slots) * slots
    return max(blocks, min(slots, total // max(1, per_block // 8)))


def _share(part: int, total: int, blocks: int) -> int:
    """A file's blocks: its share of the pool's `blocks`, at least one."""
    return max(1, -(-part * blocks // total)) if total else 1


def _place(units: list[_Unit], counts: dict[int, int]) -> list[_Unit]:
    """Give each unit its first line (within its input and `file` name) and its global first position."""
    placed = []
    base = 0
    line = 1
    prev = None
    for u in units:
        if (u.listing, u.name) != prev:
            line, prev = 1, (u.listing, u.name)
        placed.append(replace(u, first_line=line, base=base))
        n = counts[u.idx]
        line += n
        base += n
    return placed


# ---------------------------------------------------------------- tasks

def _count_unit(row: dict) -> dict:
    """Records in a unit: lines of a JSONL block (a last line without newline included), elements
    of a JSON array, rows of a Parquet block or an Arrow shard."""
    u = _Unit(**row)
    if u.fmt == "jsonl":
        n = count_lines(u.path, Block(u.start, u.end))
        if u.last and u.end > u.start:
            with open_read(location(u.path)) as f:
                f.seek(u.end - 1)
                n += int(f.read(1) != b"\n")
    elif u.fmt == "parquet":
        n = u.end - u.start
    elif u.fmt == "json":
        n = len(_json_array(u.path))
    else:
        n = sum(b.num_rows for b in _arrow_batches(u.path))
    return {"idx": u.idx, "n": n}


def _json_array(path: str) -> list[str]:
    """The elements of a JSON array file as their original text (a broken array is a PoolError:
    after a syntax error there is no telling where the next record starts)."""
    data = location(path).read_bytes().removeprefix(BOM)
    try:
        text = data.decode("utf-8")
        orjson.loads(data)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as e:
        raise PoolError(f"{path}: not a valid JSON array ({e})") from e
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    out: list[str] = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if text[i] == "]":
            return out
        _, end = dec.raw_decode(text, i)
        out.append(text[i:end])
        i = end
        while i < n and text[i] in " \t\r\n":
            i += 1
        if text[i] == ",":
            i += 1


def _arrow_batches(path: str):
    """Record batches of a `datasets` Arrow shard (IPC stream; the IPC file format is accepted too)."""
    where = location(path)
    source = pa.BufferReader(where.read_bytes()) if isinstance(where, RemotePath) else pa.memory_map(path)
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return list(reader)


def _records(u: _Unit):
    """(line, parsed record or a BadRecord, original UTF-8 bytes or None for a blank line) in order.
    Bytes, not str: Arrow takes them as they are, where a str costs an encode per row."""
    if u.fmt == "jsonl":
        with open_read(location(u.path)) as f:
            f.seek(u.start)
            data = f.read(u.end - u.start)
        if u.start == 0 and data.startswith(BOM):
            data = data[len(BOM):]
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for i, raw in enumerate(lines):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            line = u.first_line + i
            if not raw.strip():
                yield line, None, None
                continue
            try:
                yield line, orjson.loads(raw), raw
            except orjson.JSONDecodeError as e:
                yield line, BadRecord(f"invalid JSON: {e}"), raw
    elif u.fmt == "json":
        for i, text in enumerate(_json_array(u.path)):
            yield u.first_line + i, orjson.loads(text), text.encode()
    elif u.fmt == "parquet":
        pf = parquet_file(location(u.path))
        row = 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row + n > u.start and row < u.end:
                first = max(u.start, row)
                table = pf.read_row_group(g).slice(first - row, min(u.end, row + n) - first)
                for i, rec in enumerate(table.to_pylist()):
                    yield first + i + 1, rec, _dump(rec)
            row += n
    else:
        line = u.first_line
        for batch in _arrow_batches(u.path):
            for rec in batch.to_pylist():
                yield line, rec, _dump(rec)
                line += 1


def _dump(rec: Any) -> bytes:
    """A row's JSON text as bytes of its own size: an orjson result keeps orjson's larger write
    buffer, and a list of them held ten times their text (measured)."""
    return orjson.dumps(rec, default=str).decode().encode()


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic collector off while a unit is parsed: its records hold no cycles, and the
    collector's passes over the growing per-row lists cost about 5% of a unit's time (measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _utf8(rows: list[bytes]) -> pa.Array | pa.ChunkedArray:
    """Rows known to be UTF-8 (orjson parsed or wrote each) as a string array, without Arrow's
    validation pass (ten times the copy: 0.23 s against 0.02 s for a 143K-record unit). Past 2 GiB
    of text Arrow returns chunks; each is viewed."""
    arr = pa.array(rows, pa.binary())
    if isinstance(arr, pa.ChunkedArray):
        return pa.chunked_array([c.view(pa.string()) for c in arr.chunks], pa.string())
    return arr.view(pa.string())


def _parse_unit(row: dict, out: str, layout: str, id_field: str | None, buckets: int) -> dict:
    with _no_gc():
        return _parse(row, out, layout, id_field, buckets)


def _parse(row: dict, out: str, layout: str, id_field: str | None, buckets: int) -> dict:
    u = _Unit(**row)
    rule = IdRule(id_field)
    ids: list[str] = []
    lines: list[int] = []
    messages: list[str] = []
    texts: list[bytes] = []
    labels_of: list[list[str] | None] = []
    scores: list[float | None] = []
    reasons: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    read = blank = 0
    tmp = location(out) / _TMP_REJECTS
    rej_file = tmp / f"unit-{u.idx:06d}.jsonl"
    rej = io.BytesIO()
    dumps = orjson.dumps
    for line, rec, raw in _records(u):
        if raw is None:
            blank += 1
            continue
        read += 1
        try:
            if isinstance(rec, BadRecord):
                raise rec
            lay, msgs = normalise(rec, layout)
            rid = rule(rec, msgs)
            labels, score = released_annotations(rec)
        except BadRecord as e:
            reasons[e.reason.split(":")[0]] += 1
            bad = {"file": u.name, "line": line, "reason": e.reason,
                   "raw": raw.decode("utf-8", errors="replace")}
            rej.write(dumps(bad) + b"\n")
            continue
        layouts[lay] += 1
        ids.append(rid)
        lines.append(line)
        messages.append(dumps(msgs).decode())  # messages_json, inline; str: see _dump
        texts.append(raw)  # valid UTF-8: orjson parsed it
        labels_of.append(labels)
        scores.append(score)
    rej_file.write_bytes(rej.getvalue())
    part = location(out) / f"part-{u.idx:06d}.parquet"
    line_arr = np.array(lines, dtype=np.int64)
    table = pa.table({"id": ids, "position": line_arr + (u.base - u.first_line),
                      "file": pa.repeat(pa.scalar(u.name, pa.string()), len(ids)), "line": line_arr,
                      "messages": messages, "record": _utf8(texts), "labels": labels_of, "score": scores},
                     schema=SCHEMA)
    write_parquet_atomic(table, part, compression=PART_COMPRESSION)
    h = blake_hashes(ids)
    order, bounds = bucket_order(h % np.uint64(buckets), buckets)
    (tmp / f"hashes-{u.idx:06d}.bin").write_bytes(h[order].tobytes())
    (tmp / f"rows-{u.idx:06d}.bin").write_bytes(order.astype("<i8").tobytes())
    return {"idx": u.idx, "read": read, "blank": blank, "accepted": len(ids),
            "reasons": json.dumps(reasons), "layouts": json.dumps(layouts), "bounds": bounds.tolist(),
            "part": str(part), "rejects": str(rej_file)}


def blake_hashes(ids: Iterable[str]) -> np.ndarray:
    """64-bit blake2b of each id's UTF-8, the hash that buckets ids across tasks (here and in the
    job's cache join). Per id in Python: a compiled hash costs each fresh task worker more to load
    than it saves."""
    blake = hashlib.blake2b
    return np.frombuffer(b"".join(blake(rid.encode(), digest_size=8).digest() for rid in ids), dtype="<u8")


def bucket_order(bucket: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows grouped by bucket, each bucket's rows in their order, and the `buckets` + 1 bounds
    of the groups in that order."""
    order = np.argsort(bucket, kind="stable")
    return order, np.searchsorted(bucket[order], np.arange(buckets + 1))


# ---------------------------------------------------------------- duplicates and the final files

def _bucket_candidates(row: dict, out: str) -> dict:
    """One hash bucket over every unit: the (unit, row) of each hash seen more than once."""
    units, lo, hi = row["units"], row["lo"], row["hi"]
    tmp = location(out) / _TMP_REJECTS
    hs, us, rs = [], [], []
    for u, a, b in zip(units, lo, hi, strict=True):
        if b > a:
            hs.append(_read_range(tmp / f"hashes-{u:06d}.bin", "<u8", a, b))
            rs.append(_read_range(tmp / f"rows-{u:06d}.bin", "<i8", a, b))
            us.append(np.full(b - a, u, dtype=np.int64))
    if not hs:
        return {"bucket": row["bucket"], "units": b"", "rows": b""}
    h, unit, r = np.concatenate(hs), np.concatenate(us), np.concatenate(rs)
    order = np.argsort(h, kind="stable")
    sh = h[order]
    same = sh[1:] == sh[:-1]
    cand = np.zeros(len(sh), dtype=bool)
    cand[1:] |= same
    cand[:-1] |= same
    pick = order[cand]
    return {"bucket": row["bucket"], "units": unit[pick].tobytes(), "rows": r[pick].tobytes()}


def _read_range(path: Location, dtype: str, a: int, b: int) -> np.ndarray:
    """Items a..b of a raw little-endian array file, read without the rest of it."""
    with open_read(path) as f:
        f.seek(a * 8)
        return np.frombuffer(f.read((b - a) * 8), dtype=dtype)


def _duplicates(summaries: list[dict], buckets: int, out: Location,
                num_cpus: float) -> dict[int, dict[int, str]]:
    """{unit idx: {row in its part: reason}} for every later occurrence of an id. Hash buckets are
    compared in Ray tasks; the driver confirms the few candidates on the real ids, in input order."""
    items = [{"bucket": b, "units": [s["idx"] for s in summaries], "lo": [s["bounds"][b] for s in summaries],
              "hi": [s["bounds"][b + 1] for s in summaries]} for b in range(buckets)]
    found = run_tasks(items, _bucket_candidates, {"out": str(out)}, num_cpus)
    none = [np.zeros(0, np.int64)]
    units = np.concatenate([np.frombuffer(f["units"], dtype=np.int64) for f in found] or none)
    rows = np.concatenate([np.frombuffer(f["rows"], dtype=np.int64) for f in found] or none)
    if not len(units):
        return {}
    by_unit: dict[int, list[int]] = {}
    for k, r in sorted(zip(units.tolist(), rows.tolist(), strict=True)):  # input order
        by_unit.setdefault(k, []).append(r)
    part = {s["idx"]: s["part"] for s in summaries}
    got = run_tasks([{"idx": k, "part": part[k], "rows": json.dumps(rows)} for k, rows in by_unit.items()],
               _candidate_rows, {}, num_cpus)
    first: dict[str, tuple[str, int]] = {}
    dupes: dict[int, dict[int, str]] = {}
    for g in sorted(got, key=lambda g: g["idx"]):  # units in input order, rows in order within each
        k = g["idx"]
        for r, rid, f, line in zip(by_unit[k], *json.loads(g["cols"]), strict=True):
            if rid in first:
                ff, fl = first[rid]
                dupes.setdefault(k, {})[r] = f"duplicate id: {rid!r} (first at {ff}:{fl})"
            else:
                first[rid] = (f, line)
    return dupes


def _candidate_rows(row: dict) -> dict:
    """In a task: id, file and line of the candidate rows of one part (only those reach the driver)."""
    t = read_parquet(location(row["part"]), columns=["id", "file", "line"]).take(json.loads(row["rows"]))
    return {"idx": row["idx"], "cols": json.dumps([t[c].to_pylist() for c in ("id", "file", "line")])}


def _drop_duplicates(row: dict, layout: str) -> dict:
    """In a task, per unit: drop its later duplicates from its part, and write its final rejects
    (parse rejects and duplicates, in line order). Returns the counts to correct."""
    drop_of = {int(r): reason for r, reason in json.loads(row["drop"]).items()}
    rej = location(row["rejects"])
    lines = rej.read_bytes().splitlines()
    layouts: Counter[str] = Counter()
    if drop_of:
        rows = [(orjson.loads(x)["line"], x) for x in lines]
        part = location(row["part"])
        table = read_parquet(part)
        drop = sorted(drop_of)
        t = table.take(drop)
        for r, line, raw, lay in zip(drop, t["line"].to_pylist(), t["record"].to_pylist(),
                                     _layouts_of(t, layout), strict=True):
            rows.append((line, orjson.dumps({"file": t["file"][0].as_py(), "line": line,
                                             "reason": drop_of[r], "raw": raw})))
            layouts[lay] += 1
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop] = False
        write_parquet_atomic(table.filter(pa.array(keep)), part, compression=PART_COMPRESSION)
        rows.sort(key=lambda x: x[0])
        lines = [x for _, x in rows]
        rej.write_bytes(b"".join(x + b"\n" for x in lines))
    return {"idx": row["idx"], "dropped": len(drop_of), "layouts": json.dumps(layouts)}


def _finish(summaries: list[dict], fixed: dict[int, dict], rej_path: Location, result: IngestResult) -> None:
    """Sum the per-unit counts and join the units' reject files in input order (streamed)."""
    reasons: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    rej_path.parent.mkdir(parents=True, exist_ok=True)
    for s in summaries:
        reasons.update(json.loads(s["reasons"]))
        layouts.update(json.loads(s["layouts"]))
        f = fixed.get(s["idx"], {"dropped": 0})
        if f["dropped"]:
            reasons["duplicate id"] += f["dropped"]
            layouts.subtract(json.loads(f["layouts"]))
        result.read += s["read"]
        result.blank_lines += s["blank"]
        result.accepted += s["accepted"] - f["dropped"]
        result.parts.append(s["part"])
    concat_files([location(s["rejects"]) for s in summaries], rej_path)
    result.rejected = sum(reasons.values())
    result.reasons = dict(sorted(reasons.items()))
    result.layouts = {k: v for k, v in sorted(layouts.items()) if v}


def _layouts_of(t: pa.Table, layout: str) -> list[str]:
    """The layout of already-accepted rows (for the per-layout counts after a duplicate)."""
    if layout != "auto":
        return [layout] * t.num_rows
    out = []
    for text in t["record"].to_pylist():
        try:
            out.append(normalise(orjson.loads(text))[0])
        except (BadRecord, orjson.JSONDecodeError):
            out.append("?")
    return out
