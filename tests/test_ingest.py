"""Ingest on Ray Data: every input format, exact positions across blocks, rejects, duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import DATA

from mig_ray.errors import PoolError
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.ingest import SCHEMA, ingest
from mig_ray.pools.layouts import conversation_id, normalise


def _table(out: Path) -> pa.Table:
    t = pq.read_table(out)
    assert t.schema.equals(SCHEMA), t.schema
    return t.sort_by("position")


def _rejects(path: str | Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def _convo(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]


def _record(i: int) -> dict:
    """Records in all four layouts, by i % 4."""
    m = _convo(i)
    return [
        {"messages": m},
        {"conversations": [{"from": "human", "value": m[0]["content"]},
                           {"from": "gpt", "value": m[1]["content"]}]},
        {"instruction": m[0]["content"], "input": "", "output": m[1]["content"]},
        {"dialogs": m, "annotation": {"instag": {"content": [f"t{i}"]},
                                      "deita": {"quality_scores": [2.0], "complexity_scores": [1.5]}}},
    ][i % 4]


def test_real_pools_in_blocks(ray_address, tmp_path):
    tulu = DATA / "mig_example_tulu3_10.jsonl"
    alpaca = DATA / "alpaca_seed_tasks_175.jsonl"
    res = ingest([tulu, alpaca], tmp_path / "ingest", progress=False, block_bytes=16_000)
    assert res.units > 4  # several byte-range blocks per file
    assert (res.read, res.rejected, res.accepted) == (185, 1, 184)
    assert res.reasons == {"invalid JSON": 1}
    assert res.layouts == {"alpaca": 175, "released": 9}
    t = _table(tmp_path / "ingest")
    # positions: the global line order over both inputs (line 3 of the first is the reject)
    assert t["position"].to_pylist() == [p for p in range(185) if p != 2]
    tulu_lines = tulu.read_text(encoding="utf-8").splitlines()
    alpaca_lines = alpaca.read_text(encoding="utf-8").splitlines()
    rows = t.to_pylist()
    for row in rows[:9]:
        rec = json.loads(tulu_lines[row["line"] - 1])
        assert row["file"] == str(tulu)
        assert row["record"] == tulu_lines[row["line"] - 1]
        assert row["id"] == rec["_id"]
        assert json.loads(row["messages"]) == rec["dialogs"]
        assert row["labels"] == FieldSpec().labels(rec)
        assert row["score"] == pytest.approx(FieldSpec().score(rec))
    for row in rows[9:]:
        assert row["record"] == alpaca_lines[row["line"] - 1]
        assert row["id"] == f"seed_task_{row['line'] - 1}"
        assert row["labels"] is None and row["score"] is None
    (rej,) = _rejects(res.rejects_path)
    assert (rej["file"], rej["line"], rej["reason"][:12]) == (str(tulu), 3, "invalid JSON")
    assert rej["raw"] == tulu_lines[2]
    # one block gives the same table
    one = ingest([tulu, alpaca], tmp_path / "one", progress=False)
    assert one.units == 2
    assert _table(tmp_path / "one").equals(t)


def test_every_format_and_bad_record(ray_address, tmp_path):
    recs = [_record(i) for i in range(40)]
    lines = [orjson.dumps(r).decode() for r in recs[:10]]
    lines[3:3] = ["", "{not json", "[1, 2]", '{"text": "no conversation"}',
                  '{"messages": [{"role": "user", "content": "  "}]}', json.dumps({"_id": "dup", **recs[0]})]
    lines.append(json.dumps({"_id": "dup", **recs[1]}))  # same id, later in the same file
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    arr = tmp_path / "b.json"
    arr.write_text(json.dumps(recs[10:20], indent=2), encoding="utf-8")
    par = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([{"conversations": recs[i]["conversations"], "id": f"p{i}"}
                                         for i in range(21, 40, 4)]), par, row_group_size=2)
    res = ingest([jsonl, arr, par], tmp_path / "out", progress=False, block_bytes=200, block_rows=2)
    t = _table(tmp_path / "out")
    assert res.read == 10 + 6 + 10 + 5 and res.blank_lines == 1
    assert res.reasons == {"duplicate id": 1, "empty content": 1, "invalid JSON": 1, "no conversation": 1,
                           "record is not a JSON object": 1}
    assert res.accepted == t.num_rows == res.read - res.rejected == 26
    assert res.layouts == {"alpaca": 5, "openai": 6, "released": 5, "sharegpt": 10}
    rej = {r["line"]: r for r in _rejects(res.rejects_path)}
    assert set(rej) == {5, 6, 7, 8, 17}
    assert rej[17]["reason"] == f"duplicate id: 'dup' (first at {jsonl}:9)"
    assert rej[8]["reason"] == "empty content: messages[0].content"
    # exact global positions: JSONL lines (blank included), then array elements, then rows
    pos = dict(zip(zip(t["file"].to_pylist(), t["line"].to_pylist(), strict=True), t["position"].to_pylist(),
                   strict=True))
    assert pos[(str(jsonl), 1)] == 0 and pos[(str(jsonl), 16)] == 15
    assert pos[(str(arr), 1)] == 17 and pos[(str(arr), 10)] == 26
    assert [pos[(str(par), r)] for r in range(1, 6)] == [27, 28, 29, 30, 31]
    by_line = {(r["file"], r["line"]): r for r in t.to_pylist()}
    first = by_line[(str(jsonl), 1)]
    assert first["id"] == conversation_id(_convo(0))
    assert json.loads(first["messages"]) == _convo(0)
    elem = by_line[(str(arr), 2)]  # recs[11]: released layout with annotations
    assert elem["labels"] == ["t11"] and elem["score"] == 3.0
    assert json.loads(elem["record"]) == recs[11]
    assert elem["record"] == json.dumps(recs[11], indent=2).replace("\n", "\n  ")  # the array's own text
    row = by_line[(str(par), 2)]
    assert row["id"] == "p25" and json.loads(row["record"])["id"] == "p25"


def test_duplicates_across_files_and_named_layouts(ray_address, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    def rec(i: int) -> str:
        return json.dumps({"meta": {"uid": f"u{i}"}, **_record(4 * i)})

    # a byte order mark before the first record, and no newline after the last
    a.write_text("\ufeff" + "\n".join(rec(i) for i in range(5)), encoding="utf-8")
    b.write_text("\n".join(rec(i) for i in (3, 7, 8)) + "\n", encoding="utf-8")
    res = ingest([a, b], tmp_path / "out", id_field="meta.uid", layout="openai", progress=False,
                 block_bytes=100)
    assert (res.read, res.accepted) == (8, 7)
    (dup,) = _rejects(res.rejects_path)
    assert (dup["file"], dup["line"], dup["reason"]) == (str(b), 1, f"duplicate id: 'u3' (first at {a}:4)")
    t = _table(tmp_path / "out")
    assert t["id"].to_pylist() == ["u0", "u1", "u2", "u3", "u4", "u7", "u8"]
    assert t["position"].to_pylist() == [0, 1, 2, 3, 4, 6, 7]
    res = ingest([a], tmp_path / "out", layout="sharegpt", progress=False)
    assert res.accepted == 0 and res.reasons == {"missing field": 5}
    assert pq.read_table(tmp_path / "out").num_rows == 0  # earlier parts were replaced


def _hf_expected(recs: list[dict]) -> list[list[dict]]:
    return [normalise(r)[1] for r in recs]


def test_huggingface_save_to_disk_dir(ray_address, tmp_path):
    datasets = pytest.importorskip("datasets")
    recs = [{"messages": _convo(i), "source": "x"} for i in range(12)]
    # select() makes an indices mapping; save_to_disk flattens it
    ds = datasets.Dataset.from_list(recs).select(list(range(11, -1, -1)))
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=3)
    dd = datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 6))})
    dd.save_to_disk(str(tmp_path / "hfdict"))
    res = ingest([tmp_path / "hf", tmp_path / "hfdict"], tmp_path / "out", progress=False)
    assert (res.read, res.rejected) == (18, 6)  # the dict repeats six of the first dataset's conversations
    t = _table(tmp_path / "out")
    assert [json.loads(m) for m in t["messages"].to_pylist()] == _hf_expected(recs[::-1])
    assert t["line"].to_pylist() == list(range(1, 13))
    assert set(t["file"].to_pylist()) == {str(tmp_path / "hf")}
    dups = _rejects(res.rejects_path)
    train, test = str(tmp_path / "hfdict" / "train"), str(tmp_path / "hfdict" / "test")
    got = [(d["file"], d["line"]) for d in dups]
    assert got == [(train, 1), (train, 2), (train, 3), (train, 4), (test, 1), (test, 2)]


def test_huggingface_dir_written_by_hand(ray_address, tmp_path):
    """The save_to_disk format without the datasets package: Arrow IPC streams + state.json."""
    hf = tmp_path / "hf"
    hf.mkdir()
    recs = [_record(i) for i in range(9)]
    names = []
    for k, chunk in enumerate((recs[:5], recs[5:])):
        name = f"data-{k:05d}-of-00002.arrow"
        names.append({"filename": name})
        rows = [r | {"k": k} for r in chunk]
        schema = pa.unify_schemas([pa.Table.from_pylist([r]).schema for r in rows])
        table = pa.Table.from_pylist(rows, schema=schema)  # other layouts' columns are nulls
        with pa.OSFile(str(hf / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table, max_chunksize=2)
    (hf / "state.json").write_text(json.dumps({"_data_files": names, "_fingerprint": "x", "_split": None}))
    (hf / "dataset_info.json").write_text("{}")
    res = ingest([hf], tmp_path / "out", progress=False)
    assert (res.read, res.accepted) == (9, 9)
    t = _table(tmp_path / "out")
    assert t["line"].to_pylist() == list(range(1, 10))
    assert [json.loads(m) for m in t["messages"].to_pylist()] == _hf_expected(recs)


def test_unreadable_inputs_are_pool_errors(ray_address, tmp_path):
    with pytest.raises(PoolError, match="no such file"):
        ingest([tmp_path / "missing.jsonl"], tmp_path / "out", progress=False)
    (tmp_path / "plain").mkdir()
    with pytest.raises(PoolError, match="not a Hugging Face save_to_disk"):
        ingest([tmp_path / "plain"], tmp_path / "out", progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"messages": []}, {', encoding="utf-8")
    with pytest.raises(Exception, match="not a valid JSON array"):
        ingest([bad], tmp_path / "out", progress=False)


@pytest.mark.parametrize("bucket_rows", [2, 1000])
def test_duplicate_check_is_global_and_first_occurrence_wins(ray_address, tmp_path, bucket_rows):
    """Ids repeated within a unit, across units and across files: every later occurrence is a reject,
    whatever the number of hash buckets the check is cut into (2 rows a bucket: many buckets)."""
    uids = [3, 1, 3, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    lines = [json.dumps({"meta": {"uid": f"u{u}"}, **_record(i)}) for i, u in enumerate(uids)]
    a.write_text("\n".join(lines[:12]) + "\n", encoding="utf-8")
    b.write_text("\n".join(lines[12:]) + "\n", encoding="utf-8")
    res = ingest([a, b], tmp_path / "out", id_field="meta.uid", progress=False, block_bytes=300,
                 bucket_rows=bucket_rows)
    seen: dict[int, int] = {}
    want_ids, want_rejects = [], []
    for i, u in enumerate(uids):  # the naive rule, in input order
        f, line = (a, i + 1) if i < 12 else (b, i - 11)
        if u in seen:
            j = seen[u]
            ff, fl = (a, j + 1) if j < 12 else (b, j - 11)
            want_rejects.append((str(f), line, f"duplicate id: 'u{u}' (first at {ff}:{fl})"))
        else:
            seen[u] = i
            want_ids.append(f"u{u}")
    assert _table(tmp_path / "out")["id"].to_pylist() == want_ids
    assert [(r["file"], r["line"], r["reason"]) for r in _rejects(res.rejects_path)] == want_rejects
    assert (res.read, res.accepted, res.reasons) == (20, len(want_ids), {"duplicate id": len(want_rejects)})


def test_blocks_keep_every_task_slot_busy_and_cover_the_input(tmp_path):
    """The plan cuts a pool into a multiple of the task slots once it fills one wave (so the last
    wave leaves no core idle), one block per slot for a smaller pool down to an eighth of a block,
    never a tiny pool into pieces; the blocks tile each file in order."""
    import math
    import random

    from mig_ray.pools.ingest import even_blocks, plan_units
    from mig_ray.storage import location

    rng = random.Random(3)
    for _ in range(2000):
        total, per, slots = rng.randint(0, 10**7), rng.randint(1, 10**6), rng.randint(1, 64)
        blocks = even_blocks(total, per, slots)
        natural = max(1, math.ceil(total / per))
        if natural >= slots:
            assert blocks % slots == 0 and natural <= blocks < natural + slots
        else:
            assert natural <= blocks <= slots and (blocks == 1 or total / blocks >= per // 8)
    pool = tmp_path / "p.jsonl"
    pool.write_bytes(b"".join(orjson.dumps(_record(i)) + b"\n" for i in range(500)))
    for slots in (1, 3, 4):
        units = plan_units([location(pool)], 3000, 10, slots)
        assert len(units) % slots == 0
        assert [(u.start, u.end) for u in units] == list(zip([0] + [u.end for u in units[:-1]],
                                                             [u.end for u in units], strict=True))
        assert units[-1].end == pool.stat().st_size and units[-1].last


def test_a_file_listed_twice_numbers_each_listing_from_line_one(ray_address, tmp_path):
    """The second listing of the same file is a second input: its records are duplicates of the
    first's and their rejects name the file's own lines, 1 to n, not n+1 to 2n; both listings
    weigh the same in the plan."""
    from mig_ray.pools.ingest import even_blocks, plan_units
    from mig_ray.storage import location

    pool = tmp_path / "p.jsonl"
    pool.write_bytes(b"".join(orjson.dumps({"id": f"r{i}", **_record(i)}) + b"\n" for i in range(7)))
    res = ingest([pool, pool], tmp_path / "out", id_field="id", progress=False)
    assert (res.read, res.accepted, res.rejected) == (14, 7, 7)
    rows = _rejects(res.rejects_path)
    assert [r["line"] for r in rows] == list(range(1, 8))
    assert all(r["file"] == str(pool) and r["reason"].startswith("duplicate id") for r in rows)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"".join(orjson.dumps({"id": f"r{i}", **_record(i)}) + b"\n" for i in range(40)))
    units = plan_units([location(big), location(big)], 1000, 10, 4)
    assert len(units) == even_blocks(2 * big.stat().st_size, 1000, 4)
    assert sum(u.listing == 0 for u in units) == sum(u.listing == 1 for u in units)
