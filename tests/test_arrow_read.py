"""pyarrow's reader of released-layout pools (pools/arrow_read.py) against the single-core reader: on
pools pyarrow takes (schema types kept, every other oddity in), the same arrays, vocabulary, counts
and rejects; on pools it refuses, None (the caller then reads as before)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pj
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_hostile_inputs import QUARANTINED
from test_parallel_read import TAGS, assert_same, pool_file, read_with

from mig_ray.pools import arrow_read
from mig_ray.pools.annotated import read_annotated
from mig_ray.pools.arrow_read import read_jsonl_arrow, scan_lines
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.rejects import Rejects

number = st.one_of(st.floats(0, 6, allow_nan=False), st.integers(0, 7), st.sampled_from(
    [-1.5, -0.0, 0.0, 2 ** 53, 2 ** 60, 1e300, 3.4875524482290032, 1e-310]))
maybe_null = st.one_of(st.none(), st.just("missing"))
ODD_TEXT = ["NaN", "Infinity", "\U0001F600", "\\ud83d", "\u00e9t\u00e9", 'a "quoted" \\ word', "\x7f",
            "\u2028"]


@st.composite
def arrow_record(draw) -> bytes:
    """A record whose schema fields keep their types (string, lists of strings, lists of numbers),
    while nulls, missing parts, empty or unequal lists, negative or huge numbers, NaN or Infinity in
    an ignored field, deep nesting and escapes come now and then."""
    turns = draw(st.integers(0, 3))
    q = draw(st.lists(number, min_size=turns, max_size=turns))
    c = draw(st.lists(number, min_size=turns, max_size=draw(st.sampled_from([turns, turns, turns + 1]))))
    labels = draw(st.lists(st.sampled_from(TAGS + ["nope", "zz"] + ODD_TEXT), max_size=5))
    if draw(st.integers(0, 8)) == 0:
        labels.insert(draw(st.integers(0, len(labels))), None)
    deita = {"quality_scores": q, "complexity_scores": c}
    rec = {"_id": f"r{draw(st.integers(0, 30))}", "dialogs": [{"role": "user", "content": "q"}],
           "annotation": {"instag": {"content": labels}, "deita": deita}}
    for where, key in (("ann", "instag"), ("ann", "deita"), ("rec", "_id"), ("rec", "annotation")):
        if draw(st.integers(0, 12)) == 0:
            target = rec if where == "rec" else rec["annotation"]
            if draw(maybe_null) is None:
                target[key] = None
            else:
                target.pop(key, None)
    text = json.dumps(rec, ensure_ascii=draw(st.booleans()))
    deep, nested = ', "x": ' + "[" * 1100 + "]" * 1100, ', "x": [' + "[" * 900 + "]" * 900 + "]"
    odd = [', "x": NaN', ', "x": -Infinity', ', "x": ["\\ud83d\\ude00"]', deep, nested]
    extra = draw(st.sampled_from(odd)) if draw(st.integers(0, 3)) == 0 else ""
    return (text[:-1] + extra + "}").encode()


blank_line = st.sampled_from([b"", b"  ", b"\r"])
lines = st.lists(st.one_of(arrow_record(), arrow_record(), arrow_record(), blank_line), max_size=30)


def read_pair(path, valid):
    """(pool, reject rows) from the single-core reader and from pyarrow's."""
    return [read_with(path, "seq", lambda r: read_annotated(path, FieldSpec(), valid, r)),
            read_with(path, "arrow", lambda r: read_jsonl_arrow(path, FieldSpec(), valid, r))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines, crlf=st.booleans(), final=st.booleans(), with_valid=st.booleans())
def test_arrow_read_equals_the_single_core_reader(tmp_path, monkeypatch, lines, crlf, final, with_valid):
    """Every doubtful line read again, however many (the reader's own limit would decline most of
    these pools, dense with NaN, Infinity and escapes)."""
    monkeypatch.setattr(arrow_read, "MAX_DOUBTFUL", 1.0)
    path = pool_file(tmp_path / "pool.jsonl", lines, False, crlf, final)
    valid = {"apple", "fig", "kiwi", "\U0001F600"} if with_valid else None
    seq, arrow = read_pair(path, valid)
    event("arrow read it" if arrow[0] is not None else "arrow declined")
    if arrow[0] is not None:
        assert_same(seq, arrow)


def write(tmp_path, recs: list, extra: list[bytes] = ()) -> object:
    raw = [r if isinstance(r, bytes) else orjson.dumps(r) for r in recs] + list(extra)
    return pool_file(tmp_path / "pool.jsonl", raw, False, False, True)


