"""Stage `score`: a quality score for every ingested record from the job's vLLM scorers (DEITA
quality x complexity), into the annotation cache. A score field of the data or a constant needs
no work here: the assemble stage reads it."""

from __future__ import annotations

from mig_ray.job.annotators import run_annotator
from mig_ray.job.context import RunContext
from mig_ray.job.stages import StageResult
from mig_ray.job.stages import fingerprint as digest
from mig_ray.pools.fields import RELEASED_SCORE

NAME = "score"


def score_source(ctx: RunContext) -> str:
    """Where the scores come from, for the summary table: `field: annotation.deita (...)`."""
    spec = ctx.job.annotate.scorer
    if spec.kind == "constant":
        return f"constant: {spec.value:g} for every sample"
    if spec.kind == "field":
        return f"field: {spec.field}" if spec.field else \
            f"field: {RELEASED_SCORE} (mean over turns of quality x complexity)"
    return f"{spec.kind} scorer"


def fingerprint(ctx: RunContext) -> str:
    return digest("score", ctx.fingerprints["dedup"],
                  ctx.job.annotate.scorer.model_dump(exclude={"resources"}),
                  None if ctx.scorer is None else ctx.scorer.identity())


def run(ctx: RunContext) -> StageResult:
    if ctx.scorer is None:
        return StageResult({ctx.job.annotate.scorer.kind: 1}, {"source": score_source(ctx)})
    return run_annotator(ctx.job, ctx.record_source(), "score", ctx.scorer,
                         ctx.job.annotate.scorer.resources)
