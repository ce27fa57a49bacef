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
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mig_ray.annotate.resources import ActorResources
from mig_ray.bundled import resolve_bundled
from mig_ray.core.options import ConstraintOptions, GraphOptions, ObjectiveOptions, ShardingOptions
from mig_ray.embeddings import DEFAULT_MODEL
from mig_ray.errors import JobError
from mig_ray.guard import clip, short
from mig_ray.pools.fields import checked_path
from mig_ray.pools.layouts import LAYOUTS
from mig_ray.runtime.placement import ShardPlacement
from mig_ray.storage import Location, RemotePath, is_uri, location, user_path

# the layout names ingest knows, one list (mig_ray.pools.layouts), so the schema cannot drift from it
Layout = Literal[("auto", *LAYOUTS)]  # type: ignore[valid-type]


def resolve_path(value: str | Path) -> Path:
    """`bundled:NAME` -> the file shipped in mig_ray/demo or mig_ray/data; else the path as given."""
    return resolve_bundled(value)


def glob_reaches(pattern: str, out: Path) -> bool:
    """Whether a glob can match `out`, a folder above it, or a file under it (what a job writes):
    each of the pattern's parts matches the same part of `out`, as far as both go."""
    parts = Path(os.path.abspath(user_path(pattern))).parts
    out_parts = Path(os.path.abspath(out)).parts
    return all(fnmatch.fnmatchcase(o, p) for p, o in zip(parts, out_parts, strict=False))


