"""Which annotator a job's `annotate:` section names, with its validated options. The tag and
score stages run them; the fingerprints and the annotation cache key use their identity."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mig_ray.errors import JobError
from mig_ray.job.jobfile import JobConfig
from mig_ray.job.stages import StageResult


@dataclass(frozen=True)
class Annotator:
    """An annotator class (a callable class run by Ray Data actors) and its validated config."""

    cls: type
    config: Any

    def identity(self) -> Any:
        """Model, prompt version and parameters: what the cached results depend on."""
        return self.config.identity()


# kind -> (module, annotator class, config class): a new annotator is a module and one line here
TAGGERS = {
    "embedding": ("mig_ray.annotate.embedding_tagger", "EmbeddingTagger", "EmbeddingTaggerConfig"),
    "static": ("mig_ray.annotate.static_tagger", "StaticTagger", "StaticTaggerConfig"),
    "vllm": ("mig_ray.annotate.vllm_tagger", "VLLMTagger", "VLLMTaggerConfig"),
}
SCORERS = {
    "vllm": ("mig_ray.annotate.vllm_scorer", "VLLMScorer", "VLLMScorerConfig"),
}


def config_class(registry: dict[str, tuple[str, str, str]], kind: str) -> type:
    """The options model of an annotator kind (imports its module: vllm ones need vllm's package
    only when they run, not to be described)."""
    module, _, config = registry[kind]
    return getattr(importlib.import_module(module), config)


def _build(registry: dict[str, tuple[str, str, str]], kind: str, options: dict) -> Annotator | None:
    if kind not in registry:
        return None
    module, cls, config = registry[kind]
    mod = importlib.import_module(module)
    return Annotator(getattr(mod, cls), getattr(mod, config)(**options))


def tagger_of(job: JobConfig) -> Annotator | None:
    """The job's tagger (None: labels come from the data)."""
    return _build(TAGGERS, job.annotate.tagger.kind, job.annotate.tagger.options)


def scorer_of(job: JobConfig) -> Annotator | None:
    """The job's scorer (None: a score field of the data, or a constant)."""
    return _build(SCORERS, job.annotate.scorer.kind, job.annotate.scorer.options)


def annotators(job: JobConfig, source: str) -> tuple[Annotator | None, Annotator | None]:
    """The tagger and scorer, their own options validated now, so that a bad key fails before
    anything is written."""
    built = []
    for name, build, registry, kind in (
            ("annotate.tagger.options", tagger_of, TAGGERS, job.annotate.tagger.kind),
            ("annotate.scorer.options", scorer_of, SCORERS, job.annotate.scorer.kind)):
        try:
            built.append(build(job))
        except ValidationError as e:
            keys = ", ".join(config_class(registry, kind).model_fields)
            unknown = f"unknown key (allowed here: {keys}; see docs/job-file.md)"
            raise JobError("; ".join(
                f"{source}: {name}.{'.'.join(map(str, err['loc']))}: "
                + (unknown if err["type"] == "extra_forbidden" else err["msg"])
                for err in e.errors())) from None
        except ImportError as e:
            if (e.name or "").startswith("mig_ray"):
                raise
            raise JobError(f"{source}: {name}: this annotator needs a package that is not installed "
                           f"({e.name}); for vllm: pip install 'mig_ray[vllm]' (CPU) or vllm (GPU)") from None
    return built[0], built[1]


def run_annotator(job: JobConfig, source: Any, kind: str, annotator: Annotator, resources) -> StageResult:
    """Run one annotator over the run's records (`RunContext.record_source()`: the ingest folder, or
    a dataset of it less the dedup stage's dropped rows) into the annotation cache (the tag and
    score stages): only ids the cache lacks for this annotator's identity are annotated."""
    from mig_ray.annotate.runner import annotate

    stats = annotate(source, annotator.cls, annotator.config, job.cache_dir(), resources,
                     kind=kind, progress=job.progress, part_rows=job.annotate.part_rows).to_dict()
    counts = {k: stats[k] for k in ("total", "cached", "annotated", "failed", "model_calls")}
    if stats["quarantined"]:  # unreadable cache parts moved aside; their records were annotated again
        counts["quarantined"] = len(stats["quarantined"])
    return StageResult(counts, {"cache": stats["cache_path"], "identity": annotator.identity(),
                                "quarantined": stats["quarantined"]})