def rec(i: int, labels: list, q=(1.5,), c=(2.0,), rid: str | None = None) -> dict:
    deita = {"quality_scores": list(q), "complexity_scores": list(c)}
    return {"_id": rid or f"r{i}", "annotation": {"instag": {"content": labels}, "deita": deita}}


@pytest.mark.parametrize("odd,reason", [
    (b', "x": NaN', "invalid JSON"),  # pyarrow takes NaN, orjson does not
    (b', "x": ' + b"[" * 1100 + b"]" * 1100, "invalid JSON"),  # past orjson's depth
])
def test_lines_pyarrow_takes_and_orjson_refuses_are_rejected_as_before(tmp_path, odd, reason):
    recs = [rec(i, [TAGS[i % 5], TAGS[(i + 2) % 5]]) for i in range(20)]
    recs[7] = orjson.dumps(recs[7])[:-1] + odd + b"}"
    path = write(tmp_path, recs)
    seq, arrow = read_pair(path, None)
    assert arrow[0] is not None  # pyarrow took the file
    assert_same(seq, arrow)
    assert [(r["line"], r["reason"].split(":")[0]) for r in arrow[1]] == [(8, reason)]


def test_rows_read_again_keep_their_labels_and_the_first_seen_order(tmp_path):
    """A row read again (a huge integer score, kept exact by orjson) carries the first copy of a
    label; a null row and a row of unequal lists are rejected as before."""
    recs = [rec(0, ["apple"]), rec(1, ["only-here", "fig"], q=(2 ** 60, 1), c=(3, 2)),
            rec(2, ["fig", "kiwi"]), {"_id": None, "annotation": None},
            rec(4, ["lime"], q=(1.0, 2.0), c=(1.0,)), rec(5, ["only-here"])]
    path = write(tmp_path, recs, [b"", b"   "])
    seq, arrow = read_pair(path, None)
    assert arrow[0] is not None
    assert_same(seq, arrow)
    assert arrow[0].vocab == ["apple", "only-here", "fig", "kiwi"]
    assert arrow[0].scores[1] == (2 ** 60 * 3 + 2) / 2
    assert [r["line"] for r in arrow[1]] == [4, 5]


@pytest.mark.parametrize("bad", [
    orjson.dumps({"_id": 5, "annotation": None}),  # a type that changes between rows
    b"not json",
    b"[1, 2]",
    orjson.dumps(rec(9, ["x"])) + b" " + orjson.dumps(rec(10, ["y"])),  # two objects on a line
    b'{"_id": "a", "_id": "b"}',  # a key given twice
    b'{"_id": "\\ud800"}',  # a lone surrogate, high or low
    b'{"_id": "a", "x": "\\udc00"}',
    b'{"_id": "a", "x": "\xff"}',  # not UTF-8, where pyarrow would not notice
])
def test_files_pyarrow_refuses_are_left_to_the_other_readers(tmp_path, monkeypatch, bad):
    monkeypatch.setattr(arrow_read, "MAX_DOUBTFUL", 1.0)  # declined for what the line is, not their share
    path = write(tmp_path, [rec(i, ["apple"]) for i in range(5)], [bad])
    assert read_jsonl_arrow(path, FieldSpec(), None, Rejects(None)) is None


def test_a_byte_order_mark_and_a_spec_other_than_the_released_layout_are_declined(tmp_path):
    path = pool_file(tmp_path / "pool.jsonl", [orjson.dumps(rec(0, ["apple"]))], True, False, True)
    assert read_jsonl_arrow(path, FieldSpec(), None, Rejects(None)) is None
    path = write(tmp_path, [rec(0, ["apple"])])
    assert read_jsonl_arrow(path, FieldSpec(labels_field="l"), None, Rejects(None)) is None
    assert read_jsonl_arrow(path, FieldSpec(), None, Rejects(None)) is not None


def test_pyarrow_parses_decimal_numbers_as_python_does():
    """The scores are summed from pyarrow's doubles: they must be the doubles orjson and float give."""
    rng = np.random.default_rng(3)
    texts = [repr(float(v)) for v in rng.uniform(0, 6, 3000)]
    texts += [f"{v:.{d}f}" for v, d in zip(rng.uniform(0, 6, 3000), rng.integers(1, 30, 3000), strict=True)]
    texts += [repr(float(v)) for v in rng.uniform(0, 1e-300, 500)]
    texts += [f"{v:.18e}" for v in rng.uniform(0, 1e300, 500)]
    data = b"".join(b'{"x": ' + t.encode() + b"}\n" for t in texts)
    got = pj.read_json(pa.py_buffer(data)).column("x").to_numpy()
    assert got.tobytes() == np.array([orjson.loads(t) for t in texts], dtype=np.float64).tobytes()


