"""Read an annotated pool (labels + score per record) from JSONL or Parquet into flat arrays.

Only what selection needs is kept (id, score, label codes, where the record lives in the file);
records themselves stay on disk and are copied unchanged at write time.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from mig_ray.errors import BadRecord, PoolError
from mig_ray.pools.costs import record_cost, record_group
from mig_ray.pools.fields import FieldSpec, record_fields
from mig_ray.pools.rejects import Rejects
from mig_ray.storage import Location, location, open_read, parquet_file, read_parquet


@dataclass
class AnnotatedPool:
    path: Path
    format: str  # "jsonl" | "parquet"
    ids: list[str]
    scores: np.ndarray  # float64 [N]
    label_indptr: np.ndarray  # int64 [N+1]
    label_codes: np.ndarray  # int32: indices into `vocab`
    vocab: list[str]  # valid labels in first-seen order
    locations: np.ndarray  # int64: byte offset (jsonl) or row index (parquet)
    lines: np.ndarray  # int64: 1-based line (jsonl) or row (parquet) number
    counts: dict[str, int] = field(default_factory=dict)
    groups: list[str] | None = None  # each record's group (FieldSpec.group_field), if asked for
    costs: np.ndarray | None = None  # float64 [N]: each record's cost (FieldSpec.cost_field), if asked

    def __len__(self) -> int:
        return len(self.ids)

    def labels_of(self, i: int) -> list[str]:
        return [self.vocab[c] for c in self.label_codes[self.label_indptr[i]:self.label_indptr[i + 1]]]

    def node_labels(self) -> tuple[list[str], np.ndarray]:
        """Sorted distinct labels carried by the pool, and label_codes remapped to that order."""
        used = np.zeros(len(self.vocab), dtype=bool)
        used[self.label_codes] = True
        names = sorted(self.vocab[i] for i in np.flatnonzero(used))
        rank = {name: r for r, name in enumerate(names)}
        remap = np.array([rank.get(v, -1) for v in self.vocab], dtype=np.int64)
        return names, remap[self.label_codes] if len(self.label_codes) else np.zeros(0, np.int64)


def read_tag_list(path: str | Path) -> list[str]:
    """The tags of a valid-tag file in file order, each once: a JSON list of strings, a JSON object
    (its keys), or plain text with one tag per line (lines stripped, blank lines skipped).

    JSON when the name ends in .json, or when the text opens with [ or { and parses as a tag list.
    The one reader of these files (`select`'s filter, the embedding tagger's vocabulary, the vLLM
    tagger's): a tagger given the graph's file answers with labels that pass the graph's filter.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PoolError(f"{p}: cannot read the valid-tags file ({e})") from e
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PoolError(f"{p}:{e.lineno}: valid-tags file is not valid JSON ({e.msg})") from e
        try:
            tags = _tags_of_json(data)
        except ValueError as e:
            raise PoolError(f"{p}: valid-tags JSON {e}") from e
    elif text.lstrip()[:1] in ("[", "{"):
        try:
            tags = _tags_of_json(json.loads(text))
        except ValueError:  # not JSON, or not a tag list: a text file whose first tag has a bracket
            tags = _lines(text)
    else:
        tags = _lines(text)
    if not tags:
        raise PoolError(f"{p}: the valid-tags file holds no tags")
    return list(dict.fromkeys(tags))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _tags_of_json(data: object) -> list[str]:
    """The tags of parsed JSON: a list of strings, or an object's keys; ValueError says what is wrong."""
    if isinstance(data, dict):
        return list(data)
    if not isinstance(data, list):
        raise ValueError(f"must be a list of strings (or an object whose keys are tags), "
                         f"not {type(data).__name__}")
    for i, t in enumerate(data):
        if not isinstance(t, str):
            raise ValueError(f"must be a list of strings: item {i} is {t!r}")
    return data


def load_valid_tags(path: str | Path) -> set[str]:
    """The valid-tag set of `read_tag_list`; labels are matched against it exactly."""
    return set(read_tag_list(path))


BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark: stripped at the start of a file, by `run` too
UNSEEN, DROPPED = -2, -1  # codes of labels not seen yet / not valid tags


class _Builder:
    """Accumulates accepted records into compact arrays."""

    def __init__(self, spec: FieldSpec, valid: set[str] | None, rejects: Rejects, file: str, where: str):
        self.spec, self.valid, self.rejects, self.file, self.where = spec, valid, rejects, file, where
        self.first_line: dict[str, int] = {}  # accepted ids, in order, with their line
        self.scores = array("d")
        self.indptr = array("q", [0])
        self.codes = array("i")
        self.vocab: list[str] = []  # valid labels in first-seen order; a label's code is its index
        self.code_of: dict[str, int] = {}  # every label seen: its code, or DROPPED (not a valid tag)
        self.locations = array("q")
        self.lines = array("q")
        self.n_read = 0
        self.no_valid_label = 0
        self.dropped_labels = 0
        self.groups: list[str] | None = [] if spec.group_field else None
        self.costs = array("d") if spec.cost_field else None

    def add(self, rec: object, line: int, location: int, raw: object) -> None:
        self.n_read += 1
        try:
            rid, score, labels = record_fields(rec, self.spec)
            if self.groups is not None or self.costs is not None:
                group, cost = self._limits(rec)
            first = self.first_line.setdefault(rid, line)  # one lookup: inserts a new id
            if first != line:
                raise BadRecord(f"duplicate id: {rid!r} (first at {self.where} {first})")
        except BadRecord as e:
            self.rejects.add(self.file, line, e.reason, raw, self.where)
            return
        get = self.code_of.get
        codes = [get(t, UNSEEN) for t in labels]
        if codes and min(codes) < 0:  # a label not seen before, or not a valid tag
            codes = self._codes_slow(labels)
        if codes:
            self.codes.extend(codes)
        else:
            self.no_valid_label += 1
        self.indptr.append(len(self.codes))
        self.scores.append(score)
        self.locations.append(location)
        self.lines.append(line)
        if self.groups is not None:
            self.groups.append(group)
        if self.costs is not None:
            self.costs.append(cost)

    def _limits(self, rec: dict) -> tuple[str | None, float | None]:
        """The record's group and cost for quotas and a budget (a bad one rejects the record)."""
        spec = self.spec
        group = record_group(rec, spec.group_field, self.file) if spec.group_field else None
        cost = record_cost(rec, spec.cost_field, spec.tokenizer) if spec.cost_field else None
        return group, cost

    def add_columns(self, table, first: int) -> bool:
        """Rows `first`, `first + 1`, ... of a Parquet pool with flat `id`, `labels` and `score`
        columns (a job's assembled pool), taken whole when nothing in them can be rejected: the
        same arrays, codes, vocabulary order and counts as `add` row by row, without a Python
        object per row. False (nothing taken) when any row needs `add`'s checks."""
        import pyarrow as pa
        import pyarrow.compute as pc

        spec = self.spec
        names = (spec.id_field, spec.labels_field, spec.score_field)
        if spec.group_field or spec.cost_field:
            return False  # groups and costs are read row by row
        if any(n is None or "." in n or n not in table.column_names for n in names):
            return False
        ids_col, labels_col, score_col = (table.column(n) for n in names)
        if not (pa.types.is_string(ids_col.type) and pa.types.is_list(labels_col.type)
                and pa.types.is_string(labels_col.type.value_type) and pa.types.is_floating(score_col.type)):
            return False
        labels_col = labels_col.combine_chunks()
        values = labels_col.flatten()
        if ids_col.null_count or labels_col.null_count or score_col.null_count or values.null_count:
            return False
        scores = score_col.to_numpy().astype(np.float64)
        if not np.all(np.isfinite(scores) & (scores >= 0)):
            return False
        ids = ids_col.to_pylist()
        seen = self.first_line
        if len(set(ids)) != len(ids) or any(r in seen for r in ids):
            return False
        n = len(ids)
        lines = np.arange(first + 1, first + 1 + n, dtype=np.int64)
        seen.update(zip(ids, lines.tolist(), strict=True))
        self.n_read += n
        enc = pc.dictionary_encode(values)  # dictionary in order of first occurrence, as add sees them
        code_map = np.empty(len(enc.dictionary), dtype=np.int64)
        for j, t in enumerate(enc.dictionary.to_pylist()):
            c = self.code_of.get(t, UNSEEN)
            if c == UNSEEN:
                c = DROPPED if self.valid is not None and t not in self.valid else len(self.vocab)
                self.code_of[t] = c
                if c != DROPPED:
                    self.vocab.append(t)
            code_map[j] = c
        codes = code_map[enc.indices.to_numpy(zero_copy_only=False)] if len(values) else code_map[:0]
        keep = codes >= 0
        self.dropped_labels += int(len(codes) - keep.sum())
        offsets = labels_col.offsets.to_numpy() - labels_col.offsets[0].as_py()
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        kept_per_row = kept_before[offsets[1:]] - kept_before[offsets[:-1]]
        self.no_valid_label += int(np.sum(kept_per_row == 0))
        base = self.indptr[-1]
        self.codes.frombytes(codes[keep].astype(np.int32).tobytes())
        self.indptr.frombytes((base + np.cumsum(kept_per_row, dtype=np.int64)).tobytes())
        self.scores.frombytes(scores.tobytes())
        self.locations.frombytes((lines - 1).tobytes())
        self.lines.frombytes(lines.tobytes())
        return True

    def _codes_slow(self, labels: list[str]) -> list[int]:
        """Codes of the valid labels, giving new ones the next code; counts the dropped ones."""
        out = []
        for t in labels:
            c = self.code_of.get(t, UNSEEN)
            if c == UNSEEN:
                c = DROPPED if self.valid is not None and t not in self.valid else len(self.vocab)
                self.code_of[t] = c
                if c != DROPPED:
                    self.vocab.append(t)
            if c == DROPPED:
                self.dropped_labels += 1
            else:
                out.append(c)
        return out

    def finish(self, path: Path, fmt: str, blank: int) -> AnnotatedPool:
        counts = {
            "read": self.n_read,
            "blank_lines": blank,
            "rejected": self.rejects.count,
            "selectable": len(self.first_line),
            "no_valid_label": self.no_valid_label,
            "labels_dropped_by_valid_tags": self.dropped_labels,
        }
        return AnnotatedPool(
            path, fmt, list(self.first_line), np.frombuffer(self.scores, dtype=np.float64).copy(),
            np.frombuffer(self.indptr, dtype=np.int64).copy(),
            np.frombuffer(self.codes, dtype=np.int32).copy(), self.vocab,
            np.frombuffer(self.locations, dtype=np.int64).copy(),
            np.frombuffer(self.lines, dtype=np.int64).copy(), counts, self.groups,
            None if self.costs is None else np.frombuffer(self.costs, dtype=np.float64).copy(),
        )


@dataclass(frozen=True)
class Block:
    """A part of a pool file: bytes [start, end) of a JSONL file (cut at line starts) or rows
    [start, end) of a Parquet file; `first_line` numbers its first line or row (1-based)."""

    start: int
    end: int
    first_line: int = 1


def split_blocks(path: str | Location, n: int) -> list[Block]:
    """Cut a pool into at most n blocks of similar size (first_line still to be set for JSONL)."""
    path = location(path)
    if pool_format(path) == "parquet":
        rows = sum(n for _, n in parquet_parts(path))
        cuts = sorted({rows * i // n for i in range(n + 1)})
        return [Block(lo, hi, lo + 1) for lo, hi in zip(cuts, cuts[1:], strict=False)]
    size = path.stat().st_size
    cuts = [0]
    with open_read(path) as f:
        for i in range(1, n):
            f.seek(max(size * i // n - 1, cuts[-1]))
            f.readline()  # move to the next line start
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    cuts = sorted(set(cuts))
    return [Block(lo, hi) for lo, hi in zip(cuts, cuts[1:], strict=False)] or [Block(0, 0)]


def count_lines(path: str | Location, block: Block) -> int:
    """Newlines in a JSONL block (blocks other than the last end right after one)."""
    n = 0
    with open_read(location(path)) as f:
        f.seek(block.start)
        left = block.end - block.start
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def parquet_parts(path: str | Location) -> list[tuple[Location, int]]:
    """(file, rows) of a Parquet pool: the file itself, or for a folder (a job's assembled pool,
    written as parts by Ray tasks) its `part-*.parquet` files in name order, which read one after
    the other are the pool's rows in order. Metadata only."""
    path = location(path)
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            out.append((f, parquet_file(f).metadata.num_rows))
        except Exception as e:  # pyarrow raises several types for a broken file
            raise PoolError(f"{f}: not a readable Parquet file ({str(e)[:200]})") from None
    return out


def parquet_rows(path: str | Location, rows: np.ndarray):
    """The rows at these 0-based indices of a Parquet pool (file or folder of parts), in the order
    asked, as one pyarrow Table; only the parts that hold them are read."""
    import pyarrow as pa

    parts = parquet_parts(path)
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.cumsum([0] + [n for _, n in parts])
    part_of = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(part_of, kind="stable")
    pieces = []
    for k in np.unique(part_of).tolist():
        local = rows[order][part_of[order] == k] - starts[k]
        pieces.append(read_parquet(parts[k][0]).take(pa.array(local)))
    if not pieces:
        return parquet_file(parts[0][0]).schema_arrow.empty_table() if parts else pa.table({})
    table = pa.concat_tables(pieces)
    inverse = np.empty(len(rows), dtype=np.int64)
    inverse[order] = np.arange(len(rows))
    return table.take(pa.array(inverse))


def parquet_schema(path: str | Location):
    """The schema of a Parquet pool (a file, or the first part of a folder)."""
    parts = parquet_parts(path)
    if not parts:
        raise PoolError(f"{path}: a folder with no part-*.parquet file")
    return parquet_file(parts[0][0]).schema_arrow


def pool_format(path: Location) -> str:
    suffixes = path.suffix.lower()
    if suffixes in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffixes in (".parquet", ".pq"):
        return "parquet"
    raise PoolError(f"{path}: unknown pool format {suffixes!r} (expected .jsonl or .parquet)")


def read_annotated(path: str | Location, spec: FieldSpec | None = None, valid_tags: set[str] | None = None,
                   rejects: Rejects | None = None,
                   progress: Callable[[int], None] | None = None,
                   block: Block | None = None) -> AnnotatedPool:
    """Read a pool (or one block of it); bad records go to `rejects` (PoolError when strict)."""
    path = location(path)
    if not path.is_file() and not (path.is_dir() and pool_format(path) == "parquet"):
        raise PoolError(f"{path}: no such file")
    spec = spec or FieldSpec()
    rejects = rejects or Rejects(None)
    fmt = pool_format(path)
    if fmt == "jsonl":
        return _read_jsonl(path, spec, valid_tags, rejects, progress, block)
    return _read_parquet(path, spec, valid_tags, rejects, progress, block)


def _read_jsonl(path, spec, valid, rejects, progress, block) -> AnnotatedPool:
    b = _Builder(spec, valid, rejects, str(path), "line")
    offset = block.start if block else 0
    end = block.end if block else None
    blank = 0
    loads = orjson.loads
    with open_read(path) as f:
        f.seek(offset)
        for lineno, raw in enumerate(f, block.first_line if block else 1):
            if end is not None and offset >= end:
                break
            start = offset
            offset += len(raw)
            if start == 0 and raw.startswith(BOM):  # a file-level marker, not part of the record:
                raw = raw[len(BOM):]  # the record's bytes (and what is copied out) start after it
                start = len(BOM)
            if progress is not None and lineno % 65536 == 0:
                progress(offset)
            if raw.isspace() or not raw:
                blank += 1
                continue
            try:
                rec = loads(raw)
            except orjson.JSONDecodeError as e:
                b.n_read += 1
                rejects.add(str(path), lineno, f"invalid JSON: {e}", raw)
                continue
            b.add(rec, lineno, start, raw)
    if progress is not None:
        progress(offset)
    return b.finish(path, "jsonl", blank)


def _read_parquet(path, spec, valid, rejects, progress, block) -> AnnotatedPool:
    parts = parquet_parts(path)
    total = sum(n for _, n in parts)
    lo, hi = (block.start, block.end) if block else (0, total)
    b = _Builder(spec, valid, rejects, str(path), "row")
    row = 0  # rows before the current row group, over all parts
    for file, rows in parts:
        if row + rows <= lo or row >= hi:  # a part outside the block is not opened
            row += rows
            continue
        pf = parquet_file(file)
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row + n > lo and row < hi:
                table = pf.read_row_group(g)
                first = max(lo, row)
                table = table.slice(first - row, min(hi, row + n) - first)
                if not b.add_columns(table, first):
                    for i, rec in enumerate(table.to_pylist()):
                        b.add(rec, first + i + 1, first + i, rec)
                if progress is not None:
                    progress(min(hi, row + n) - lo)
            row += n
    return b.finish(path, "parquet", 0)
