"""Typed configuration of a selection run; the resolved values are echoed into the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mig_ray.bundled import resolve_bundled
from mig_ray.distributed.placement import CustomResources, MemoryBytes
from mig_ray.embeddings import DEFAULT_MODEL
from mig_ray.pools.fields import split_path
from mig_ray.storage import RemotePath, location


class ShardPlacement(BaseModel):
    """Where Ray puts the shard actors of a sharded selection. A shard whose node dies is restarted
    by Ray on another node that has these resources, so name resources that more than one node
    carries: a resource only the dead node had leaves its shard nowhere to go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(1.0, ge=0, description="logical CPUs per shard actor")
    custom_resources: CustomResources = Field(
        default_factory=dict, description="custom Ray resources per shard actor (e.g. {selection: 1}: only "
                                          "nodes started with --resources '{\"selection\": N}' take one)")
    spread: bool = Field(True, description="spread the shard actors over the nodes that fit (Ray's SPREAD "
                                           "strategy) rather than packing them onto few")
    memory: MemoryBytes | None = Field(None, gt=0, description="memory Ray reserves per shard actor "
                                       "('16GiB' or bytes): no more shards on a node than its memory holds")

    def actor_options(self) -> dict:
        """Keyword arguments of ray.remote / .options for a shard actor."""
        kw: dict = {"num_cpus": self.num_cpus}
        if self.custom_resources:
            kw["resources"] = dict(self.custom_resources)
        if self.spread:
            kw["scheduling_strategy"] = "SPREAD"
        if self.memory:
            kw["memory"] = self.memory
        return kw


class SelectConfig(BaseModel):
    """Everything `mig-ray select` needs; defaults follow the paper's released runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Path | RemotePath = Field(description="the annotated pool: a file, a folder of Parquet parts, "
                                    "or either on an object store (s3://...)")
    n: int = Field(gt=0, description="number of samples to select")
    out: Path
    valid_tags: Path | None = None
    embedding_model: str = DEFAULT_MODEL
    label_embeddings: Path | None = None
    embedding_batch_size: int = Field(256, gt=0)
    embedding_cache: bool = Field(True, description="reuse embeddings of the valid-tag list from disk")
    embedding_cache_dir: Path | None = Field(None, description="None: ~/.cache/mig_ray/label-embeddings")
    sim_threshold: float = Field(0.9, ge=-1.0, le=1.0)
    target_degree: float | None = Field(None, gt=0)
    prop_weight: float = Field(1.0, ge=0.0)
    propagation: Literal["target", "source"] = "target"
    phi: Literal["pow", "exp"] = "pow"
    phi_a: float = Field(1e-6, gt=0)
    phi_b: float = Field(0.8, gt=0, lt=1)
    phi_alpha: float = Field(1.0, gt=0)
    norm: bool = False
    gain: Literal["gradient", "exact"] = "gradient"
    shards: int = Field(1, ge=1)
    ray_address: str | None = None
    shard_placement: ShardPlacement = Field(default_factory=ShardPlacement,
                                            description="Ray resources and strategy of the shard actors")
    batch: int = Field(256, ge=0, description="candidates per shard per round; 0: one pick per round")
    checkpoint_seconds: float = Field(5.0, ge=0)
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

    @field_validator("labels_field", "score_field", "id_field")
    @classmethod
    def _dotted(cls, v: str | None) -> str | None:
        if v is not None:
            split_path(v)  # a malformed path fails before the read
        return v

    @model_validator(mode="after")
    def _outputs_not_input(self) -> SelectConfig:
        pool = self.pool.expanduser().resolve()
        for p in output_paths(self.out).values():
            if p.expanduser().resolve() == pool:
                raise ValueError(f"output {p} would overwrite the input pool {self.pool}")
        return self


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