PIECES = [b"a", b" ", b"\n", b"\r", b"\x0b", b"{", b"\xed", b"\xa0", b"\x80", b"\xf4", b"\x8f", b"\xe0"]
texts = st.lists(st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")), max_size=8)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=80) | st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)
       | texts.map(b"\n".join), skip=st.integers(0, 8))
def test_scan_lines_cuts_lines_as_bytes_split_does(data, skip):
    """`skip` bytes in front and sliced off: the buffer starts off the 8-byte words now and then,
    and is scanned byte by byte."""
    pieces = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        pieces.pop()
    starts, ends, blank, doubt = scan_lines(np.frombuffer(b"\0" * skip + data, dtype=np.uint8)[skip:])
    at = np.cumsum([0] + [len(p) + 1 for p in pieces])[:-1]
    assert starts.tolist() == at.tolist()
    assert ends.tolist() == [a + len(p) for a, p in zip(at.tolist(), pieces, strict=True)]
    assert blank.tolist() == [p.isspace() or not p for p in pieces]
    assert (doubt == arrow_read.NOT_UTF8).tolist() == [not utf8(p) for p in pieces]


def utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_scores_are_summed_turn_by_turn_as_the_python_reader_does(tmp_path):
    """Three-turn records of random floats: summed in another order, some scores differ in the last
    bit (checked here), so the same scores mean the same order of the sum."""
    rng = np.random.default_rng(5)
    q, c = rng.uniform(0, 6, (300, 3)), rng.uniform(0, 6, (300, 3))
    recs = [rec(i, [TAGS[i % 5]], q=q[i].tolist(), c=c[i].tolist()) for i in range(300)]
    t = [[x * y for x, y in zip(a, b, strict=True)] for a, b in zip(q.tolist(), c.tolist(), strict=True)]
    reversed_differs = [(p[0] + p[1]) + p[2] != (p[2] + p[1]) + p[0] for p in t]
    assert sum(reversed_differs) > 10
    seq, arrow = read_pair(write(tmp_path, recs), None)
    assert arrow[0] is not None
    assert_same(seq, arrow)


@pytest.mark.parametrize("kind", list(QUARANTINED))
def test_hostile_quarantine_cases_read_the_same_or_are_declined(kind, tmp_path, monkeypatch):
    """Every quarantine case of the CLI's hostile-input tests, in the released layout."""
    monkeypatch.setattr(arrow_read, "MAX_DOUBTFUL", 1.0)
    lines = QUARANTINED[kind][0]
    raw = [ln if isinstance(ln, bytes) else orjson.dumps(ln) for ln in lines]
    seq, arrow = read_pair(pool_file(tmp_path / "pool.jsonl", raw, False, False, True), None)
    if arrow[0] is not None:  # (the cases for another layout read here as the released one)
        assert_same(seq, arrow)


@pytest.mark.parametrize("text,doubtful", [
    (b'{"x": NaN}', True), (b'{"x": [-Infinity, 1]}', True), (b'{"x": Inf}', True),
    (b'{"t": "the value is NaN."}', True),  # text, but read again all the same: harmless
    (b'{"t": "Information on NaNs, Infinite loops and Infinityx"}', False),  # words, not numbers
    (b'{"t": "Infinit"}', False),
])
def test_only_nan_and_infinity_standing_as_tokens_make_a_line_doubtful(text, doubtful):
    _, _, _, doubt = scan_lines(np.frombuffer(text + b"\n", dtype=np.uint8))
    assert (doubt[0] == arrow_read.DOUBTFUL) == doubtful


def test_a_pool_whose_text_says_information_is_read_by_pyarrow(tmp_path):
    """Words that begin like Inf or NaN do not send every line back to orjson (nor, past 10% of the
    lines, the whole file to the other readers)."""
    recs = [orjson.dumps({**rec(i, [TAGS[i % 5]]), "dialogs": [{"role": "user", "content": "Information?"}]})
            for i in range(30)]
    seq, arrow = read_pair(write(tmp_path, recs), None)
    assert arrow[0] is not None
    assert_same(seq, arrow)
