"""The `compare:` step of a job: after `select`, on the job's assembled pool and graph, with `mig`
taken from the select stage's manifest. Its output (OUTDIR/compare/) is what `mig-ray report OUTDIR`
shows beside the selection; a re-run with the same selection and settings skips it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mig_ray.compare.run import COMPARE_FILE, CompareOptions, Messages, run_compare
from mig_ray.job.config import resolve_path
from mig_ray.job.stages import StageDir, fingerprint


def _ingested_messages(pipe: Any) -> Messages:
    """Messages of the asked ids, read part by part from the ingest stage (only those rows kept)."""
    def get(positions: np.ndarray, ids: list[str]) -> list[list[dict] | None]:
        wanted = pa.array(ids, pa.string())
        by_id: dict[str, str] = {}
        for part in pipe._ingest_parts():
            table = pq.read_table(part, columns=["id", "messages"])
            table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
            by_id.update(zip(table.column("id").to_pylist(), table.column("messages").to_pylist(),
                             strict=True))
        return [orjson.loads(by_id[i]) if i in by_id else None for i in ids]

    return get


def run_job_compare(pipe: Any) -> dict[str, Any]:
    """Run (or skip) the job's comparison; returns its compare.json path and the methods run."""
    spec = pipe.job.compare
    stage = StageDir(pipe.out, "compare")
    fp = fingerprint("compare", pipe.fingerprints["select"], spec.model_dump())
    stats = stage.done(fp)
    if stats is None:
        path = stage.reset()
        cfg = pipe._select_config(path).model_copy(update={"out": path / "mig" / "selected.jsonl",
                                                          "previous_manifest": None})
        opts = CompareOptions(tuple(spec.methods), spec.seed,
                              resolve_path(spec.sample_embeddings) if spec.sample_embeddings else None,
                              None, spec.embed_samples, spec.deita_threshold)
        result = run_compare(cfg, path, opts, _ingested_messages(pipe),
                             mig_manifest=pipe.out / "select" / "selected.manifest.jsonl")
        stats = {"compare": str(Path(path) / COMPARE_FILE), "methods": list(result["methods"]),
                 "skipped": result["skipped"]}
        stage.finish(fp, stats)
    return stats
