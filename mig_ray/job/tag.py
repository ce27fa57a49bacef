"""Stage `tag`: labels for every ingested record from the job's tagger (embedding or vLLM), run
by Ray Data actors into the annotation cache, which a re-run and later nights reuse. A job whose
labels are in the data (`kind: from-data`) has nothing to do here."""

from __future__ import annotations

import io

import numpy as np

from mig_ray.job.annotators import run_annotator
from mig_ray.job.context import RunContext
from mig_ray.job.stages import StageResult
from mig_ray.job.stages import fingerprint as digest
from mig_ray.pools.fields import RELEASED_LABELS
from mig_ray.storage import write_atomic

NAME = "tag"
LABEL_EMBEDDINGS = "label_embeddings.npz"


def fingerprint(ctx: RunContext) -> str:
    spec = ctx.job.annotate.tagger
    return digest("tag", ctx.fingerprints["dedup"], spec.kind, spec.labels_field,
                  None if ctx.tagger is None else ctx.tagger.identity())


def run(ctx: RunContext) -> StageResult:
    if ctx.tagger is None:
        field = ctx.job.annotate.tagger.labels_field or RELEASED_LABELS
        return StageResult({"from_data": 1}, {"source": f"from the data: {field}"})
    result = run_annotator(ctx.job, ctx.record_source(), "tags", ctx.tagger,
                           ctx.job.annotate.tagger.resources)
    save_vocab_embeddings(ctx)
    return result


def save_vocab_embeddings(ctx: RunContext) -> None:
    """The embedding tagger embedded its whole vocabulary with the graph's model already: keep
    those as the graph's label embeddings, so the select stage loads no model."""
    from mig_ray.annotate.embedding_tagger import EmbeddingTaggerConfig, cached_vocab_embeddings
    from mig_ray.embeddings import DEFAULT_MODEL

    cfg = ctx.tagger.config if ctx.tagger is not None else None
    g = ctx.job.graph
    if not isinstance(cfg, EmbeddingTaggerConfig) or g.label_embeddings is not None:
        return
    same = (cfg.model in ("", DEFAULT_MODEL) and g.embedding_model in ("", DEFAULT_MODEL)) or \
        cfg.model == g.embedding_model
    vocab = cfg.vocabulary_tags()
    emb = cached_vocab_embeddings(cfg, vocab) if same else None
    if emb is not None:
        buf = io.BytesIO()
        np.savez(buf, labels=np.array(vocab), embeddings=emb)
        write_atomic(ctx.stage_dir(NAME) / LABEL_EMBEDDINGS, buf.getvalue())
