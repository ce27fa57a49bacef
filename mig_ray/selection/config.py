"""Typed configuration of a selection run; the resolved values are echoed into the summary."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mig_ray.bundled import resolve_bundled
from mig_ray.core.options import SelectionOptions, graph_defaults
from mig_ray.embeddings import DEFAULT_MODEL
from mig_ray.pools.fields import FieldSpec, checked_path
from mig_ray.runtime.placement import ShardPlacement
from mig_ray.storage import RemotePath, location, user_path


class SelectConfig(SelectionOptions):
    """Everything `mig-ray select` needs: the selection options plus the pool, the output and how
    the pool is read; defaults follow the paper's released runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Path | RemotePath = Field(description="the annotated pool: a file, a folder of Parquet parts, "
                                    "or either on an object store (s3://...)")
    n: int | None = Field(None, gt=0, description="number of samples to select (optional with "
                                                  "budget_tokens: then the budget alone decides)")
    out: Path
    valid_tags: Path | None = None
    embedding_model: str = DEFAULT_MODEL
    label_embeddings: Path | None = None
    embedding_batch_size: int = Field(256, gt=0)
    embedding_cache: bool = Field(True, description="reuse label embeddings from disk: of the valid-tag "
                                                    "list, or of the pool's exact label list")
    embedding_cache_dir: Path | None = Field(None, description="None: ~/.cache/mig_ray/label-embeddings")
    ray_address: str | None = None
    shard_placement: ShardPlacement = Field(default_factory=ShardPlacement,
                                            description="Ray resources and strategy of the shard actors")
    checkpoint: Path | RemotePath | None = Field(
        None, description="where the sharded engine keeps its checkpoint (default <stem>.checkpoint.npz "
                          "beside OUT); a job with its output on an object store keeps it there")
    records: bool = Field(True, description="write the selected records to OUT; a job turns this off: "
                                            "its write stage takes them from the ingest parts")
    ids_unique: bool = Field(False, description="the pool's ids are known to be unique (a job's "
                                                 "assembled pool: ingest dropped the duplicates), so the "
                                                 "sharded engine skips its cross-block duplicate check")
    labels_field: str | None = None
    score_field: str | None = None
    id_field: str | None = None
    strict: bool = False
    progress: bool = True
    force: bool = Field(False, description="replace the outputs of a job (mig-ray run) found at OUT")
    previous_manifest: Path | None = Field(
        None, description="manifest of an earlier selection: its information on this run's graph is "
                          "reported beside this selection's, so the two compare on one measure")

    @field_validator("pool", "checkpoint", mode="before")
    @classmethod
    def _location(cls, v: object) -> object:
        return location(v) if isinstance(v, str) else v

    @field_validator("valid_tags", "label_embeddings", mode="before")
    @classmethod
    def _bundled(cls, v: object) -> object:
        return resolve_bundled(v) if isinstance(v, str | Path) else v  # `bundled:valid_tags_tulu3.json`

    @field_validator("labels_field", "score_field", "id_field", "groups", "cost")
    @classmethod
    def _dotted(cls, v: str | None) -> str | None:
        return checked_path(v)  # a malformed path fails before the read

    def graph_rule(self) -> tuple[float, float | None, str]:
        """The threshold, target degree and the rule that chose them (see graph_defaults)."""
        bundled = self.label_embeddings is None and self.embedding_model == DEFAULT_MODEL
        return graph_defaults(self, bundled)

    def k(self, selectable: int) -> int:
        """The most samples the selection may take: n, or with a budget and no n every selectable one."""
        return selectable if self.n is None else min(self.n, selectable)

    def field_spec(self) -> FieldSpec:
        """Where the pool's records keep what the selection reads (group and cost only when asked)."""
        return FieldSpec(self.labels_field, self.score_field, self.id_field, self.groups,
                         self.cost if self.budget_tokens is not None else None, self.tokenizer)

    @model_validator(mode="after")
    def _size(self) -> SelectConfig:
        if self.n is None and self.budget_tokens is None:
            raise ValueError("give n (how many samples) or budget_tokens (or both)")
        for name in ("quotas", "floors"):
            if self.n is None and any(isinstance(v, float) for v in getattr(self, name).values()):
                raise ValueError(f"{name}: a share of n needs n; give counts with a budget alone")
        return self

    @field_validator("out")
    @classmethod
    def _outputs_not_input(cls, out: Path, info: ValidationInfo) -> Path:
        """Checked on `out` (not the whole model), so the error names the flag: --out."""
        pool = info.data.get("pool")
        if pool is not None:
            for p in output_paths(out).values():
                if user_path(p).resolve() == user_path(pool).resolve():
                    raise ValueError(f"output {p} would overwrite the input pool {pool}")
        return out


def output_paths(out: Path) -> dict[str, Path]:
    """OUT plus its sidecars: <stem>.manifest.jsonl, <stem>.rejects.jsonl, <stem>.summary.json,
    <stem>.labels.json (per-label carriers in the pool and the selection, for the report)."""
    stem = out.with_suffix("")
    return {
        "selected": out,
        "manifest": stem.with_name(stem.name + ".manifest.jsonl"),
        "rejects": stem.with_name(stem.name + ".rejects.jsonl"),
        "summary": stem.with_name(stem.name + ".summary.json"),
        "labels": stem.with_name(stem.name + ".labels.json"),
        "checkpoint": stem.with_name(stem.name + ".checkpoint.npz"),
    }
