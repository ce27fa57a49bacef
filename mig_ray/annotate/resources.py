"""How an annotator runs on Ray: actors, resources per actor, batch size (from the job file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mig_ray.runtime.placement import CustomResources, MemoryBytes


class ActorResources(BaseModel):
    """Resources of one annotation stage; fractional CPUs keep small machines from deadlocking."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(1, ge=1, description="actors (one model each)")
    num_cpus: float = Field(1.0, ge=0, description="logical CPUs per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (0 on CPU-only machines)")
    batch_size: int = Field(64, ge=1, description="records per map_batches call")
    memory: MemoryBytes | None = Field(None, gt=0, description="memory Ray reserves per actor ('40GiB' or "
                                       "bytes): a node takes no more actors than its memory holds")
    custom_resources: CustomResources = Field(
        default_factory=dict, description="custom Ray resources per actor: the actors run only on nodes "
                                          "started with them (`ray start --resources '{\"tagger\": 4}'`)")

    def map_batches_kwargs(self) -> dict:
        kw: dict = {"concurrency": self.concurrency, "num_cpus": self.num_cpus, "batch_size": self.batch_size}
        if self.num_gpus:
            kw["num_gpus"] = self.num_gpus
        if self.custom_resources:
            kw["resources"] = dict(self.custom_resources)
        if self.memory:
            kw["memory"] = self.memory
        return kw
