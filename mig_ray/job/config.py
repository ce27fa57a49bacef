"""The job file of `mig-ray run`: typed, validated, loaded with yaml.safe_load.

A job file reproduces a run: the resolved job (every default filled in) is written to
OUTDIR/job.resolved.yaml and echoed into the run summary. Relative paths are relative to the
directory `mig-ray run` is started in (what `ray job submit --working-dir .` makes the job's cwd);
`bundled:NAME` names a file shipped inside the package (`bundled:demo_pool.jsonl`).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mig_ray.annotate.resources import ActorResources
from mig_ray.config import ShardPlacement
from mig_ray.embeddings import DEFAULT_MODEL
from mig_ray.errors import JobError
from mig_ray.guard import clip, short
from mig_ray.storage import Location, RemotePath, is_uri, location

BUNDLED = "bundled:"
Layout = Literal["auto", "annotated", "sharegpt", "openai", "alpaca"]


def resolve_path(value: str | Path) -> Path:
    """`bundled:NAME` -> the file shipped in mig_ray/demo or mig_ray/data; else the path as given."""
    text = str(value)
    if text.startswith(BUNDLED):
        name = text[len(BUNDLED):]
        for folder in ("demo", "data"):
            p = Path(str(resources.files("mig_ray") / folder / name))
            if p.exists():
                return p
        raise ValueError(f"no bundled file {name!r} (bundled files live in mig_ray/demo and mig_ray/data)")
    return Path(text).expanduser()


def glob_reaches(pattern: str, out: Path) -> bool:
    """Whether a glob can match `out`, a folder above it, or a file under it (what a job writes):
    each of the pattern's parts matches the same part of `out`, as far as both go."""
    parts = Path(os.path.abspath(Path(pattern).expanduser())).parts
    out_parts = Path(os.path.abspath(out)).parts
    return all(fnmatch.fnmatchcase(o, p) for p, o in zip(parts, out_parts, strict=False))


