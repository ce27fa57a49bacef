"""The annotation runner on Ray Data and its cache: incremental runs, failures, atomic parts."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
from fixtures import DATA

from mig_ray.annotate import cache
from mig_ray.annotate.resources import ActorResources
from mig_ray.annotate.runner import annotate, load_annotations
from mig_ray.annotate.static_tagger import StaticTagger
from mig_ray.pools.ingest import ingest
from mig_ray.pools.layouts import messages_json

# the fake annotators below live in this test module, which Ray workers cannot import
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ONE_ACTOR = ActorResources(concurrency=1, num_cpus=0.5, batch_size=16)


class FakeScorer:
    """Scores by id; ids ending in 7 fail after a retry (two calls). Counts constructions per actor."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(x) for x in batch["id"]]
        bad = [i.endswith("7") for i in ids]
        return {"id": np.array(ids, dtype=object),
                "score": np.array([np.nan if b else float(len(i)) for i, b in zip(ids, bad, strict=True)]),
                "status": np.array(["failed" if b else "ok" for b in bad], dtype=object),
                "error": np.array(["no score token" if b else "" for b in bad], dtype=object),
                "calls": np.array([2 if b else 1 for b in bad]),
                # an extra column whose type Arrow infers as list<null> in the batch holding r0
                "turns": np.array([[] if "r0" in ids else [1.0] for _ in ids] + [None], dtype=object)[:-1]}


class DroppingTagger:
    def __init__(self, cfg: dict) -> None:
        pass

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ids = list(batch["id"])[1:]
        return pa.table({"id": ids, "labels": [["x"]] * len(ids), "status": ["ok"] * len(ids),
                         "error": [""] * len(ids), "calls": [1] * len(ids)})


class Ident(dict):
    def identity(self) -> dict:
        return dict(self)


def _items(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"r{i}", "messages": messages_json([{"role": "user", "content": f"question {i}"}])}
            for i in range(start, start + n)]


def test_rerun_after_adding_records_annotates_only_the_new_ones(ray_address, tmp_path, static_config,
                                                                 static_model):
    """A real tagger (the static one on the tiny model: the runner's caching does not depend on which
    tagger runs; the MiniLM tagger runs through `annotate` in every job test on the demo job)."""
    lines = (DATA / "alpaca_seed_tasks_175.jsonl").read_text(encoding="utf-8").splitlines(True)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(lines[:30]), encoding="utf-8")
    ingest([pool], tmp_path / "ingest", progress=False)
    cfg = static_config
    res = ActorResources(concurrency=1, num_cpus=1, batch_size=32)

    first = annotate(tmp_path / "ingest", StaticTagger, cfg, tmp_path / "cache", res, progress=False,
                     part_rows=12)
    assert (first.total, first.cached, first.annotated, first.failed, first.model_calls) == (30, 0, 30, 0, 30)
    assert first.parts_written >= 3  # every 12 results became a part
    got = load_annotations(tmp_path / "cache", "tags", cfg)
    assert sorted(got["id"].to_pylist()) == sorted(f"seed_task_{i}" for i in range(30))
    assert sum(got["calls"].to_pylist()) == 30
    before = dict(zip(got["id"].to_pylist(), got["labels"].to_pylist(), strict=True))

    pool.write_text("".join(lines[:50]), encoding="utf-8")  # the pool grew by 20 records
    ingest([pool], tmp_path / "ingest", progress=False)
    second = annotate(tmp_path / "ingest", StaticTagger, cfg, tmp_path / "cache", res, progress=False)
    assert (second.total, second.cached, second.annotated, second.model_calls) == (50, 30, 20, 20)
    assert second.identity_hash == first.identity_hash
    got = load_annotations(tmp_path / "cache", "tags", cfg)
    assert got.num_rows == 50 and sum(got["calls"].to_pylist()) == 50
    assert all(before[i] == labels for i, labels in zip(got["id"].to_pylist(), got["labels"].to_pylist(),
                                                         strict=True) if i in before)
    new = load_annotations(tmp_path / "cache", "tags", cfg.identity(), ids=["seed_task_45", "nope"])
    assert new["id"].to_pylist() == ["seed_task_45"] and new["status"].to_pylist() == ["ok"]

    third = annotate(tmp_path / "ingest", StaticTagger, cfg, tmp_path / "cache", res, progress=False)
    assert (third.cached, third.annotated, third.model_calls, third.parts_written) == (50, 0, 0, 0)


def test_failures_are_cached_counted_and_not_retried(ray_address, tmp_path):
    ds = ray.data.from_items(_items(30), override_num_blocks=3)
    cfg = Ident(model="fake", version=1)
    stats = annotate(ds, FakeScorer, cfg, tmp_path, ONE_ACTOR, kind="score", progress=False)
    assert (stats.total, stats.annotated, stats.failed, stats.model_calls) == (30, 30, 3, 33)
    got = load_annotations(tmp_path, "score", cfg)
    rows = {r["id"]: r for r in got.to_pylist()}
    assert rows["r17"]["status"] == "failed" and np.isnan(rows["r17"]["score"])
    assert rows["r12"]["score"] == 3.0 and rows["r12"]["error"] == ""
    assert rows["r0"]["turns"] == [] and got.schema.field("turns").type == pa.list_(pa.float64())
    grown = ray.data.from_items(_items(40), override_num_blocks=2)
    again = annotate(grown, FakeScorer, cfg, tmp_path, ONE_ACTOR, kind="score", progress=False)
    assert (again.cached, again.annotated, again.failed, again.model_calls) == (30, 10, 1, 11)
    other = annotate(grown, FakeScorer, Ident(model="fake", version=2), tmp_path, ONE_ACTOR, kind="score",
                     progress=False)
    assert other.annotated == 40 and other.identity_hash != stats.identity_hash
    ident = json.loads((tmp_path / "score" / stats.identity_hash / "identity.json").read_text())
    assert ident == {"kind": "score", "identity": {"model": "fake", "version": 1}}


