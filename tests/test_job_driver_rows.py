"""The job's driver never collects a per-record column: ingest, the duplicate check, assemble and
write run as Ray tasks over blocks, and only per-block summaries come back.

A spy in the driver process (the real functions still run) counts the rows of every Parquet read
from the job's ingest or assemble folders, the rows of every Ray Data collection, and the size of
everything `ray.get` hands the driver outside the select stage. With `shards: 2` the select
stage's shard actors read the assembled pool themselves and, its ids being unique, send no id
hashes back, so no stage of the job has a reason to read any of those rows on the driver. The
pool (3,000 records in two files) is large enough that any per-record column of one part is far
over the size a per-part summary needs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import ray
import ray.data
from test_job import small_job

from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job

SUMMARY_BYTES = 2048  # a per-part summary is well under this; 1,500 ids of a part are ~ 20 KB


def _pool(tmp: Path, n: int = 3000) -> tuple[list[Path], Path]:
    rng = np.random.default_rng(3)
    tags = [f"tag{j:03d}" for j in range(40)]
    rows = [orjson.dumps({"id": f"rec-{i:06d}", "messages": [{"role": "user", "content": f"question {i}"},
                                                               {"role": "assistant", "content": "an answer"}],
                          "meta": {"tags": [tags[t] for t in rng.integers(0, 40, 3)],
                                   "score": float(rng.uniform(1, 6))}}) for i in range(n)]
    files = [tmp / "a.jsonl", tmp / "b.jsonl"]
    files[0].write_bytes(b"\n".join(rows[: n // 2]) + b"\n")
    files[1].write_bytes(b"\n".join(rows[n // 2:]) + b"\n")
    npz = tmp / "labels.npz"
    np.savez(npz, labels=np.array(tags), embeddings=rng.normal(size=(40, 8)).astype(np.float32))
    return files, npz


class Spy:
    def __init__(self, out: Path) -> None:
        self.watched = (str(out / "ingest"), str(out / "assemble"))
        self.parquet_rows: list[tuple[str, int]] = []
        self.collected: list[int] = []
        self.got_bytes: list[int] = []
        self.shard_loads: list[int] = []
        self.in_select = False

    def install(self, monkeypatch) -> None:
        read_table, pf_read, pf_group = pq.read_table, pq.ParquetFile.read, pq.ParquetFile.read_row_group
        take_all = ray.data.Dataset.take_all
        spy = self

        def note(source, table):
            if any(str(source).startswith(w) for w in spy.watched):
                spy.parquet_rows.append((str(source), table.num_rows))
            return table

        def watched_read_table(source, *a, **k):
            return note(source, read_table(source, *a, **k))

        def watched_read(self, *a, **k):
            return note(getattr(self, "_mig_path", ""), pf_read(self, *a, **k))

        def watched_group(self, *a, **k):
            return note(getattr(self, "_mig_path", ""), pf_group(self, *a, **k))

        init = pq.ParquetFile.__init__

        def watched_init(self, source, *a, **k):
            init(self, source, *a, **k)
            self._mig_path = str(source)

        def watched_take_all(self, *a, **k):
            rows = take_all(self, *a, **k)
            spy.collected.append(len(rows))
            return rows

        get = ray.get

        def watched_get(refs, *a, **k):
            out = get(refs, *a, **k)
            for x in out if isinstance(refs, list) else [out]:
                if not spy.in_select:
                    spy.got_bytes.append(len(pickle.dumps(x)))
                elif isinstance(x, dict) and "hashes" in x:  # a shard actor's answer to `load`
                    spy.shard_loads.append(len(pickle.dumps(x)))
            return out

        from mig_ray.job import select

        run_select = select.run

        def watched_select(ctx):
            spy.in_select = True
            try:
                return run_select(ctx)
            finally:
                spy.in_select = False

        monkeypatch.setattr(ray, "get", watched_get)
        monkeypatch.setattr(select, "run", watched_select)
        monkeypatch.setattr(pq, "read_table", watched_read_table)
        monkeypatch.setattr(pq.ParquetFile, "__init__", watched_init)
        monkeypatch.setattr(pq.ParquetFile, "read", watched_read)
        monkeypatch.setattr(pq.ParquetFile, "read_row_group", watched_group)
        monkeypatch.setattr(ray.data.Dataset, "take_all", watched_take_all)


def test_no_stage_collects_per_record_rows_on_the_driver(tmp_path, ray_address, monkeypatch):
    inputs, npz = _pool(tmp_path)
    out = tmp_path / "out"
    job = small_job(tmp_path, inputs[0], out, **{
        "input.paths": [str(p) for p in inputs],
        "annotate.tagger": {"kind": "from-data", "labels_field": "meta.tags"},
        "annotate.scorer": {"kind": "field", "field": "meta.score"},
        "graph.label_embeddings": str(npz), "selection.n": 25, "selection.shards": 2})
    spy = Spy(out)
    spy.install(monkeypatch)
    summary = run_job(load_job(job))
    assert summary["counts"]["ingested"] == 3000 and summary["counts"]["selected"] == 25
    assert spy.parquet_rows == []
    # one small summary per input unit, hash bucket, part or write task
    assert spy.got_bytes and max(spy.got_bytes) <= SUMMARY_BYTES, spy.got_bytes
    assert all(n <= 2 for n in spy.collected), spy.collected
    # the assembled pool's ids are unique (ingest dropped the duplicates): the shards send no id
    # hashes or lines for a duplicate check, only their counts
    assert len(spy.shard_loads) == 2 and max(spy.shard_loads) <= SUMMARY_BYTES, spy.shard_loads