def _inside(path: Location, folder: Location) -> bool:
    """Whether `path` lies under `folder` (both resolved; a local path is never under a URI)."""
    return type(path) is type(folder) and str(path).startswith(str(folder).rstrip("/") + "/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The pool: one or more files or `save_to_disk` directories, read in the order given."""

    paths: list[str] = Field(min_length=1, description="JSONL, JSON, Parquet files or datasets dirs, "
                             "local or s3://...; a glob (`incoming/*.jsonl`) expands to its matches, sorted")
    layout: Layout = "auto"
    id_field: str | None = Field(None, description="dotted path of the record id (default _id, id, "
                                 "else a content hash of the conversation)")

    def resolved_existing(self) -> list[Location]:
        return [p for p in self.resolved() if p.exists()]

    def resolved(self) -> list[Location]:
        out: list[Location] = []
        for raw in self.paths:
            if is_uri(raw):
                folder, _, name = raw.rstrip("/").rpartition("/")
                glob_name = any(ch in name for ch in "*?[")
                if any(ch in folder for ch in "*?["):
                    raise ValueError(f"{raw}: on an object store only the last part may be a glob")
                out += sorted(RemotePath(folder).glob(name)) if glob_name else [RemotePath(raw)]
            elif any(ch in raw for ch in "*?["):
                out += sorted(Path(p) for p in glob.glob(str(Path(raw).expanduser())))
            else:
                out.append(resolve_path(raw))
        return out


class TaggerSpec(_Strict):
    """Where labels come from. `from-data` reads them from the pool (`labels_field`, default the
    released layout's annotation.instag.content); `embedding`, `static` and `vllm` annotate."""

    kind: Literal["embedding", "static", "vllm", "from-data"] = "embedding"
    labels_field: str | None = Field(None, description="from-data: dotted path of the label list")
    options: dict[str, Any] = Field(default_factory=dict, description="the tagger's own settings")
    resources: ActorResources = ActorResources(concurrency=1, num_cpus=0.5, batch_size=64)


class ScorerSpec(_Strict):
    """Where scores come from: `field` (already in the pool), `constant`, or `vllm` (DEITA scorers)."""

    kind: Literal["vllm", "field", "constant"] = "field"
    field: str | None = Field(None, description="field: dotted path of a numeric score (default: the "
                              "released layout's mean over turns of quality x complexity)")
    value: float = Field(1.0, gt=0, description="constant: the score of every sample")
    options: dict[str, Any] = Field(default_factory=dict, description="the scorer's own settings")
    resources: ActorResources = ActorResources(concurrency=1, num_cpus=0.5, batch_size=16)


class AnnotateSpec(_Strict):
    tagger: TaggerSpec = TaggerSpec()
    scorer: ScorerSpec = ScorerSpec()
    cache_dir: str | None = Field(None, description="annotation cache shared between runs "
                                  "(default OUTDIR/cache), local or s3://...; point nightly jobs at "
                                  "one place")
    part_rows: int = Field(10_000, gt=0, description="results per cache part: a killed run keeps "
                           "the parts it finished, and a re-run annotates only the rest")


class GraphSpec(_Strict):
    embedding_model: str = DEFAULT_MODEL
    label_embeddings: str | None = None
    valid_tags: str | None = None
    sim_threshold: float = Field(0.9, ge=-1.0, le=1.0)
    target_degree: float | None = Field(None, gt=0)
    propagation: Literal["target", "source"] = "target"
    prop_weight: float = Field(1.0, ge=0.0)


class SelectionSpec(_Strict):
    n: int | None = Field(None, gt=0, description="how many samples to select")
    fraction: float | None = Field(None, gt=0, le=1, description="or this share of the selectable pool")
    phi: Literal["pow", "exp"] = "pow"
    phi_a: float = Field(1e-6, gt=0)
    phi_b: float = Field(0.8, gt=0, lt=1)
    phi_alpha: float = Field(1.0, gt=0)
    norm: bool = False
    gain: Literal["gradient", "exact"] = "gradient"
    shards: int = Field(1, ge=1)
    batch: int = Field(256, ge=0)
    checkpoint_seconds: float = Field(5.0, ge=0, description="sharded: seconds between checkpoints of "
                                      "the committed order, kept across re-runs of the job")

    @model_validator(mode="after")
    def _one_size(self) -> SelectionSpec:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("give exactly one of n and fraction")
        return self

    def k(self, selectable: int) -> int:
        if self.n is not None:
            return self.n
        return max(1, round(self.fraction * selectable))


class OutputSpec(_Strict):
    dir: str = Field(description="output folder, local or on an object store (s3://bucket/prefix)")
    format: Literal["jsonl", "parquet"] = "jsonl"


class RaySpec(_Strict):
    address: str | None = Field(None, description="'auto' or host:port joins a cluster; none starts a "
                                "local Ray on loopback")
    num_cpus: int | None = Field(None, gt=0, description="logical CPUs of a local Ray (default: enough "
                                 "that actor stages and read tasks never wait on each other)")
    include_dashboard: bool = False
    shard_actors: ShardPlacement = Field(default_factory=ShardPlacement, description="where the "
                                         "selection's shard actors run (selection.shards > 1)")


class CompareSpec(_Strict):
    """`mig-ray compare` after the selection, into OUTDIR/compare/ (shown by `mig-ray report OUTDIR`)."""

    methods: list[str] = Field(default_factory=lambda: ["mig", "random", "score", "instag", "deita",
                                                        "kcenter"])
    seed: int = 0
    sample_embeddings: str | None = Field(None, description=".npz with `ids` and `embeddings` (deita, "
                                          "kcenter, Vendi)")
    embed_samples: bool = Field(False, description="or embed the user turns with graph.embedding_model")
    deita_threshold: float = Field(0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _known(self) -> CompareSpec:
        from mig_ray.compare.methods import parse_methods

        parse_methods(self.methods)
        if self.sample_embeddings is not None and not resolve_path(self.sample_embeddings).is_file():
            raise ValueError(f"sample_embeddings: {self.sample_embeddings} is not a file")
        return self


class JobConfig(_Strict):
    """A whole `mig-ray run`: input -> annotate -> graph -> selection -> output."""

    name: str = "mig-ray-job"
    input: InputSpec
    annotate: AnnotateSpec = AnnotateSpec()
    graph: GraphSpec = GraphSpec()
    selection: SelectionSpec
    output: OutputSpec
    ray: RaySpec = RaySpec()
    compare: CompareSpec | None = Field(None, description="compare MIG with baselines after select")
    incremental: bool = Field(False, description="nightly: allow a grown pool in an existing output "
                              "directory; only new ids are annotated and a diff is written")
    progress: bool = True

    @model_validator(mode="after")
    def _paths(self) -> JobConfig:
        out = location(self.output.dir).resolve()
        if self.compare is not None and isinstance(out, RemotePath):
            raise ValueError(f"compare: needs a local output.dir (got {self.output.dir}): the comparison "
                             "is computed and written on the driver; run `mig-ray compare` on a copy")
        for raw in self.input.paths:
            if is_uri(raw):
                if not InputSpec(paths=[raw]).resolved_existing():
                    raise ValueError(f"input.paths: {raw} matches no file")
                continue
            if any(ch in raw for ch in "*?["):
                if glob_reaches(raw, Path(self.output.dir).expanduser()):
                    raise ValueError(f"output.dir {self.output.dir} matches the input glob {raw}: a re-run "
                                     "would read this run's outputs as input; choose an output folder "
                                     "the glob does not match")
                if not glob.glob(str(Path(raw).expanduser())):
                    raise ValueError(f"input.paths: {raw} matches no file")
                continue
            p = resolve_path(raw)
            if not p.exists():
                raise ValueError(f"input.paths: {raw} does not exist")
        for p in self.input.resolved():
            p = p.resolve()
            if out == p or (p.is_dir() and _inside(out, p)):
                raise ValueError(f"output.dir {self.output.dir} is inside or equal to the input {p}")
            if p.is_file() and _inside(p, out):
                raise ValueError(f"output.dir {self.output.dir} holds the input {p}: outputs could overwrite "
                                 "it; choose an output folder of its own")
        for key, val in (("graph.valid_tags", self.graph.valid_tags),
                         ("graph.label_embeddings", self.graph.label_embeddings)):
            if val is not None and not resolve_path(val).is_file():
                raise ValueError(f"{key}: {val} is not a file")
        if self.graph.valid_tags is not None:  # a bad list fails now, not after hours of tagging
            from mig_ray.errors import PoolError
            from mig_ray.pools.annotated import read_tag_list

            try:
                read_tag_list(resolve_path(self.graph.valid_tags))
            except PoolError as e:
                raise ValueError(f"graph.valid_tags: {e}") from e
        return self

    def output_dir(self) -> Location:
        return location(self.output.dir)

    def cache_dir(self) -> Location:
        return location(self.annotate.cache_dir) if self.annotate.cache_dir else self.output_dir() / "cache"

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _describe(err: dict, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key {short(loc, 120)}"
    if kind == "missing":
        return f"{source}: missing key {short(loc, 120)}"
    msg = err["msg"]
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{source}: {loc}: {short(err['input'], 80)} is not allowed (allowed: {allowed})"
    return f"{source}: {loc}: {clip(msg, 300)} (got {short(err.get('input'), 80)})" \
        if "input" in err and kind != "value_error" \
        else f"{source}: {loc}: {clip(msg.removeprefix('Value error, '), 400)}"


def parse_job(data: Any, source: str = "job") -> JobConfig:
    if not isinstance(data, dict):
        raise JobError(f"{source}: a job file is a YAML mapping, got {type(data).__name__}")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as e:
        errs = [_describe(err, source) for err in e.errors()]
        more = f" (and {len(errs) - 3} more)" if len(errs) > 3 else ""
        raise JobError("; ".join(errs[:3]) + more) from None


MAX_JOB_BYTES = 1 << 20
MAX_JOB_NODES = 100_000  # scalars, lists and mappings once aliases are expanded


def _expanded_size(root: yaml.Node, path: Path) -> None:
    """JobError when the document, with every alias expanded, holds more than MAX_JOB_NODES nodes
    (a 'billion laughs' alias tree is a few hundred bytes that expand to gigabytes)."""
    stack, seen = [root], 0
    while stack:
        node = stack.pop()
        seen += 1
        if isinstance(node, yaml.ScalarNode):
            seen += len(node.value) // 64  # long strings repeated by aliases count by their size
        if seen > MAX_JOB_NODES:
            raise JobError(f"{path}: the job expands to more than {MAX_JOB_NODES:,} values (YAML aliases "
                           "repeated inside each other?); a job file is a small mapping")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack += (k, v)


def load_job(path: str | Path, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Read and validate a job file; `overrides` are dotted keys set after reading (CLI flags)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise JobError(f"{path}: is a directory, not a job file")
        if path.stat().st_size > MAX_JOB_BYTES:
            raise JobError(f"{path}: {path.stat().st_size:,} bytes; a job file is at most {MAX_JOB_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise JobError(f"{path}: cannot read the job file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise JobError(f"{path}:{line}: the job file is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                       f"offset {e.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _expanded_size(node, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise JobError(f"{where}: not valid YAML ({short(getattr(e, 'problem', e))})") from None
    except RecursionError:
        raise JobError(f"{path}: the YAML is nested too deeply") from None
    for key, value in (overrides or {}).items():
        target = data if isinstance(data, dict) else {}
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise JobError(f"{path}: key {part!r} must be a mapping (it holds {short(target, 60)})")
        target[last] = value
    return parse_job(data, str(path))
