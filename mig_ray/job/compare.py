"""The job's `compare:` step, run after the summary is written (not a stage of the loop): MIG
beside the baselines on the job's assembled pool and graph, with `mig` taken from the select
stage's manifest and, with the embedding tagger, the sample vectors it cached. Its output
(OUTDIR/compare/) is what `mig-ray report OUTDIR` shows beside the selection; a re-run with the
same selection and settings skips it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mig_ray.compare.run import COMPARE_FILE, CachedVectors, CompareOptions, Messages, run_compare
from mig_ray.job.context import RunContext
from mig_ray.job.jobfile import resolve_path
from mig_ray.job.select import select_config
from mig_ray.job.stages import StageDir, fingerprint
from mig_ray.storage import read_parquet


def _ingested_messages(ctx: RunContext) -> Messages:
    """Messages of the asked ids, read part by part from the ingest stage (only those rows kept)."""
    def get(positions: np.ndarray, ids: list[str]) -> list[list[dict] | None]:
        wanted = pa.array(ids, pa.string())
        by_id: dict[str, str] = {}
        for part in ctx.record_parts():
            table = read_parquet(part, columns=["id", "messages"])
            table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
            by_id.update(zip(table.column("id").to_pylist(), table.column("messages").to_pylist(),
                             strict=True))
        return [orjson.loads(by_id[i]) if i in by_id else None for i in ids]

    return get


def _tagger_vectors(ctx: RunContext) -> CachedVectors | None:
    """The embedding tagger's cached sample vectors of the asked ids (None: the job has no such
    tagger). It embedded every tagged sample already, so deita and kcenter need no model run."""
    from mig_ray.annotate.cache import cache_folder
    from mig_ray.annotate.embedding_tagger import EmbeddingTaggerConfig, cached_sample_vectors
    from mig_ray.annotate.static_tagger import StaticTaggerConfig

    cfg = ctx.tagger.config if ctx.tagger is not None else None
    if not isinstance(cfg, EmbeddingTaggerConfig | StaticTaggerConfig):
        return None
    cache_dir = ctx.job.cache_dir()
    folder = cache_folder(cache_dir, "tags", cfg)

    def get(ids: list[str]) -> tuple[np.ndarray | None, str]:
        emb, missing = cached_sample_vectors(cache_dir, cfg, ids)
        if emb is None:
            return None, (f"the embedding tagger cache {folder} has no sample vector for {missing:,} of "
                          f"{len(ids):,} selectable ids (parts written before mig_ray stored them)")
        static = " distilled to a static model" if isinstance(cfg, StaticTaggerConfig) else ""
        return emb, f"embedding tagger cache {folder} (mean of the user-turn embeddings, {cfg.model}{static})"

    return get


def run(ctx: RunContext) -> dict[str, Any]:
    """Run (or skip) the job's comparison; returns its compare.json path and the methods run."""
    spec = ctx.job.compare
    stage = StageDir(ctx.out, "compare")
    fp = fingerprint("compare", ctx.fingerprints["select"], spec.model_dump())
    stats = stage.done(fp)
    if stats is None:
        path = stage.reset()
        cfg = select_config(ctx).model_copy(update={"out": path / "mig" / "selected.jsonl",
                                                          "previous_manifest": None})
        opts = CompareOptions(tuple(spec.methods), spec.seed,
                              resolve_path(spec.sample_embeddings) if spec.sample_embeddings else None,
                              embed_samples=spec.embed_samples, deita_threshold=spec.deita_threshold,
                              method_options=spec.options)
        result = run_compare(cfg, path, opts, _ingested_messages(ctx),
                             mig_manifest=ctx.out / "select" / "selected.manifest.jsonl",
                             cached_vectors=_tagger_vectors(ctx))
        stats = {"compare": str(Path(path) / COMPARE_FILE), "methods": list(result["methods"]),
                 "skipped": result["skipped"]}
        stage.finish(fp, stats)
    return stats
