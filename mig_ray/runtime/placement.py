"""Placement of actors on a Ray cluster: the custom resources a job asks for, and whether any node
has them. Nothing here imports Ray at module level (job files are validated without it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_BUILT_IN = ("CPU", "GPU", "memory", "object_store_memory")


def _check(value: dict[str, float]) -> dict[str, float]:
    """Ray's own rules, checked when the job file is read rather than when an actor is created."""
    for name, qty in value.items():
        if name in _BUILT_IN or name.startswith("node:"):
            raise ValueError(f"{name!r} is not a custom resource (CPUs and GPUs are num_cpus / num_gpus)")
        if not qty > 0:
            raise ValueError(f"{name}: the quantity must be > 0, got {qty}")
        if qty > 1 and qty != int(qty):
            raise ValueError(f"{name}: a quantity above 1 must be a whole number, got {qty}")
    return value


CustomResources = Annotated[dict[str, float], AfterValidator(_check)]


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

    def actor_options(self) -> dict:
        """Keyword arguments of ray.remote / .options for a shard actor."""
        kw: dict = {"num_cpus": self.num_cpus}
        if self.custom_resources:
            kw["resources"] = dict(self.custom_resources)
        if self.spread:
            kw["scheduling_strategy"] = "SPREAD"
        return kw


def unplaceable(requested: dict[str, float]) -> bool:
    """True when no live node of the connected Ray cluster offers `requested` in full."""
    import ray

    return bool(requested) and not any(
        node["Alive"] and all(node["Resources"].get(k, 0) >= v for k, v in requested.items())
        for node in ray.nodes())
