"""Ingest: raw pools (JSONL, JSON array, Parquet, Hugging Face `save_to_disk` dirs) -> one Parquet
table of normalised conversations with stable ids, on Ray Data.

Why two passes: positions must be the exact global input order (greedy ties go to the lowest), so
every input is cut into units (byte ranges of JSONL cut at line starts, row ranges of Parquet,
whole JSON arrays and Arrow shards), the units' record counts are taken first, and the parse of
each unit then knows its first line and position. Each parse task writes its own part file
(temp name, then rename) and rejects file; the driver only sees counts and 8-byte id hashes, so a
pool of 10^8 records never passes through it. Duplicate ids across units are found from those
hashes, confirmed on the real ids, and the later occurrences moved to the rejects file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mig_ray.distributed.session import ensure_ray, ray_progress_bars
from mig_ray.pools.annotated import BOM, Block, count_lines, split_blocks
from mig_ray.pools.layouts import IdRule, check_layout, messages_json, normalise, released_annotations
from mig_ray.pools.rejects import BadRecord, PoolError

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


def ingest(inputs: list[Path] | list[str], out_dir: Path | str, layout: str = "auto",
           id_field: str | None = None, rejects_path: Path | str | None = None, progress: bool = True,
           block_bytes: int = BLOCK_BYTES, block_rows: int = BLOCK_ROWS,
           num_cpus: float = 1.0) -> IngestResult:
    """Read `inputs` in order into `out_dir/part-*.parquet` (schema: SCHEMA); bad records go to
    `rejects_path` (default `<out_dir>.rejects.jsonl`, outside out_dir so the folder stays pure Parquet).
    Existing part files in out_dir are replaced. Starts a local Ray when none is running."""
    t0 = time.perf_counter()
    check_layout(layout)
    IdRule(id_field)  # validate the path before any work
    out = Path(out_dir)
    rej_path = Path(rejects_path) if rejects_path is not None else out.with_name(out.name + ".rejects.jsonl")
    units = _plan([Path(p) for p in inputs], block_bytes, block_rows)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    tmp_rej = out / _TMP_REJECTS
    shutil.rmtree(tmp_rej, ignore_errors=True)
    tmp_rej.mkdir()
    result = IngestResult(str(out), str(rej_path), inputs=[str(p) for p in inputs], units=len(units))
    if units:
        ensure_ray()
        with ray_progress_bars(progress):
            counts = _run(units, _count_unit, {}, num_cpus)
            units = _place(units, {r["idx"]: r["n"] for r in counts})
            summaries = _run(units, _parse_unit, {"out": str(out), "layout": layout, "id_field": id_field},
                             num_cpus)
        summaries.sort(key=lambda r: r["idx"])
        dupes = _duplicates(summaries)
        _finish(summaries, dupes, rej_path, result, layout)
    else:
        rej_path.parent.mkdir(parents=True, exist_ok=True)
        rej_path.write_bytes(b"")
    shutil.rmtree(tmp_rej, ignore_errors=True)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


# ---------------------------------------------------------------- planning (driver, metadata only)

def input_format(path: Path) -> str:
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
        with open(path, "rb") as f:
            head = f.read(4096).removeprefix(BOM).lstrip()
            while not head and (chunk := f.read(4096)):
                head = chunk.lstrip()
        return "json" if head.startswith(b"[") else "jsonl"
    raise PoolError(f"{path}: unknown input format {suffix!r} (expected .jsonl, .json, .parquet or a "
                    "Hugging Face save_to_disk directory)")


def hf_shards(path: Path) -> list[tuple[str, list[Path]]]:
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


def _read_json(p: Path) -> dict:
    try:
        v = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PoolError(f"{p}: unreadable ({e})") from e
    if not isinstance(v, dict):
        raise PoolError(f"{p}: not a JSON object")
    return v


def _plan(inputs: list[Path], block_bytes: int, block_rows: int) -> list[_Unit]:
    units: list[_Unit] = []
    for path in inputs:
        fmt = input_format(path)
        name = str(path)
        if fmt == "jsonl":
            size = path.stat().st_size
            blocks = split_blocks(path, max(1, math.ceil(size / block_bytes)))
            for j, b in enumerate(blocks):
                units.append(_Unit(len(units), "jsonl", name, name, b.start, b.end, j == len(blocks) - 1))
        elif fmt == "parquet":
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception as e:  # pyarrow raises several types for a broken file
                raise PoolError(f"{path}: not a readable Parquet file ({e})") from e
            blocks = split_blocks(path, max(1, math.ceil(rows / block_rows)))
            for b in blocks:
                units.append(_Unit(len(units), "parquet", name, name, b.start, b.end))
        elif fmt == "json":
            units.append(_Unit(len(units), "json", name, name))
        else:
            for split_name, arrows in hf_shards(path):
                for j, a in enumerate(arrows):
                    units.append(_Unit(len(units), "arrow", str(a), split_name, last=j == len(arrows) - 1))
    return units


def _place(units: list[_Unit], counts: dict[int, int]) -> list[_Unit]:
    """Give each unit its first line (within its `file` name) and its global first position."""
    placed = []
    base = 0
    line = 1
    prev_name = None
    for u in units:
        if u.name != prev_name:
            line, prev_name = 1, u.name
        placed.append(_Unit(u.idx, u.fmt, u.path, u.name, u.start, u.end, u.last, line, base))
        n = counts[u.idx]
        line += n
        base += n
    return placed


# ---------------------------------------------------------------- Ray Data plumbing

def _run(units: list[_Unit], fn, kwargs: dict, num_cpus: float) -> list[dict]:
    """One Ray task per unit (one unit per block, so they run in parallel); rows come back unordered."""
    import ray.data

    ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=len(units))
    return ds.map(fn, fn_kwargs=kwargs, num_cpus=num_cpus).take_all()


# ---------------------------------------------------------------- tasks

def _count_unit(row: dict) -> dict:
    """Records in a unit: lines of a JSONL block (a last line without newline included), elements
    of a JSON array, rows of a Parquet block or an Arrow shard."""
    u = _Unit(**row)
    if u.fmt == "jsonl":
        n = count_lines(u.path, Block(u.start, u.end))
        if u.last and u.end > u.start:
            with open(u.path, "rb") as f:
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
    data = Path(path).read_bytes().removeprefix(BOM)
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
    source = pa.memory_map(path)
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return list(reader)


def _records(u: _Unit):
    """(line, parsed record or a BadRecord, original text or None for a blank line) in order."""
    if u.fmt == "jsonl":
        with open(u.path, "rb") as f:
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
            text = raw.decode("utf-8", errors="replace")
            try:
                yield line, orjson.loads(raw), text
            except orjson.JSONDecodeError as e:
                yield line, BadRecord(f"invalid JSON: {e}"), text
    elif u.fmt == "json":
        for i, text in enumerate(_json_array(u.path)):
            yield u.first_line + i, orjson.loads(text), text
    elif u.fmt == "parquet":
        pf = pq.ParquetFile(u.path)
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


def _dump(rec: Any) -> str:
    return orjson.dumps(rec, default=str).decode()


def id_hash(rid: str) -> bytes:
    """8 bytes of blake2b: what the driver compares to find duplicate ids without holding them."""
    return hashlib.blake2b(rid.encode(), digest_size=8).digest()


def _parse_unit(row: dict, out: str, layout: str, id_field: str | None) -> dict:
    u = _Unit(**row)
    rule = IdRule(id_field)
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    hashes: list[bytes] = []
    reasons: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    read = blank = 0
    rej_file = Path(out) / _TMP_REJECTS / f"unit-{u.idx:06d}.jsonl"
    with open(rej_file, "wb") as rej:
        for line, rec, text in _records(u):
            if text is None:
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
                bad = {"file": u.name, "line": line, "reason": e.reason, "raw": text}
                rej.write(orjson.dumps(bad) + b"\n")
                continue
            layouts[lay] += 1
            hashes.append(id_hash(rid))
            for k, v in (("id", rid), ("position", u.base + line - u.first_line), ("file", u.name),
                         ("line", line), ("messages", messages_json(msgs)), ("record", text),
                         ("labels", labels), ("score", score)):
                cols[k].append(v)
    part = Path(out) / f"part-{u.idx:06d}.parquet"
    write_atomic(pa.table(cols, schema=SCHEMA), part)
    return {"idx": u.idx, "read": read, "blank": blank, "accepted": len(hashes),
            "reasons": json.dumps(reasons), "layouts": json.dumps(layouts), "hashes": b"".join(hashes),
            "part": str(part), "rejects": str(rej_file)}


def write_atomic(table: pa.Table, path: Path) -> None:
    """Parquet under a temp name, then rename: a killed writer leaves no half file under `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- duplicates and the final files

def _duplicates(summaries: list[dict]) -> dict[int, dict[int, str]]:
    """{unit idx: {row in its part: reason}} for every later occurrence of an id."""
    hashes = np.frombuffer(b"".join(s["hashes"] for s in summaries), dtype="<u8")
    if len(hashes) < 2:
        return {}
    order = np.argsort(hashes, kind="stable")  # stable: equal hashes stay in input order
    sh = hashes[order]
    same = sh[1:] == sh[:-1]
    if not same.any():
        return {}
    cand = np.zeros(len(sh), dtype=bool)
    cand[1:] |= same
    cand[:-1] |= same
    rows = np.sort(order[cand])  # global accepted-row indices, in input order
    starts = np.cumsum([0] + [s["accepted"] for s in summaries])
    unit_of = np.searchsorted(starts, rows, side="right") - 1
    by_unit: dict[int, list[int]] = {}
    for g, k in zip(rows.tolist(), unit_of.tolist(), strict=True):
        by_unit.setdefault(k, []).append(g - int(starts[k]))
    first: dict[str, tuple[str, int]] = {}
    dupes: dict[int, dict[int, str]] = {}
    for k in sorted(by_unit):  # units in input order, rows in order within each
        s = summaries[k]
        t = pq.read_table(s["part"], columns=["id", "file", "line"]).take(by_unit[k])
        cols = (t[c].to_pylist() for c in ("id", "file", "line"))
        for r, rid, f, line in zip(by_unit[k], *cols, strict=True):
            if rid in first:
                ff, fl = first[rid]
                dupes.setdefault(s["idx"], {})[r] = f"duplicate id: {rid!r} (first at {ff}:{fl})"
            else:
                first[rid] = (f, line)
    return dupes


def _finish(summaries: list[dict], dupes: dict[int, dict[int, str]], rej_path: Path, result: IngestResult,
            layout: str) -> None:
    reasons: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    tmp = rej_path.with_name(f".{rej_path.name}.tmp")
    rej_path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as w:
        for s in summaries:
            reasons.update(json.loads(s["reasons"]))
            layouts.update(json.loads(s["layouts"]))
            result.read += s["read"]
            result.blank_lines += s["blank"]
            rows = [(orjson.loads(x)["line"], x) for x in Path(s["rejects"]).read_bytes().splitlines()]
            d = dupes.get(s["idx"])
            if d:
                table = pq.read_table(s["part"])
                drop = sorted(d)
                t = table.take(drop)
                for r, line, raw, lay in zip(drop, t["line"].to_pylist(), t["record"].to_pylist(),
                                             _layouts_of(t, layout), strict=True):
                    rows.append((line, orjson.dumps({"file": t["file"][0].as_py(), "line": line,
                                                     "reason": d[r], "raw": raw})))
                    reasons["duplicate id"] += 1
                    layouts[lay] -= 1
                keep = np.ones(table.num_rows, dtype=bool)
                keep[drop] = False
                write_atomic(table.filter(pa.array(keep)), Path(s["part"]))
                s["accepted"] -= len(drop)
            rows.sort(key=lambda x: x[0])
            for _, x in rows:
                w.write(x + b"\n")
            result.accepted += s["accepted"]
            result.parts.append(s["part"])
    os.replace(tmp, rej_path)
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
