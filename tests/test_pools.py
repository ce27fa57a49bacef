"""Reading annotated pools: layouts, fields, and the rejects contract on bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import DATA, TULU3_TAGS

from mig_ray.errors import PoolError
from mig_ray.pools.annotated import load_valid_tags, read_annotated
from mig_ray.pools.fields import FieldSpec, content_id
from mig_ray.pools.rejects import Rejects


def released(rid, tags, q=(3.0, ), c=(2.0,)):
    return {"_id": rid, "dialogs": [{"role": "user", "content": f"q {rid}"}],
            "annotation": {"instag": {"content": list(tags)},
                           "deita": {"quality_scores": list(q), "complexity_scores": list(c)}}}


def write_lines(path, lines):
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else orjson.dumps(ln)) + b"\n" for ln in lines))
    return path


BAD_LINES = [
    (b'{"_id": "x", "annotation": ', "invalid JSON"),
    (b"[1, 2, 3]", "record is not a JSON object"),
    (released("m", ["a"]) | {"annotation": {"instag": {"content": ["a"]}}}, "missing score"),
    (released("s", ["a"], q=("high",)), "score not numeric"),
    (released("b", ["a"], q=(True,)), "score not numeric"),
    (released("l", ["a"], q=(1.0, 2.0), c=(1.0,)), "score not numeric"),
    (released("e", ["a"], q=(), c=()), "score not numeric"),
    (released("neg", ["a"], q=(-1.0,)), "score negative"),
    (released("inf", ["a"], q=(1e200,), c=(1e200,)), "score not finite"),
    (b'{"_id": "nan", "annotation": {"deita": {"quality_scores": [NaN], "complexity_scores": [1]}}}',
     "invalid JSON"),
    (released("t", ["a", 3]), "labels not a list of strings"),
    (released("u", ["a"]) | {"annotation": {"instag": {"content": "a"},
                                            "deita": {"quality_scores": [1], "complexity_scores": [1]}}},
     "labels not a list of strings"),
    (released("v", ["a"]) | {"annotation": {"deita": {"quality_scores": [1], "complexity_scores": [1]}}},
     "missing labels"),
    (released("good-1", ["a"]), "duplicate id"),  # good-1 also appears first, below
    (released(["not", "an", "id"], ["a"]), "id not a string"),
]


def test_rejects_corpus(tmp_path):
    good = [released("good-1", ["a", "b"]), released("good-2", []), released("good-3", ["b", "zzz"])]
    lines = [good[0], b"", *(ln for ln, _ in BAD_LINES), good[1], b"   ", good[2]]
    pool_path = write_lines(tmp_path / "pool.jsonl", lines)
    with Rejects(tmp_path / "rejects.jsonl") as rej:
        pool = read_annotated(pool_path, FieldSpec(), {"a", "b"}, rej)
    assert pool.ids == ["good-1", "good-2", "good-3"]
    assert pool.counts == {"read": 3 + len(BAD_LINES), "blank_lines": 2, "rejected": len(BAD_LINES),
                           "selectable": 3, "no_valid_label": 1, "labels_dropped_by_valid_tags": 1}
    assert pool.lines.tolist() == [1, 3 + len(BAD_LINES), 5 + len(BAD_LINES)]
    rows = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(3, 3 + len(BAD_LINES)))
    for row, (raw, reason) in zip(rows, BAD_LINES, strict=True):
        assert row["reason"].startswith(reason), row
        assert row["file"] == str(pool_path)
        expect = raw.decode() if isinstance(raw, bytes) else orjson.dumps(raw).decode()
        assert row["raw"] == expect  # nothing lost: the record is kept verbatim
    dup = next(r for r in rows if r["reason"].startswith("duplicate"))
    assert "first at line 1" in dup["reason"]
    assert pool.labels_of(2) == ["b"]
    assert pool.scores.tolist() == [6.0, 6.0, 6.0]


def test_strict_stops_at_first_bad_record(tmp_path):
    pool_path = write_lines(tmp_path / "p.jsonl", [released("a", ["x"]), released("b", ["x"], q=("?",))])
    with pytest.raises(PoolError, match=r"p\.jsonl:2: score not numeric"), Rejects(None, strict=True) as rej:
        read_annotated(pool_path, FieldSpec(), None, rej)


def test_real_tulu3_example(tmp_path):
    with Rejects(tmp_path / "r.jsonl") as rej:
        pool = read_annotated(DATA / "mig_example_tulu3_10.jsonl", rejects=rej)
    assert pool.counts["read"] == 10 and pool.counts["rejected"] == 1 and len(pool) == 9
    (row,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert row["line"] == 3 and row["reason"].startswith("invalid JSON")
    first = json.loads((DATA / "mig_example_tulu3_10.jsonl").read_text().splitlines()[0])
    d = first["annotation"]["deita"]
    want = np.mean([q * c for q, c in zip(d["quality_scores"], d["complexity_scores"], strict=True)])
    assert pool.scores[0] == pytest.approx(want, rel=1e-15)
    assert pool.labels_of(0) == first["annotation"]["instag"]["content"]
    valid = load_valid_tags(TULU3_TAGS)
    assert len(valid) == 4531


def test_generic_fields_dotted_paths_and_content_ids(tmp_path):
    recs = [{"meta": {"tags": ["x", "y"], "turns": [{"s": 2.5}]}, "text": "hello"},
            {"meta": {"tags": ["y"], "turns": [{"s": 1}]}, "text": "world"},
            {"meta": {"tags": ["y"], "turns": []}, "text": "no score"}]
    path = write_lines(tmp_path / "g.jsonl", recs)
    spec = FieldSpec(labels_field="meta.tags", score_field="meta.turns.0.s")
    with Rejects(None) as rej:
        pool = read_annotated(path, spec, None, rej)
    assert pool.scores.tolist() == [2.5, 1.0]
    assert pool.ids == [content_id(recs[0]), content_id(recs[1])]
    assert rej.reasons == {"missing score": 1}
    # the content id ignores key order and whitespace
    assert content_id({"b": 1, "a": [1, 2]}) == content_id(json.loads('{ "a": [1,2], "b": 1 }'))


def test_parquet_pool_with_nan_score(tmp_path):
    table = pa.Table.from_pylist([
        {"id": "p1", "tags": ["a"], "score": 2.0},
        {"id": "p2", "tags": ["b"], "score": math.nan},
        {"id": "p3", "tags": ["a", "b"], "score": 4.0},
    ])
    pq.write_table(table, tmp_path / "p.parquet")
    with Rejects(tmp_path / "r.jsonl") as rej:
        pool = read_annotated(tmp_path / "p.parquet", FieldSpec("tags", "score"), None, rej)
    assert pool.ids == ["p1", "p3"] and pool.locations.tolist() == [0, 2]
    (row,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert row["row"] == 2 and row["reason"].startswith("score not finite") and row["raw"]["id"] == "p2"


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(PoolError, match="no such file"):
        read_annotated(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(PoolError, match="unknown pool format"):
        read_annotated(tmp_path / "x.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(PoolError, match="not a readable Parquet"):
        read_annotated(tmp_path / "bad.parquet")


def test_valid_tags_text_and_json(tmp_path):
    (tmp_path / "v.txt").write_text("a\n b \n\n")
    assert load_valid_tags(tmp_path / "v.txt") == {"a", "b"}
    (tmp_path / "v.json").write_text('["a", 1]')
    with pytest.raises(PoolError, match="list of strings: item 1 is 1"):
        load_valid_tags(tmp_path / "v.json")
    (tmp_path / "o.json").write_text('{"a": 3, "B ": 1}')
    assert load_valid_tags(tmp_path / "o.json") == {"a", "B "}  # matched exactly, as written
    (tmp_path / "list.txt").write_text('["a", "b"]\n')  # JSON content under another name
    assert load_valid_tags(tmp_path / "list.txt") == {"a", "b"}
    (tmp_path / "brackets.txt").write_text("[draft] essay\nb\n")  # a text file after all
    assert load_valid_tags(tmp_path / "brackets.txt") == {"[draft] essay", "b"}
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(PoolError, match=r"empty\.txt: the valid-tags file holds no tags"):
        load_valid_tags(tmp_path / "empty.txt")
    (tmp_path / "null.json").write_text("null")
    with pytest.raises(PoolError, match=r"null\.json: valid-tags JSON must be a list of strings.*NoneType"):
        load_valid_tags(tmp_path / "null.json")
    (tmp_path / "one.txt").write_text("[1]\n")  # JSON but no tag list: a text file's one tag
    assert load_valid_tags(tmp_path / "one.txt") == {"[1]"}
    (tmp_path / "bad.json").write_text('["a",\n  oops]')
    with pytest.raises(PoolError, match=r"bad\.json:2: valid-tags file is not valid JSON"):
        load_valid_tags(tmp_path / "bad.json")


def _mutations(rng):
    """Records around the released layout: well-formed ones and every kind of small breakage."""
    odd = [None, True, 0, 1, -2, 2.5, -0.0, 1e308, "x", "", [], ["a"], [1], {}, {"k": 1}]
    for i in range(3000):
        rec = released(f"r{i}", [f"t{j}" for j in range(int(rng.integers(0, 4)))],
                       q=tuple(rng.choice([1, 2.5, 0.0, 3], size=2).tolist()),
                       c=tuple(rng.choice([1, 4.25, 6], size=2).tolist()))
        ann = rec["annotation"]
        spots = [(rec, "_id"), (rec, "annotation"), (ann, "instag"), (ann["instag"], "content"),
                 (ann, "deita"), (ann["deita"], "quality_scores"), (ann["deita"], "complexity_scores")]
        for _ in range(int(rng.integers(0, 3))):
            where, key = spots[int(rng.integers(len(spots)))]
            if rng.random() < 0.3:
                where.pop(key, None)
            else:
                where[key] = odd[int(rng.integers(len(odd)))]
        if rng.random() < 0.2:  # an odd value inside the score lists
            spots[5][0]["quality_scores"] = [1.0, odd[int(rng.integers(len(odd)))]]
        yield rec


def test_fast_released_path_agrees_with_the_general_accessors():
    from mig_ray.errors import BadRecord
    from mig_ray.pools.fields import released_fast

    spec = FieldSpec()
    fast_hits = 0
    for rec in _mutations(np.random.default_rng(0)):
        fast = released_fast(rec)
        try:
            general = (spec.record_id(rec), spec.score(rec), spec.labels(rec))
        except BadRecord:
            general = None
        if fast is not None:
            fast_hits += 1
            assert general is not None, rec
            assert fast[0] == general[0] and fast[2] == general[2], rec
            assert np.float64(fast[1]).tobytes() == np.float64(general[1]).tobytes(), rec
    assert fast_hits > 500  # the fast path does serve the well-formed records


@pytest.mark.parametrize("with_valid", [True, False])
def test_label_codes_vocab_and_dropped_counts_on_random_pools(tmp_path, with_valid):
    """Codes, first-seen vocabulary and counts against a plain per-record computation, on labels that
    repeat across and within records, invalid ones included, with duplicate ids in between."""
    rng = np.random.default_rng(3)
    names = [f"tag{i}" for i in range(30)]
    valid = set(names[::2]) if with_valid else None
    recs = []
    for _ in range(400):
        labels = [names[j] for j in rng.integers(0, len(names), rng.integers(0, 6))]
        rid = f"r{rng.integers(0, 350)}"  # some ids repeat: later copies are rejected
        recs.append(released(rid, labels, q=(float(rng.integers(1, 6)),)))
    pool_path = write_lines(tmp_path / "p.jsonl", recs)
    with Rejects(tmp_path / "rejects.jsonl") as rej:
        pool = read_annotated(pool_path, FieldSpec(), valid, rej)

    seen, vocab, kept, dropped, empty, lines = set(), [], [], 0, 0, []
    for line, rec in enumerate(recs, 1):
        if rec["_id"] in seen:
            continue
        seen.add(rec["_id"])
        lines.append(line)
        labels = [t for t in rec["annotation"]["instag"]["content"] if valid is None or t in valid]
        dropped += len(rec["annotation"]["instag"]["content"]) - len(labels)
        empty += not labels
        for t in labels:
            if t not in vocab:
                vocab.append(t)
        kept.append(labels)
    assert pool.ids == list(dict.fromkeys(r["_id"] for r in recs))
    assert pool.lines.tolist() == lines
    assert pool.vocab == vocab
    assert [pool.labels_of(i) for i in range(len(pool))] == kept
    assert pool.counts["labels_dropped_by_valid_tags"] == dropped
    assert pool.counts["no_valid_label"] == empty
    assert pool.counts["rejected"] == len(recs) - len(seen) > 0
    assert (dropped > 0) == with_valid
