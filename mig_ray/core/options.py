"""The selection options, defined once: the job file's `graph:` and `selection:` sections, the flags
of `mig-ray select` and `mig-ray compare`, and the engines all read these models, so a default, a
bound or a help text changes in one place. A field's `flag` (json_schema_extra) names its CLI flag
where that differs from the field name."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DEFAULT_THRESHOLD = 0.9  # the paper's T, for label embeddings the user names
BUNDLED_TARGET_DEGREE = 5.0  # what the bundled MiniLM's default graph is built to (see graph_defaults)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GraphOptions(_Options):
    """How the label graph is built and how a sample's vector spreads over it."""

    sim_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Cosine threshold T for label-graph edges (at least 0: a negative cosine would be a "
                    "negative edge weight, which the information measure cannot take). Unset: 0.9 (the "
                    "paper's) when label embeddings or a model of your own are named; with the bundled "
                    "MiniLM, whose cosines "
                    "are lower, the threshold that gives mean degree 5 (0.9 would leave almost every "
                    "label isolated). The summary says which applied.")
    target_degree: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Choose the threshold that gives this mean degree (overrides --sim-threshold); "
                    "a degree only negative cosines would reach gives threshold 0.")
    propagation: Literal["target", "source"] = Field(
        "target", description="target: P = W'/colsum (released code); source: P = W'/rowsum (each label "
                              "spreads one unit).")
    prop_weight: float = Field(1.0, ge=0.0, description="Weight alpha of off-diagonal edges in propagation.")


class ObjectiveOptions(_Options):
    """The concave phi of the information measure and how a candidate's gain is computed."""

    phi: Literal["pow", "exp"] = Field("pow", description="Concave phi: pow (x+a)^b or exp 1-exp(-alpha x).")
    phi_a: float = Field(1e-6, gt=0, description="a of phi pow.")
    phi_b: float = Field(0.8, gt=0, lt=1, description="b of phi pow (0 < b < 1).")
    phi_alpha: float = Field(1.0, gt=0, description="alpha of phi exp.")
    norm: bool = Field(False, description="Spread a sample's score over its labels (s/|L|) instead of s on "
                                          "each label.")
    gain: Literal["gradient", "exact"] = Field(
        "gradient", description="gradient: phi'(x)·ê (paper); exact: E(D+i) - E(D).")


class ShardingOptions(_Options):
    """How the exact greedy is spread over shard actors; none of these changes the order."""

    shards: int = Field(1, ge=1, description="Shard actors for distributed selection (1: in process).")
    batch: int = Field(4096, ge=0, description="Sharded (and the threaded in-process greedy): candidates "
                                               "each shard proposes per round; a round commits only picks "
                                               "proven identical to naive greedy (0: one pick per round).")
    checkpoint_seconds: float = Field(
        5.0, ge=0, json_schema_extra={"flag": "checkpoint-every"},
        description="Sharded: seconds between checkpoints of the committed order (<stem>.checkpoint.npz); "
                    "a re-run resumes from it.")


DICT_OPTIONS = {"quotas", "floors"}  # dict-valued options: a repeatable NAME=VALUE flag on the CLI


