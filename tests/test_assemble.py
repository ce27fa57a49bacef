"""The job's assemble step on one ingest part, against a per-row computation written here."""

from __future__ import annotations

import random

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mig_ray.job.assemble import AssembleSpec, assemble_part
from mig_ray.pools.ingest import SCHEMA


def _part(path, rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        labels = rng.choice([None, [], ["a"], ["b", "a"], ["c"] * 3])
        score = rng.choice([None, 0.0, 1.5, float("nan"), -2.0])
        rows.append({"id": f"id{i}", "position": 10 + i, "file": "pool.jsonl", "line": 3 + i,
                     "messages": "[]", "record": "{}", "labels": labels, "score": score})
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return rows


@pytest.mark.parametrize("scorer", ["field", "constant"])
def test_assemble_from_the_parts_columns_keeps_and_explains_each_row(tmp_path, scorer):
    """Released annotations (labels and score columns of the part) or a constant score: each row
    is kept with its labels and score in order, or written to the unselectable file with the
    reason (missing labels before missing score), counted by reason."""
    rows = _part(tmp_path / "part.parquet", random.Random(5), 400)
    (tmp_path / "pool").mkdir()
    (tmp_path / "bad").mkdir()
    spec = AssembleSpec(labels_field=None, tags=None, scorer=scorer, score_field=None, constant=2.5,
                        score=None, pool=str(tmp_path / "pool"), unselectable=str(tmp_path / "bad"))
    got = assemble_part(3, str(tmp_path / "part.parquet"), spec)

    keep, bad = [], []
    for r in rows:
        score = 2.5 if scorer == "constant" else r["score"]
        if r["labels"] is None:
            bad.append({"id": r["id"], "file": r["file"], "line": r["line"],
                        "reason": "missing labels: annotation.instag.content"})
        elif score is None:
            bad.append({"id": r["id"], "file": r["file"], "line": r["line"],
                        "reason": "missing score: annotation.deita"})
        else:
            keep.append((r["id"], r["labels"], repr(score), r["position"]))  # repr: nan equals nan
    pool = pq.read_table(tmp_path / "pool" / "part-000003.parquet").to_pylist()
    assert [(p["id"], p["labels"], repr(p["score"]), p["position"]) for p in pool] == keep
    written = (tmp_path / "bad" / "part-000003.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x) for x in written] == bad
    reasons = got.reasons
    assert got.ingested == 400 and got.selectable == len(keep) and 0 < len(bad) == sum(reasons.values())
    assert reasons.get("missing labels", 0) == sum(b["reason"].startswith("missing labels") for b in bad)
