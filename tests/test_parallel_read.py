"""The parallel JSONL reader (pools/parallel_read.py) against the single-core reader on hostile pools:
the same arrays, vocabulary, counts and rejects (their order, messages and raw lines)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_inputs import QUARANTINED

from mig_ray.errors import PoolError
from mig_ray.pools import parallel_read
from mig_ray.pools.annotated import read_annotated
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.parallel_read import read_jsonl_parallel
from mig_ray.pools.rejects import Rejects

TAGS = ["apple", "fig", "date", "kiwi", "lime"]
ODD = [None, True, False, 0, 3, -2, 2.5, -0.0, 1e308, -1e-300, 10**30, "x", "", [], ["apple"], [1], {},
       {"k": 1}]

value = st.sampled_from(ODD)
odd_scores = st.one_of(st.lists(st.one_of(st.floats(-1, 6, allow_nan=False), value), max_size=4), value)
odd_labels = st.one_of(st.lists(st.one_of(st.sampled_from(TAGS), value), max_size=4), value)
rid = st.one_of(st.sampled_from([f"r{i}" for i in range(12)]), st.integers(0, 12), value)


@st.composite
def record(draw) -> dict:
    """A released-layout record: well-formed about half the time (ids repeat, labels outside the
    valid set), else with odd scores, labels or ids, or parts missing or replaced."""
    turns = draw(st.integers(1, 3))
    q = draw(st.lists(st.floats(0, 6, allow_nan=False), min_size=turns, max_size=turns))
    c = draw(st.lists(st.floats(0, 6, allow_nan=False), min_size=turns, max_size=turns))
    labels = draw(st.lists(st.sampled_from(TAGS + ["nope", "zz"]), max_size=5))
    if draw(st.integers(0, 3)) == 0:
        q = draw(odd_scores)
    if draw(st.integers(0, 3)) == 0:
        c = draw(odd_scores)
    if draw(st.integers(0, 5)) == 0:
        labels = draw(odd_labels)
    rec = {"_id": draw(rid) if draw(st.integers(0, 4)) == 0 else f"r{draw(st.integers(0, 30))}",
           "dialogs": [{"role": "user", "content": "q"}],
           "annotation": {"instag": {"content": labels},
                          "deita": {"quality_scores": q, "complexity_scores": c}}}
    if draw(st.integers(0, 4)) == 0:
        where, key = draw(st.sampled_from([("rec", "_id"), ("rec", "annotation"), ("ann", "instag"),
                                           ("ann", "deita")]))
        target = rec if where == "rec" else rec["annotation"]
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(value)
    if draw(st.integers(0, 9)) == 0:
        rec["id"] = draw(rid)
    return rec


def dumps(rec: dict) -> bytes:
    return json.dumps(rec).encode()  # orjson refuses integers past 64 bits; such a line is written


line = st.one_of(
    record().map(dumps),
    record().map(dumps),
    record().map(dumps),
    st.sampled_from([b"", b"   ", b"\r", b"[1, 2]", b"7", b'"s"', b"null", b'{"_id": "x", "annotation": ',
                     b"\xef\xbb\xbf{}", b'{"_id": "\xff"}', b'{"a": NaN}',
                     b'{"_id": "r1", "annotation": {"instag": {"content": ["apple"]}, '
                     b'"deita": {"quality_scores": [1.5], "complexity_scores": [2.0]}}}']),
)


def pool_file(path, lines: list[bytes], bom: bool, crlf: bool, final_newline: bool):
    end = b"\r\n" if crlf else b"\n"
    data = end.join(lines) + (end if final_newline else b"")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def read_with(path, name: str, read):
    """(pool, reject rows) of `read(rejects)`, its rejects written beside `path` as NAME.rejects.jsonl
    (split at b"\\n" only: a raw line may hold U+2028, which str.splitlines would cut)."""
    rej_path = path.with_name(f"{name}.rejects.jsonl")
    with Rejects(rej_path) as rej:
        pool = read(rej)
    rows = [x for x in rej_path.read_text().split("\n") if x] if rej_path.exists() else []
    return pool, [json.loads(x) for x in rows]


def read_both(path, spec: FieldSpec, valid: set[str] | None, block_bytes: int, workers: int = 1,
              fast: bool = True):
    """(pool, reject rows) from the single-core reader and from the parallel one."""
    return [read_with(path, "seq", lambda r: read_annotated(path, spec, valid, r)),
            read_with(path, "par", lambda r: read_jsonl_parallel(path, spec, valid, r, workers,
                                                                 block_bytes=block_bytes, fast=fast))]


def assert_same(a, b) -> None:
    (pa, ra), (pb, rb) = a, b
    assert rb == ra  # rejects: order, line numbers, reasons and raw text
    assert pb.ids == pa.ids
    assert pb.vocab == pa.vocab
    assert pb.counts == pa.counts
    for name in ("scores", "label_indptr", "label_codes", "locations", "lines"):
        x, y = getattr(pa, name), getattr(pb, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, max_size=40), bom=st.booleans(), crlf=st.booleans(), final=st.booleans(),
       block_bytes=st.integers(1, 400), with_valid=st.booleans(), fast=st.booleans())
def test_parallel_read_equals_the_single_core_reader(tmp_path, lines, bom, crlf, final, block_bytes,
                                                     with_valid, fast):
    """Blocks as small as one byte (every line its own block) up to a few lines; the merge is the
    same in one process as across workers (test below)."""
    path = pool_file(tmp_path / "pool.jsonl", lines, bom, crlf, final)
    valid = {"apple", "fig", "kiwi"} if with_valid else None
    seq, par = read_both(path, FieldSpec(), valid, block_bytes, fast=fast)
    assert_same(seq, par)


@pytest.mark.parametrize("kind", list(QUARANTINED))
def test_hostile_quarantine_cases_read_the_same(kind, tmp_path):
    """Every quarantine case of the CLI's hostile-input tests, split into one-line blocks."""
    lines, _, _, extra = QUARANTINED[kind]
    spec = FieldSpec("l", "s") if extra else FieldSpec()
    raw = [ln if isinstance(ln, bytes) else orjson.dumps(ln) for ln in lines]
    path = pool_file(tmp_path / "pool.jsonl", raw, False, False, True)
    seq, par = read_both(path, spec, None, 1)
    assert seq[0].counts["rejected"] >= 1
    assert_same(seq, par)


