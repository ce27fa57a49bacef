"""The job's driver never collects a per-record column: ingest, the duplicate check, assemble and
write run as Ray tasks over blocks, and only per-block summaries come back.

A spy in the driver process (the real functions still run) counts the rows of every Parquet read
from the job's ingest or assemble folders, and the rows of every Ray Data collection. With
`shards: 2` the select stage's shard actors read the assembled pool themselves, so no stage of the
job has a reason to read any of those rows on the driver.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import ray.data
from test_job import small_job
from test_job_outputs_pinned import _pool

from mig_ray.job.config import load_job
from mig_ray.job.pipeline import run_job


class Spy:
    def __init__(self, out: Path) -> None:
        self.watched = (str(out / "ingest"), str(out / "assemble"))
        self.parquet_rows: list[tuple[str, int]] = []
        self.collected: list[int] = []

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
    assert summary["counts"]["ingested"] == 120 and summary["counts"]["selected"] == 25
    assert spy.parquet_rows == []
    # one row per input unit, hash bucket, part or final write task: two files, so at most 2
    assert spy.collected and max(spy.collected) <= 2, spy.collected
