"""The `memory` resource of shard actors and annotator actors reaches Ray: the scheduler reserves it,
so a node takes no more actors than its memory holds (cluster/README.md, "Sizing")."""

from __future__ import annotations

import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.cloudpickle
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from test_distributed import config, manifest_ids, naive_ids, write_pool

from mig_ray.annotate.resources import ActorResources
from mig_ray.annotate.runner import annotate, load_annotations
from mig_ray.pools.layouts import messages_json
from mig_ray.runtime.placement import ShardPlacement
from mig_ray.selection.run import run_select

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake tagger below

POWERS = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3,
          "Ti": 1024**4}


@given(n=st.integers(1, 4096), unit=st.sampled_from(sorted(POWERS)), byte=st.booleans(),
       case=st.sampled_from([str, str.lower, str.upper]))
def test_memory_sizes_read_as_bytes(n, unit, byte, case):
    text = case(f"{n}{unit}{'B' if byte else ''}")
    want = n * POWERS[unit]
    assert ShardPlacement(memory=text).memory == want
    assert ActorResources(memory=text).memory == want
    assert ShardPlacement(memory=want).actor_options()["memory"] == want
    assert ActorResources(memory=text).map_batches_kwargs()["memory"] == want


@pytest.mark.parametrize("bad", ["16 apples", "-1Gi", "Gi", 0, "0"])
def test_bad_memory_sizes_are_refused(bad):
    with pytest.raises(ValidationError, match="memory"):
        ShardPlacement(memory=bad)


def test_no_memory_asks_for_none():
    assert "memory" not in ShardPlacement().actor_options()
    assert "memory" not in ActorResources().map_batches_kwargs()


def _reserved() -> float:
    return ray.cluster_resources().get("memory", 0) - ray.available_resources().get("memory", 0)


def test_shard_actors_reserve_their_memory(tmp_path, ray_address):
    """While the selection runs, Ray has reserved shards x memory; the order is unchanged."""
    per_shard, shards = 48 * 2**20, 3
    pool, emb_path, vocab, emb, labels, scores = write_pool(tmp_path, 11, n=120, n_labels=20)
    seen: list[float] = []

    def on_round(rnd: int, actors: list) -> None:
        if rnd == 1:
            deadline = time.monotonic() + 30  # the resource view reaches the GCS asynchronously
            while _reserved() != shards * per_shard and time.monotonic() < deadline:
                time.sleep(0.05)
            seen.append(_reserved())

    cfg = config(tmp_path, pool, emb_path, "ray", n=40, shards=shards, batch=0, ray_address=ray_address,
                 shard_placement=ShardPlacement(memory=f"{per_shard // 2**20}MiB"))
    run_select(cfg, on_round=on_round)
    assert seen == [shards * per_shard]
    assert manifest_ids(cfg) == naive_ids(vocab, emb, labels, scores, 40, 0.7)


class MemoryTagger:
    """Labels each record with the memory Ray assigned to this actor."""

    def __init__(self, cfg: dict) -> None:
        self.memory = ray.get_runtime_context().get_assigned_resources().get("memory", 0)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ids = [str(x) for x in batch["id"]]
        n = len(ids)
        return pa.table({"id": ids, "labels": [[str(int(self.memory))]] * n, "status": ["ok"] * n,
                         "error": [""] * n, "calls": [1] * n})


class Ident(dict):
    def identity(self) -> dict:
        return dict(self)


def test_annotator_actors_get_their_memory(tmp_path, ray_address):
    items = [{"id": f"r{i}", "messages": messages_json([{"role": "user", "content": f"q {i}"}])}
             for i in range(12)]
    res = ActorResources(concurrency=2, num_cpus=0.5, batch_size=4, memory="40MiB")
    stats = annotate(ray.data.from_items(items), MemoryTagger, Ident(model="memory"), tmp_path, res,
                     progress=False)
    assert stats.annotated == 12
    got = load_annotations(tmp_path, "tags", Ident(model="memory"))
    assert set(map(tuple, got["labels"].to_pylist())) == {(str(40 * 2**20),)}