def test_workers_in_processes_and_duplicates_across_blocks(tmp_path):
    """Two worker processes over many blocks: a duplicate id whose first copy is in an earlier block
    (and a later copy of it in the same block as the second) is rejected naming the first line,
    and the labels of a rejected duplicate neither enter the vocabulary nor set its order."""
    def rec(i, labels, rid=None):
        return orjson.dumps({"_id": rid or f"r{i}", "annotation": {"instag": {"content": labels},
                            "deita": {"quality_scores": [1.0 + i % 5], "complexity_scores": [2.5]}}})
    lines = [rec(i, [TAGS[i % 3], TAGS[(i + 1) % 3]]) for i in range(400)]
    lines[300] = rec(300, ["only-in-a-duplicate", "kiwi"], rid="r5")
    lines[301] = rec(301, ["apple"], rid="r5")
    lines[302] = rec(302, ["lime"], rid="new")
    lines[303] = rec(303, ["kiwi"], rid="new2")
    lines[350] = b"not json"
    path = pool_file(tmp_path / "pool.jsonl", lines, False, False, True)
    seq, par = read_both(path, FieldSpec(), None, 2000, workers=2)
    assert_same(seq, par)
    assert [r["line"] for r in par[1]] == [301, 302, 351]
    assert par[1][0]["reason"] == "duplicate id: 'r5' (first at line 6)"
    assert par[0].vocab == ["apple", "fig", "date", "lime", "kiwi"]  # kiwi's first copy was rejected


def test_strict_mode_raises_at_the_first_bad_line(tmp_path):
    lines = [orjson.dumps({"_id": f"r{i}", "annotation": {"instag": {"content": ["apple"]}, "deita": {
        "quality_scores": [1.0], "complexity_scores": [2.0]}}}) for i in range(50)]
    lines[40] = b"[]"
    lines[20] = lines[3]  # a duplicate before the non-object line
    path = pool_file(tmp_path / "pool.jsonl", lines, False, False, True)
    with pytest.raises(PoolError, match=r"pool\.jsonl:21: duplicate id: 'r3' \(first at line 4\)"):
        read_jsonl_parallel(path, FieldSpec(), None, Rejects(None, strict=True), 1, block_bytes=100)


def test_select_reads_large_pools_in_parallel(tmp_path, monkeypatch):
    """`select` takes pyarrow's reader above its size threshold, the parallel one where pyarrow declines
    (and the same selection)."""
    from mig_ray.selection.config import SelectConfig
    from mig_ray.selection.run import run_select

    rng = np.random.default_rng(0)
    lines = [orjson.dumps({"_id": f"r{i}", "annotation": {"instag": {"content": list(
        rng.choice(TAGS, size=int(rng.integers(1, 4)), replace=False))}, "deita": {
        "quality_scores": [float(rng.uniform(1, 6))], "complexity_scores": [float(rng.uniform(1, 6))]}}})
        for i in range(300)]
    pool = pool_file(tmp_path / "pool.jsonl", lines, False, False, True)
    emb = tmp_path / "emb.npz"
    np.savez(emb, labels=np.array(TAGS), embeddings=rng.normal(size=(len(TAGS), 8)))
    import mig_ray.selection.run as select_run

    calls = []
    real_arrow, real_parallel = select_run.read_jsonl_arrow, select_run.read_jsonl_parallel
    monkeypatch.setattr(select_run, "read_jsonl_parallel",
                        lambda *a: calls.append("parallel") or real_parallel(*a))
    orders = []
    for threshold, arrow in ((10**9, True), (0, True), (0, False)):  # one core; pyarrow's; processes
        monkeypatch.setattr(select_run, "read_jsonl_arrow", lambda *a, arrow=arrow: (
            calls.append("arrow") or real_arrow(*a)) if arrow else None)
        monkeypatch.setattr(parallel_read, "MIN_PARALLEL_BYTES", threshold)
        monkeypatch.setattr(parallel_read, "BLOCK_BYTES", 4096)
        monkeypatch.setattr("mig_ray.selection.run.available_cores", lambda: 2)
        out = tmp_path / f"out{threshold}{arrow}" / "sel.jsonl"
        run_select(SelectConfig(pool=pool, n=20, out=out, label_embeddings=emb, progress=False))
        orders.append(out.with_name("sel.manifest.jsonl").read_text())
    assert calls == ["arrow", "parallel"]
    assert orders[0] == orders[1] == orders[2]
