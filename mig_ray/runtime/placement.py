"""Placement of actors on a Ray cluster: the custom resources a job asks for, and whether any node
has them. Nothing here imports Ray at module level (job files are validated without it)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

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

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)


def _bytes(value: object) -> object:
    """`16GiB`, `16Gi` (Kubernetes' spelling), `500MB` or a number of bytes -> bytes, as Ray's
    `memory` resource counts them; anything else is left for pydantic to reject."""
    if isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    return value


MemoryBytes = Annotated[int, BeforeValidator(_bytes)]


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


def unplaceable(requested: dict[str, float]) -> bool:
    """True when no live node of the connected Ray cluster offers `requested` in full."""
    import ray

    return bool(requested) and not any(
        node["Alive"] and all(node["Resources"].get(k, 0) >= v for k, v in requested.items())
        for node in ray.nodes())


def cpu_shortfall(actors: int, num_cpus: float) -> tuple[float, float] | None:
    """(CPUs needed, CPUs the live nodes have) when `actors` actors of `num_cpus` each can never
    all run at once on the connected Ray (they would wait forever on a cluster that does not grow)."""
    import ray

    need = actors * num_cpus
    have = sum(node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"])
    return (need, have) if need > have else None


def joins_a_cluster(address: str | None) -> bool:
    """Whether Ray here is a cluster named by the user (an address, or RAY_ADDRESS inside a Ray
    job) rather than a local one: a cluster may grow (autoscaler), a local Ray never does."""
    import os

    return bool(address or os.environ.get("RAY_ADDRESS"))
