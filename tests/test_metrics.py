"""The stages' progress read back from the local Ray's Prometheus export (the metrics agent of the
node, at the port Ray reports; the session's Ray runs without the dashboard, and the export works)."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections import Counter

import numpy as np
import orjson
import pyarrow as pa
import ray
import ray.cloudpickle
from test_distributed import config, write_pool

from mig_ray.annotate.resources import ActorResources
from mig_ray.annotate.runner import annotate
from mig_ray.pools.ingest import ingest
from mig_ray.pools.layouts import messages_json
from mig_ray.selection.run import run_select

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake tagger below

SAMPLE = re.compile(r"^ray_mig_ray_(\w+)_total\{(.*)\} ([0-9.e+-]+)$")


def export_url() -> str:
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def scrape() -> Counter:
    """Every mig_ray counter summed over the processes that reported it, keyed by (name, kind/stage)."""
    text = urllib.request.urlopen(export_url(), timeout=10).read().decode()
    out: Counter = Counter()
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels.get("kind") or labels.get("stage") or "")] += float(m.group(3))
    return out


def settled(seconds: float = 120) -> Counter:
    """The export once counts of earlier work in this session (other tests' workers) have all
    arrived: unchanged over two report intervals. A base taken before that would count their late
    reports as this test's growth."""
    window = 2 * max(ray._config.metrics_report_interval_ms(), 1000) / 1000 + 1
    deadline = time.monotonic() + seconds
    last, since = scrape(), time.monotonic()
    while time.monotonic() - since < window:
        assert time.monotonic() < deadline, "the metrics export never settled"
        time.sleep(0.5)
        now = scrape()
        if now != last:
            last, since = now, time.monotonic()
    return last


def wait_for(want: Counter, base: Counter, seconds: float = 60) -> Counter:
    """Poll the export until every counter in `want` has grown by its amount (workers report every
    few seconds), or the deadline passes; returns the growth seen."""
    deadline = time.monotonic() + seconds
    while True:
        now = scrape()
        grown = Counter({k: now[k] - base[k] for k in want})
        if grown == want or time.monotonic() > deadline:
            return grown
        time.sleep(0.2)


class FailingTagger:
    """Labels every record; ids ending in 7 fail."""

    def __init__(self, cfg: dict) -> None:
        pass

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ids = [str(x) for x in batch["id"]]
        bad = [i.endswith("7") for i in ids]
        return pa.table({"id": ids, "labels": [[] if b else ["x"] for b in bad],
                         "status": ["failed" if b else "ok" for b in bad],
                         "error": ["boom" if b else "" for b in bad], "calls": [1] * len(ids)})


class Ident(dict):
    def identity(self) -> dict:
        return dict(self)


def test_stage_counts_reach_the_metrics_export(tmp_path, ray_address):
    rng = np.random.default_rng(5)
    base = settled()
    # ingest: random records, some ids repeated, some lines broken
    ids = [f"q{int(i)}" for i in rng.integers(0, 40, size=60)]
    lines, broken = [], 0
    for i, rid in enumerate(ids):
        if rng.random() < 0.1:
            lines.append(b"{broken")
            broken += 1
        lines.append(orjson.dumps({"id": rid, "messages": [{"role": "user", "content": f"text {i}"},
                                                           {"role": "assistant", "content": "ok"}]}))
    (tmp_path / "pool.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = ingest([tmp_path / "pool.jsonl"], tmp_path / "ingest", progress=False)
    distinct = len(set(ids))
    part_bytes = sum(p.stat().st_size for p in (tmp_path / "ingest").glob("part-*.parquet"))
    dupes = len(ids) - distinct
    want = Counter({("records_ingested", ""): distinct, ("records_rejected", ""): broken + dupes,
                    ("duplicates_dropped", ""): dupes, ("bytes_written", "ingest"): part_bytes})
    assert result.accepted == distinct
    # annotate: 20 records, then 25 of which 20 are cached
    items = [{"id": f"r{i}", "messages": messages_json([{"role": "user", "content": f"q {i}"}])}
             for i in range(25)]
    res = ActorResources(concurrency=1, num_cpus=0.5, batch_size=8)
    for first in (20, 25):
        annotate(ray.data.from_items(items[:first]), FailingTagger, Ident(m=1), tmp_path / "cache", res,
                 progress=False)
    want[("records_annotated", "tags")] = 25
    want[("annotations_failed", "tags")] = sum(it["id"].endswith("7") for it in items)
    want[("records_cached", "tags")] = 20
    # sharded selection: every committed round and pick
    pool, emb, *_ = write_pool(tmp_path, 9, n=150, n_labels=25)
    cfg = config(tmp_path, pool, emb, "sel", n=60, shards=2, batch=16, ray_address=ray_address)
    summary = run_select(cfg)
    picks = len(cfg.out.with_name("sel.manifest.jsonl").read_text().splitlines())
    want[("rounds_committed", "")] = summary["greedy"]["rounds"]
    want[("picks_committed", "")] = picks
    assert picks == 60 and 0 < summary["greedy"]["rounds"] < 60
    assert wait_for(want, base) == want, json.dumps(sorted(want.items()))