def _inside(path: Location, folder: Location) -> bool:
    """Whether `path` lies under `folder` (both resolved; a local path is never under a URI)."""
    return type(path) is type(folder) and str(path).startswith(str(folder).rstrip("/") + "/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DottedPath = Annotated[str, AfterValidator(checked_path)]  # a malformed path fails at load, not in a stage


class InputSpec(_Strict):
    """The pool: one or more files or `save_to_disk` directories, read in the order given."""

    paths: list[str] = Field(min_length=1, description="JSONL, JSON, Parquet files or datasets dirs, "
                             "local or s3://...; a glob (`incoming/*.jsonl`) expands to its matches, sorted")
    layout: Layout = Field("auto", description="record layout of every file; auto detects it per file")
    id_field: DottedPath | None = Field(None, description="dotted path of the record id (default _id, id, "
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
                out += sorted(Path(p).absolute() for p in glob.glob(str(user_path(raw))))
            else:
                out.append(resolve_path(raw))
        return out


class TaggerSpec(_Strict):
    """Where labels come from. `from-data` reads them from the pool (`labels_field`, default the
    released layout's annotation.instag.content); `embedding`, `static` and `vllm` annotate."""

    kind: Literal["embedding", "static", "vllm", "from-data"] = Field(
        "embedding", description="embedding: the bundled MiniLM matched against the tag vocabulary (CPU, "
                                 "offline); static: a static model distilled from it (CPU, offline, hundreds "
                                 "of times faster); vllm: an InsTag-style chat model; from-data: labels "
                                 "already in the pool")
    labels_field: DottedPath | None = Field(None, description="from-data: dotted path of the label list")
    options: dict[str, Any] = Field(default_factory=dict, description="the tagger's own settings")
    resources: ActorResources = ActorResources(concurrency=1, num_cpus=0.5, batch_size=64)


class ScorerSpec(_Strict):
    """Where scores come from: `field` (already in the pool), `constant`, or `vllm` (DEITA scorers)."""

    kind: Literal["vllm", "field", "constant"] = Field(
        "field", description="field: a score in the pool; constant: `value` for every sample; vllm: the "
                             "DEITA quality and complexity scorers")
    field: DottedPath | None = Field(None, description="field: dotted path of a numeric score (default: the "
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


class GraphInputs(_Strict):
    embedding_model: str = Field(DEFAULT_MODEL, description="sentence-transformers model (a local folder) "
                                 "that embeds the labels; the default is the bundled offline "
                                 "all-MiniLM-L6-v2")
    label_embeddings: str | None = Field(None, description=".npz with `labels` (str [L]) and `embeddings` "
                                         "(float [L,d]); skips the model")
    valid_tags: str | None = Field(None, description="keep only these labels, matched exactly: a JSON "
                                   "list (or object: its keys) or one tag per line; "
                                   "`bundled:valid_tags_tulu3.json` is the released Tulu3 list")


class GraphSpec(GraphOptions, GraphInputs):
    """The label graph: where label embeddings come from, which labels count, and the graph options
    (the same as `mig-ray select`'s flags)."""


class SelectionSize(_Strict):
    n: int | None = Field(None, gt=0, description="how many samples to select (optional with "
                          "budget_tokens: then the budget alone bounds the selection)")
    fraction: float | None = Field(None, gt=0, le=1, description="or this share of the selectable pool")


class SelectionSpec(ConstraintOptions, ShardingOptions, ObjectiveOptions, SelectionSize):
    """How many samples, the objective and the engine (the same options as `mig-ray select`'s flags)."""

    @model_validator(mode="after")
    def _one_size(self) -> SelectionSpec:
        if self.n is not None and self.fraction is not None:
            raise ValueError("give one of n and fraction, not both")
        if self.n is None and self.fraction is None and self.budget_tokens is None:
            raise ValueError("give n or fraction (or budget_tokens: the budget alone bounds the selection)")
        for value in (self.groups, self.cost):  # `file` and `tokens` are well-formed paths too
            checked_path(value)
        return self

    def k(self, selectable: int) -> int:
        """K for a pool of `selectable` records (n, or the fraction; see job/select.py for a budget
        alone)."""
        if self.n is not None:
            return self.n
        return max(1, round(self.fraction * selectable))


class OutputSpec(_Strict):
    dir: str = Field(description="output folder, local or on an object store (s3://bucket/prefix)")
    format: Literal["jsonl", "parquet"] = Field("jsonl", description="format of selected.* (the "
                                                "records unchanged, in selection order)")


class RaySpec(_Strict):
    address: str | None = Field(None, description="'auto' or host:port joins a cluster; none starts a "
                                "local Ray on loopback")
    num_cpus: int | None = Field(None, gt=0, description="logical CPUs of a local Ray (default: enough "
                                 "that actor stages and read tasks never wait on each other)")
    include_dashboard: bool = Field(False, description="a local Ray with its dashboard (and Jobs API)")
    shard_actors: ShardPlacement = Field(default_factory=ShardPlacement, description="where the "
                                         "selection's shard actors run (selection.shards > 1)")


def _default_methods() -> tuple[str, ...]:
    from mig_ray.compare.methods import DEFAULT

    return DEFAULT


class CompareSpec(_Strict):
    """`mig-ray compare` after the selection, into OUTDIR/compare/ (shown by `mig-ray report OUTDIR`)."""

    methods: list[str] = Field(default_factory=lambda: list(_default_methods()), description="methods to "
                               "run, by name (default: every registered method, as `mig-ray compare`)")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per method its options, e.g. {qdit: {alpha: 0.5}} (as `--method-option qdit.alpha=0.5`)")
    seed: int = Field(0, description="seed of random, kcenter's first pick and the Vendi subsample")
    sample_embeddings: str | None = Field(None, description=".npz with `ids` and `embeddings` (deita, "
                                          "kcenter, Vendi)")
    embed_samples: bool = Field(False, description="or embed the user turns with graph.embedding_model")
    deita_threshold: float = Field(0.9, gt=0, le=1, description="deita: take a sample only when its "
                                   "cosine to every taken one is below this")

    @model_validator(mode="after")
    def _known(self) -> CompareSpec:
        from mig_ray.compare.methods import method_options, parse_methods

        parse_methods(self.methods)
        method_options(self.options)
        if self.sample_embeddings is not None and not resolve_path(self.sample_embeddings).is_file():
            raise ValueError(f"sample_embeddings: {self.sample_embeddings} is not a file")
        return self


class DedupSpec(_Strict):
    """Exact and near-duplicate removal between ingest and tag (stage `dedup`): of each cluster of
    duplicates the lowest input position stays; the others go to dedup/duplicates.jsonl with their
    kept twin and the estimated Jaccard. With bands 16 x rows 8 (the default), a pair of Jaccard 0.7 /
    0.8 / 0.9 becomes a candidate with probability 0.61 / 0.95 / 0.9999; candidates are then verified
    on their full signatures against `threshold`."""

    enabled: bool = Field(True, description="run it (`false`: later stages read every ingested record)")
    turns: Literal["all", "user", "first-user"] = Field(
        "all", description="which turns make a record's text: every turn, the user turns, or the first "
        "user turn")
    exact: bool = Field(True, description="drop records whose normalised text (NFKC, case-folded, "
                        "whitespace collapsed) equals an earlier one's")
    near: bool = Field(True, description="drop near duplicates: MinHash over word n-gram shingles, LSH "
                       "banding, candidates verified on their signatures, clusters by connected components")
    ngram: int = Field(5, ge=1, le=64, description="words per shingle")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations (signature length)")
    bands: int = Field(16, ge=1, description="LSH bands; num_perm / bands values per band (must divide)")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard at or above which a "
                             "candidate pair is a duplicate")
    seed: int = Field(1, ge=0, description="seed of the MinHash permutations (datasketch's)")
    rows_per_bucket: int = Field(2_000_000, ge=1, description="band rows per hash bucket: each bucket "
                                 "task holds about this many rows (26 bytes each)")

    @model_validator(mode="after")
    def _banding(self) -> DedupSpec:
        if self.num_perm % self.bands:
            raise ValueError(f"bands: {self.bands} does not divide num_perm {self.num_perm}")
        return self


class DecontaminateSpec(_Strict):
    """Drop records whose user turns share a word n-gram with a benchmark prompt (stage `dedup`),
    listed in dedup/contaminated.jsonl with the benchmark file and the n-gram. No benchmark ships
    with mig_ray: name the files."""

    paths: list[str] = Field(min_length=1, description="benchmark prompt files, local or s3://: plain "
                             "text (.txt, one prompt a line), or JSONL / JSON / Parquet records in any "
                             "layout ingest reads (their user turns), or with a `prompt` or `turns` field")
    ngram: int = Field(13, ge=1, le=64, description="words an overlap must share (after normalising "
                       "case, punctuation and spacing)")
    layout: Layout = Field("auto", description="record layout of the benchmark files (auto: per record)")


class JobConfig(_Strict):
    """A whole `mig-ray run`: input -> annotate -> graph -> selection -> output."""

    name: str = Field("mig-ray-job", description="the job's name (echoed in the summary)")
    input: InputSpec
    annotate: AnnotateSpec = Field(AnnotateSpec(), description="where labels and scores come from")
    graph: GraphSpec = GraphSpec()
    selection: SelectionSpec
    output: OutputSpec = Field(description="where the outputs go")
    ray: RaySpec = Field(RaySpec(), description="which Ray runs the job, and where the shard actors go")
    compare: CompareSpec | None = Field(None, description="compare MIG with baselines after select")
    dedup: DedupSpec = Field(DedupSpec(), description="exact and near-duplicate removal before tagging")
    decontaminate: DecontaminateSpec | None = Field(None, description="drop records that quote a "
                                                    "benchmark prompt, before tagging")
    incremental: bool = Field(False, description="nightly: allow a grown pool in an existing output "
                              "directory; only new ids are annotated and a diff is written")
    progress: bool = Field(True, description="progress bars on stderr")

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
                if glob_reaches(raw, user_path(self.output.dir)):
                    raise ValueError(f"output.dir {self.output.dir} matches the input glob {raw}: a re-run "
                                     "would read this run's outputs as input; choose an output folder "
                                     "the glob does not match")
                if not glob.glob(str(user_path(raw))):
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

    def curates(self) -> bool:
        """Whether the dedup stage filters the records (later stages then read its parts)."""
        return self.dedup.enabled or self.decontaminate is not None

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
        allowed = keys_at(JobConfig, err["loc"][:-1])
        where = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"{source}: unknown key {short(loc, 120)}{where}; see docs/job-file.md"
    if kind == "missing":
        return f"{source}: missing key {short(loc, 120)}"
    msg = err["msg"]
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{source}: {loc}: {short(err['input'], 80)} is not allowed (allowed: {allowed})"
    return f"{source}: {loc}: {clip(msg, 300)} (got {short(err.get('input'), 80)})" \
        if "input" in err and kind != "value_error" \
        else f"{source}: {loc}: {clip(msg.removeprefix('Value error, '), 400)}"


def keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a job file may hold at `loc` (a path of keys from the top), [] when `loc` is not a
    mapping of the schema."""
    for part in loc:
        field = model.model_fields.get(str(part))
        sub = model_in(field.annotation) if field is not None else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field's type holds (itself, or inside an Optional or Union), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


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
