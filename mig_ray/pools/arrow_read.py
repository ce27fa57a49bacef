"""Read a released-layout JSONL pool with pyarrow's JSON reader: the parse in C++ on every core, the
nested fields (id, labels, quality and complexity per turn) pulled out as columns.

Why: on the 1M-record pool (400 MB) the parallel reader's processes took 2.6-3.2 s, pyarrow's parse
of the same file 1.1-1.2 s (issue 24: `select` reads on every core).

The result equals `read_annotated`'s (arrays, vocabulary, counts, rejects with their order, messages
and raw lines). pyarrow and orjson do not accept the same JSON: pyarrow takes NaN, Inf and Infinity,
nesting past orjson's depth limit, and bytes that are not UTF-8 (it does not check). So a file with a
line that is not UTF-8 is declined, and every line that may hold one of the others (`scan_lines`:
NaN, Inf or Infinity standing as a token, a \\uD escape, over DEPTH brackets) and every row whose
fields are not plainly well-formed (a null or a missing part, empty or unequal score lists, a
negative or huge number, a non-finite score) is read again by the parallel reader's per-line code
(orjson, `released_fast`, `record_fields`). What pyarrow refuses (invalid JSON, a type that changes
between rows, a key given twice, a surrogate escape, a line longer than a block) and a byte-order
mark leave the whole file to the other readers: `read_jsonl_arrow` then returns None. Float parsing
was checked equal to Python's `float` on 400K decimal strings (tests/test_arrow_read.py keeps a sample).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from mig_ray.pools.annotated import BOM, AnnotatedPool
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.parallel_read import BlockResult, merge_blocks, parse_lines
from mig_ray.pools.rejects import Rejects

SCHEMA = pa.schema([
    ("_id", pa.string()),
    ("annotation", pa.struct([
        ("instag", pa.struct([("content", pa.list_(pa.string()))])),
        ("deita", pa.struct([("quality_scores", pa.list_(pa.float64())),
                             ("complexity_scores", pa.list_(pa.float64()))])),
    ])),
])
BLOCK_BYTES = 16 << 20  # pyarrow's block: a longer line makes it refuse the file
DEPTH = 1000  # a line with more [ and { than this may nest past orjson's limit (1024): read by orjson
EXACT = float(2 ** 53)  # a number at or above this may have been an integer orjson keeps exact
PARSE = pj.ParseOptions(explicit_schema=SCHEMA, newlines_in_values=False, unexpected_field_behavior="ignore")
MAX_DOUBTFUL = 0.1  # above this share of lines read again one by one, the parallel reader is quicker


def _byte_classes() -> np.ndarray:
    cls = np.zeros(256, dtype=np.uint8)  # 0: a byte like any other
    cls[[32, 9, 13, 11, 12]] = 1  # ASCII whitespace but the newline (bytes.isspace)
    cls[10] = 2  # the newline
    cls[[91, 123]] = 3  # [ {
    cls[[78, 73, 92]] = 4  # N (NaN), I (Inf), \\ (a \\uD surrogate escape)
    cls[0x80:] = 5  # the start (or a stray continuation) of a multi-byte UTF-8 sequence
    return cls


CLASSES = _byte_classes()
FINE, DOUBTFUL, NOT_UTF8 = 0, 1, 2  # what scan_lines says of a line


@numba.njit(cache=True, inline="always")
def _utf8_length(buf, i, n):
    """Length of the valid UTF-8 sequence at buf[i] (>= 0x80), or 0 (as Python's strict decoder:
    no overlong form, no surrogate, nothing past U+10FFFF)."""
    b = buf[i]
    if 0xC2 <= b <= 0xDF:
        k, lo, hi = 2, 0x80, 0xBF
    elif b == 0xE0:
        k, lo, hi = 3, 0xA0, 0xBF
    elif 0xE1 <= b <= 0xEC or b == 0xEE or b == 0xEF:
        k, lo, hi = 3, 0x80, 0xBF
    elif b == 0xED:
        k, lo, hi = 3, 0x80, 0x9F
    elif b == 0xF0:
        k, lo, hi = 4, 0x90, 0xBF
    elif 0xF1 <= b <= 0xF3:
        k, lo, hi = 4, 0x80, 0xBF
    elif b == 0xF4:
        k, lo, hi = 4, 0x80, 0x8F
    else:
        return 0
    if i + k > n or not (lo <= buf[i + 1] <= hi):
        return 0
    for j in range(i + 2, i + k):
        if not (0x80 <= buf[j] <= 0xBF):
            return 0
    return k


@numba.njit(cache=True, inline="always")
def _zero_byte(v):
    """Non-zero when the word v has a zero byte (exact for the word, not per byte)."""
    return (v - np.uint64(0x0101010101010101)) & ~v & np.uint64(0x8080808080808080)


@numba.njit(cache=True, inline="always")
def _plain_word(v):
    """No byte of v needs a look: no b"\\n", [, {, N, I, \\ and nothing at or above 0x80."""
    x = v & np.uint64(0x8080808080808080)
    x |= _zero_byte(v ^ np.uint64(0x0A0A0A0A0A0A0A0A)) | _zero_byte(v ^ np.uint64(0x5B5B5B5B5B5B5B5B))
    x |= _zero_byte(v ^ np.uint64(0x7B7B7B7B7B7B7B7B)) | _zero_byte(v ^ np.uint64(0x4E4E4E4E4E4E4E4E))
    x |= _zero_byte(v ^ np.uint64(0x4949494949494949)) | _zero_byte(v ^ np.uint64(0x5C5C5C5C5C5C5C5C))
    return x == 0


@numba.njit(cache=True, inline="always")
def _token_end(buf, j, n):
    """Whether NaN, Inf or Infinity ending before j stands as a token pyarrow would read: nothing
    of a word follows (in "Information" it does: text, not a number, so the line stays FINE)."""
    if j >= n:
        return True
    c = buf[j]
    return not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95)


@numba.njit(cache=True, nogil=True)
def _scan(buf, words, cls, starts, ends, blank, doubt):
    """scan_lines' kernel. `words`: buf as aligned 8-byte words (or empty): once a line is known not
    blank, a word with nothing to look at is passed over whole (4 in 5 on the 1M pool)."""
    n = len(buf)
    line, s, ws, brackets, flag = 0, 0, True, 0, FINE
    i = 0
    while i < n:
        if not ws and (i & 7) == 0 and (i >> 3) < len(words) and _plain_word(words[i >> 3]):
            i += 8
            continue
        k = cls[buf[i]]
        if k == 0:
            ws = False
        elif k == 2:
            starts[line], ends[line], blank[line] = s, i, ws
            doubt[line] = DOUBTFUL if flag == FINE and brackets > DEPTH else flag
            line += 1
            s, ws, brackets, flag = i + 1, True, 0, FINE
        elif k == 3:
            ws = False
            brackets += 1
        elif k == 4:
            ws = False
            b = buf[i]
            if i + 2 < n and flag == FINE:
                b1, b2 = buf[i + 1], buf[i + 2]
                escape = b == 92 and b1 == 117 and (b2 == 100 or b2 == 68)  # \\uD
                nan = b == 78 and b1 == 97 and b2 == 78 and _token_end(buf, i + 3, n)
                if escape or nan:
                    flag = DOUBTFUL
                elif b == 73 and b1 == 110 and b2 == 102:  # Inf, Infinity
                    j = i + 3
                    if j + 5 <= n and buf[j] == 105 and buf[j + 1] == 110 and buf[j + 2] == 105 \
                            and buf[j + 3] == 116 and buf[j + 4] == 121:
                        j += 5
                    if _token_end(buf, j, n):
                        flag = DOUBTFUL
        elif k == 5:
            ws = False
            m = _utf8_length(buf, i, n)
            if m == 0:
                flag = NOT_UTF8
            else:
                i += m - 1
        i += 1
    if s < n:  # the file's last line, without a b"\\n"
        starts[line], ends[line], blank[line] = s, n, ws
        doubt[line] = DOUBTFUL if flag == FINE and brackets > DEPTH else flag


@numba.njit(cache=True, nogil=True)
def _count_newlines(buf, words):
    c = 0
    for j in range(len(words)):
        v = words[j] ^ np.uint64(0x0A0A0A0A0A0A0A0A)  # a newline byte becomes 0
        nz = ((v & np.uint64(0x7F7F7F7F7F7F7F7F)) + np.uint64(0x7F7F7F7F7F7F7F7F)) | v  # high bit: byte != 0
        ones = (nz & np.uint64(0x8080808080808080)) >> np.uint64(7)  # 1 per non-newline byte
        c += 8 - int((ones * np.uint64(0x0101010101010101)) >> np.uint64(56))
    for i in range(8 * len(words), len(buf)):
        c += buf[i] == 10
    return c


def scan_lines(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per line (cut at b"\\n"; a last line without one counts): start, end (before the b"\\n"),
    blank (only ASCII whitespace, as bytes.isspace, or empty) and FINE, DOUBTFUL or NOT_UTF8. One
    pass to count the lines, one to scan them; it runs beside pyarrow's parse, on its own thread."""
    n = len(buf)
    aligned = n >= 8 and buf.ctypes.data % 8 == 0
    words = buf[:n - n % 8].view(np.uint64) if aligned else np.zeros(0, dtype=np.uint64)
    n_lines = _count_newlines(buf, words) + (1 if n and buf[n - 1] != 10 else 0)
    starts, ends = np.empty(n_lines, dtype=np.int64), np.empty(n_lines, dtype=np.int64)
    blank, doubt = np.zeros(n_lines, dtype=np.bool_), np.zeros(n_lines, dtype=np.int8)
    _scan(buf, words, CLASSES, starts, ends, blank, doubt)
    return starts, ends, blank, doubt


@numba.njit(cache=True)
def released_rows(ok, q_len, c_len, q, q_null, c, c_null, l_len, l_null):
    """(plain, score) per row: `released_fast`'s checks and score on the columns, for the rows whose
    parts are all present (ok); the score summed turn by turn in the same order, so the same float."""
    n = len(ok)
    plain = np.zeros(n, dtype=np.bool_)
    score = np.zeros(n, dtype=np.float64)
    qo = co = lo = 0
    for i in range(n):
        nq, nc, nl = q_len[i], c_len[i], l_len[i]
        good = ok[i] and nq > 0 and nq == nc
        if good:
            for t in range(lo, lo + nl):
                if l_null[t]:
                    good = False
        if good:
            total = 0.0
            for t in range(nq):
                a, b = q[qo + t], c[co + t]
                if q_null[qo + t] or c_null[co + t] or not (0.0 <= a < EXACT) or not (0.0 <= b < EXACT):
                    good = False
                    break
                total += a * b
            if good:
                s = total / nq
                if 0.0 <= s < np.inf:
                    score[i] = s
                else:
                    good = False
        plain[i] = good
        qo += nq
        co += nc
        lo += nl
    return plain, score


@numba.njit(cache=True)
def first_seen(codes, n_names):
    """Codes renumbered in order of first appearance; returns (new codes, old code of each new one)."""
    new_of = np.full(n_names, -1, dtype=np.int64)
    order = np.empty(n_names, dtype=np.int64)
    out = np.empty(len(codes), dtype=np.int32)
    k = 0
    for i in range(len(codes)):
        c = codes[i]
        if new_of[c] < 0:
            new_of[c] = k
            order[k] = c
            k += 1
        out[i] = new_of[c]
    return out, order[:k]


def _lists(arr: pa.ListArray) -> tuple[np.ndarray, pa.Array]:
    """Lengths per row (0 for a null list) and the values of the non-null lists, in order (from the
    offsets: pyarrow.compute's fill_null imports pandas, 0.2 s)."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    lengths = np.diff(offsets).astype(np.int64)
    lengths[_nulls(arr)] = 0  # flatten() leaves out what a null list may still cover
    return lengths, arr.flatten()


def _values(arr: pa.Array, dtype: type) -> np.ndarray:
    """A fixed-width array's values as numpy, a null's slot holding anything (to_numpy would import
    pandas: 0.2 s)."""
    return np.frombuffer(arr.buffers()[1], dtype=dtype)[arr.offset:arr.offset + len(arr)]


def _nulls(arr: pa.Array) -> np.ndarray:
    """Null mask from the validity bits (BooleanArray.to_numpy would import pandas: 0.2 s)."""
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    valid = arr.buffers()[0]
    bits = np.unpackbits(np.frombuffer(valid, dtype=np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)] == 0


def read_jsonl_arrow(path: Path, spec: FieldSpec, valid: set[str] | None, rejects: Rejects,
                     progress: Callable[[int], None] | None = None) -> AnnotatedPool | None:
    """The pool as `read_annotated` reads it, or None when pyarrow declines the file."""
    if not spec.is_released or spec.group_field is not None or spec.cost_field is not None:
        return None
    try:
        with pa.memory_map(str(path)) as source:  # one map of the file: scanned here, parsed by pyarrow
            return _read(path, source.read_buffer(), spec, valid, rejects, progress)
    finally:  # pyarrow's allocator keeps what the parse freed (300 MB at 1M records) unless told
        pa.default_memory_pool().release_unused()


def _read(path: Path, data: pa.Buffer, spec: FieldSpec, valid: set[str] | None, rejects: Rejects,
          progress: Callable[[int], None] | None) -> AnnotatedPool | None:
    buf = np.frombuffer(data, dtype=np.uint8)
    if not len(buf) or bytes(buf[:len(BOM)]) == BOM:
        return None
    with ThreadPoolExecutor(1) as ex:  # the scan beside pyarrow's parse: 1.2 s for both, not 1.4
        scanned = ex.submit(scan_lines, buf)
        try:
            table = pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=BLOCK_BYTES),
                                 parse_options=PARSE)
        except (pa.ArrowException, ValueError):  # ValueError: a message pyarrow could not decode
            table = None
        starts, ends, blank, doubt = scanned.result()
    rows_at = np.flatnonzero(~blank)  # pyarrow's row r is the r-th non-blank line
    if table is None or table.num_rows != len(rows_at) or table.num_rows == 0:
        return None
    if np.any(doubt == NOT_UTF8):  # pyarrow does not check UTF-8: its strings there could not be read
        return None
    if np.mean(doubt[rows_at] != FINE) > MAX_DOUBTFUL:
        return None
    ids_col = table.column("_id").combine_chunks()
    instag, deita = table.column("annotation").combine_chunks().flatten()
    content = instag.flatten()[0]
    q_arr, c_arr = deita.flatten()
    ok = ~(_nulls(ids_col) | _nulls(content) | _nulls(q_arr) | _nulls(c_arr) | (doubt[rows_at] != FINE))
    l_len, labels = _lists(content)
    q_len, q_vals = _lists(q_arr)
    c_len, c_vals = _lists(c_arr)
    plain, score = released_rows(ok, q_len, c_len, _values(q_vals, np.float64), _nulls(q_vals),
                                 _values(c_vals, np.float64), _nulls(c_vals), l_len, _nulls(labels))
    del table, instag, deita, q_arr, c_arr, q_vals, c_vals
    enc = labels.dictionary_encode()
    names = enc.dictionary.to_pylist()
    codes = _values(enc.indices, np.int32)  # a null label's row is read again
    l_off = np.zeros(len(l_len) + 1, dtype=np.int64)
    np.cumsum(l_len, out=l_off[1:])
    ids = ids_col.to_pylist()
    del ids_col, content, labels, enc
    if progress is not None:
        progress(len(data))
    again = np.flatnonzero(~plain)  # rows read again, line by line, as the parallel reader does
    result = _assemble(buf, starts, ends, rows_at, plain, score, ids, codes, l_off, l_len, names, again,
                       spec, len(starts), int(blank.sum()))
    return merge_blocks(path, [result], valid, rejects)


def _assemble(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows_at: np.ndarray,
              plain: np.ndarray, score: np.ndarray, ids: list, codes: np.ndarray, l_off: np.ndarray,
              l_len: np.ndarray, names: list[str], again: np.ndarray, spec: FieldSpec, n_lines: int,
              n_blank: int) -> BlockResult:
    """One BlockResult for the whole file: the plain rows from the columns, the others from the
    per-line code, in line order, with the labels renumbered in first-seen order."""
    n = len(rows_at)
    label_count = l_len.copy()
    rejects: list[tuple[int, str, bytes]] = []
    taken = plain.copy()
    extra_names: dict[str, int] = {}
    name_index: dict[str, int] | None = None
    extra_codes: dict[int, np.ndarray] = {}
    for r in again.tolist():
        line = int(rows_at[r])
        end = int(ends[line]) + (1 if ends[line] < len(buf) else 0)  # with its b"\n", if it has one
        got = parse_lines(buf[int(starts[line]):end].tobytes(), int(starts[line]), spec)
        if got.rejects:
            _, reason, raw = got.rejects[0]
            rejects.append((line + 1, reason, raw))
            continue
        taken[r] = True
        ids[r] = got.ids[0]
        score[r] = got.scores[0]
        if name_index is None:
            name_index = {t: i for i, t in enumerate(names)}
        own = [got.names[k] for k in got.codes.tolist()]
        extra_codes[r] = np.array([name_index[t] if t in name_index else
                                   extra_names.setdefault(t, len(names) + len(extra_names)) for t in own],
                                  dtype=np.int32)
        label_count[r] = len(own)
    keep = np.flatnonzero(taken)
    if not extra_codes:  # every taken row is plain: its labels are the columns'
        kept = codes if taken.all() else codes[np.repeat(taken, l_len)]
    else:
        parts = [extra_codes[r] if r in extra_codes else codes[l_off[r]:l_off[r + 1]] for r in keep.tolist()]
        kept = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    all_names = names + list(extra_names)
    new_codes, old_of = first_seen(kept, len(all_names))
    lines = rows_at[keep]
    return BlockResult([ids[r] for r in keep.tolist()] if len(keep) < n else ids, score[keep],
                       label_count[keep], new_codes, [all_names[k] for k in old_of.tolist()], lines + 1,
                       starts[lines], rejects, n_lines, n, n_blank)