class ConstraintOptions(_Options):
    """What the selection may take besides its count: per-group caps and a token budget."""

    groups: str | None = Field(
        None, description="Dotted field of the record whose value is the sample's group (e.g. source), "
                          "or `file`: the input file it came from. Quotas count per group.")
    quotas: dict[str, int | float] = Field(
        {}, json_schema_extra={"flag": "quota"},
        description="Cap per group (GROUP=CAP, repeatable; `default` for every other group): an integer "
                    "is a count, a number with a point a share of n (0.4: at most 40%). A round picks the "
                    "best gain among samples whose group is not full.")
    floors: dict[str, int | float] = Field(
        {}, json_schema_extra={"flag": "floor"},
        description="Floor per group (GROUP=MIN, repeatable; `default` for every other group): a count, or "
                    "a share of n with a point. First, for each group with a floor in sorted group-name "
                    "order, the best MIN samples of that group by the same greedy restricted to it (gains "
                    "conditioned on everything picked before); then the ordinary greedy over all groups. "
                    "Floor picks count against the caps and the budget.")
    budget_tokens: float | None = Field(
        None, gt=0, description="Total cost the selection may take (tokens, or the unit of --cost). The "
                                "greedy then picks by gain / cost among samples that still fit and also "
                                "runs the plain gain greedy under the same budget, keeping the one of "
                                "higher information; n becomes optional (both given: whichever binds "
                                "first).")
    cost: str = Field(
        "tokens", description="What a sample costs: `tokens` (its messages' text counted with --tokenizer) "
                              "or a dotted numeric field of the record (> 0).")
    tokenizer: str | None = Field(
        None, description="Local tokenizer folder (tokenizer.json) for --cost tokens; default the bundled "
                          "MiniLM tokenizer (it undercounts a Llama tokenizer: see the README).")

    @field_validator("quotas", "floors")
    @classmethod
    def _caps(cls, v: dict[str, int | float], info: ValidationInfo) -> dict[str, int | float]:
        what = {"quotas": ("quota", "cap"), "floors": ("floor", "floor")}[info.field_name]
        for group, cap in v.items():
            if isinstance(cap, bool) or not math.isfinite(cap) or cap < 0:
                raise ValueError(f"{what[0]} {group!r}: a {what[1]} must be a count >= 0 or a share in "
                                 f"[0, 1], got {cap!r}")
            if isinstance(cap, float) and cap > 1:
                raise ValueError(f"{what[0]} {group!r}: a share above 1 ({cap}); give a count as an integer")
        return v

    @model_validator(mode="after")
    def _quotas_need_groups(self):
        """One check for every model with constraints (`select`'s config, the job's `selection:`)."""
        for name in ("quotas", "floors"):
            if getattr(self, name) and self.groups is None:
                raise ValueError(f"{name} need groups: name the field that holds a sample's group")
        return self


class SelectionOptions(ConstraintOptions, ShardingOptions, ObjectiveOptions, GraphOptions):
    """Every selection option: the graph, the objective, the engine and the constraints."""


def quota_caps(quotas: dict[str, int | float], names: list[str], k: int | None) -> list[int]:
    """The cap of each group in `names`: its quota, else `default`, else none (a very large count).
    A share becomes floor(share * k) (1e-9 of slack so that 0.29 * 100 is 29); a share needs k."""
    out = []
    for name in names:
        cap = quotas.get(name, quotas.get("default"))
        if cap is None:
            out.append(2**62)
        elif isinstance(cap, float):
            if k is None:
                raise ValueError(f"quota {name!r} is a share of n, but no n is given")
            out.append(int(math.floor(cap * k + 1e-9)))
        else:
            out.append(int(cap))
    return out


def floor_counts(floors: dict[str, int | float], names: list[str], k: int | None) -> list[int]:
    """The floor of each group in `names`: its own, else `default`, else 0; a share of k as for caps."""
    given = quota_caps(floors, names, k)
    return [0 if f >= 2**62 else f for f in given]


def parse_pairs(name: str, items: list[str] | None) -> dict[str, int | float]:
    """A repeatable NAME=VALUE flag as a dict: `--quota math=0.4 --quota human=2000`."""
    out: dict[str, int | float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{name}: expected GROUP=CAP, got {item!r}")
        try:
            out[key] = float(value) if any(c in value for c in ".eE") or value in ("inf", "nan") \
                else int(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number (in {item!r})") from None
    return out


def option_fields(model: type[BaseModel] = SelectionOptions) -> dict[str, str]:
    """Field name -> CLI flag (without the dashes) of each selection option."""
    return {name: (f.json_schema_extra or {}).get("flag", name.replace("_", "-"))  # type: ignore[union-attr]
            for name, f in model.model_fields.items()}


def options_of(model: BaseModel) -> dict:
    """The selection options a bigger model (a job section, SelectConfig) holds, by name."""
    return {name: getattr(model, name) for name in SelectionOptions.model_fields if hasattr(model, name)}


def graph_defaults(options: GraphOptions, bundled_model: bool) -> tuple[float, float | None, str]:
    """(threshold, target degree, which rule applied) for options whose threshold may be unset: a
    given threshold or target degree is used as is; unset, the bundled model gets mean degree 5 and
    anything else (named label embeddings, a model of the user's) the paper's 0.9."""
    if options.target_degree is not None:
        return options.sim_threshold or DEFAULT_THRESHOLD, options.target_degree, "target_degree given"
    if options.sim_threshold is not None:
        return options.sim_threshold, None, "sim_threshold given"
    if bundled_model:
        return DEFAULT_THRESHOLD, BUNDLED_TARGET_DEGREE, \
            f"default for the bundled model: target_degree {BUNDLED_TARGET_DEGREE:g}"
    return DEFAULT_THRESHOLD, None, f"default: sim_threshold {DEFAULT_THRESHOLD}"