def test_an_annotator_that_loses_rows_stops_the_run(ray_address, tmp_path):
    with pytest.raises(Exception, match="do not match its input batch"):
        annotate(ray.data.from_items(_items(5)), DroppingTagger, Ident(v=1), tmp_path, ONE_ACTOR,
                 progress=False)
    assert cache.parts(cache.cache_folder(tmp_path, "tags", Ident(v=1))) == []


def test_parts_are_whole_or_absent(tmp_path, monkeypatch):
    folder = tmp_path / "tags" / "x"
    folder.mkdir(parents=True)
    table = pa.table({"id": ["a", "b"], "status": ["ok", "ok"], "error": ["", ""], "calls": [1, 1],
                      "labels": [["t"], ["u"]]})

    def killed(t, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # the writer dies mid-file

    monkeypatch.setattr(cache.pq, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.write_part(table, folder)
    monkeypatch.undo()
    assert cache.parts(folder) == [] and len(list(folder.glob(".part-*.tmp"))) == 1
    assert len(cache.scan_ids(folder, "tags")[0]) == 0
    p = cache.write_part(table, folder)
    assert pq.read_table(p).equals(table)
    assert cache.scan_ids(folder, "tags")[0].tolist() == [b"a", b"b"]


def test_cache_lookups_and_duplicates(tmp_path):
    ids = np.array([b"r1", b"r10", b"r3"], dtype="S")
    assert cache.contains(np.sort(ids), np.array([b"r10", b"r2", b"r3", b"zz"], dtype="S")).tolist() == [
        True, False, True, False]
    ident = Ident(m=1)
    folder = cache.cache_folder(tmp_path, "score", ident)
    folder.mkdir(parents=True)
    for score in (1.0, 2.0):  # two concurrent runs wrote the same id: the first part wins
        row = {"id": ["a"], "status": ["ok"], "error": [""], "calls": [1], "score": [score]}
        cache.write_part(pa.table(row), folder)
    got = cache.load_annotations(tmp_path, "score", ident)
    assert got.num_rows == 1
    assert cache.load_annotations(tmp_path, "score", Ident(m=2)).num_rows == 0
    with pytest.raises(ValueError, match="unknown annotation kind"):
        cache.cache_folder(tmp_path, "quality", ident)


def test_the_caches_ids_never_reach_the_driver(ray_address, tmp_path, monkeypatch):
    """Which records the cache already holds is decided where the data is: the cache's ids are
    read in a task and handed to the filtering tasks through the object store, so a cache of 10^8
    ids costs the driver nothing. The driver's own `scan_ids` is made to fail to prove it."""
    import mig_ray.annotate.runner as runner

    cfg = Ident(model="fake", version=2)
    first = annotate(ray.data.from_items(_items(20), override_num_blocks=2), FakeScorer, cfg, tmp_path,
                     ONE_ACTOR, kind="score", progress=False)
    assert first.annotated == 20

    def on_the_driver(*a, **k):
        raise AssertionError("the cache's ids were read on the driver")

    monkeypatch.setattr(runner, "scan_ids", on_the_driver)
    monkeypatch.setattr(cache, "scan_ids", on_the_driver)
    second = annotate(ray.data.from_items(_items(30), override_num_blocks=3), FakeScorer, cfg, tmp_path,
                      ONE_ACTOR, kind="score", progress=False)
    assert (second.total, second.cached, second.annotated) == (30, 20, 10)
    assert sorted(load_annotations(tmp_path, "score", cfg)["id"].to_pylist()) == sorted(
        x["id"] for x in _items(30))


def test_the_stage_shows_one_bar_of_records_with_rate_and_eta(ray_address, tmp_path, capsys):
    """progress=True: one bar over the new records (not blocks or parts), fed by the actors' counts:
    it ends at new/new whatever the batch and part sizes, with a rate in records/s; cached records
    are not counted."""
    rng = np.random.default_rng(5)
    n_old, n_new = int(rng.integers(5, 30)), int(rng.integers(20, 90))
    res = ActorResources(concurrency=2, num_cpus=0.5, batch_size=int(rng.integers(3, 17)))
    annotate(ray.data.from_items(_items(n_old)), FakeScorer, Ident(v=3), tmp_path, res, kind="score",
             progress=False)
    capsys.readouterr()
    grown = ray.data.from_items(_items(n_old + n_new), override_num_blocks=3)
    stats = annotate(grown, FakeScorer, Ident(v=3), tmp_path, res, kind="score", progress=True,
                     part_rows=int(rng.integers(4, 40)))
    assert stats.annotated == n_new
    err = capsys.readouterr().err
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("annotate score")]
    assert bars, err
    assert f"{n_new}/{n_new}" in bars[-1] and "rec/s" in bars[-1], bars[-1]
    assert not any(f"/{n_old + n_new} " in b for b in bars)  # the total is the new records only
