"""Stage `select`: the label graph and the exact greedy over the assembled pool (sharded on Ray
with `selection.shards > 1`), by the same code as `mig-ray select`. It writes the manifest,
summary and label counts under select/, not the records: the write stage takes those from the
ingest parts. Its checkpoint survives a re-run of the stage (it carries its own fingerprint)."""

from __future__ import annotations

from pathlib import Path

from mig_ray.core.options import graph_defaults, options_of
from mig_ray.embeddings import DEFAULT_MODEL
from mig_ray.errors import JobError
from mig_ray.job import nightly
from mig_ray.job.assemble import COST, GROUP
from mig_ray.job.context import RunContext, log
from mig_ray.job.jobfile import resolve_path
from mig_ray.job.stages import StageResult, file_identity
from mig_ray.job.stages import fingerprint as digest
from mig_ray.job.tag import LABEL_EMBEDDINGS
from mig_ray.selection.config import SelectConfig, output_paths
from mig_ray.selection.limits import has_limits
from mig_ray.storage import RemotePath, copy_file, rmtree

NAME = "select"
# a re-run keeps the checkpoint: it holds its own fingerprint (pool, options, valid tags and label
# embeddings by content) and applies only if that matches
KEEP = (output_paths(Path("selected.parquet"))["checkpoint"].name,)


def fingerprint(ctx: RunContext) -> str:
    """The assembled pool, the graph and objective options and the valid-tag and label-embedding
    files; not shards, batch or checkpoint seconds, which do not change the order."""
    g, s = ctx.job.graph, ctx.job.selection
    return digest("select", ctx.fingerprints["assemble"], g.model_dump(),
                  s.model_dump(exclude={"shards", "batch", "checkpoint_seconds"}),
                  [file_identity(resolve_path(p)) for p in (g.valid_tags, g.label_embeddings) if p])


def graph_rule(ctx: RunContext) -> tuple[float, float | None, str]:
    """The threshold and target degree the job's graph uses, and why: an unset threshold is the
    bundled model's default (mean degree 5) unless the job names label embeddings or a model."""
    g = ctx.job.graph
    return graph_defaults(g, g.label_embeddings is None and g.embedding_model == DEFAULT_MODEL)


def select_config(ctx: RunContext) -> SelectConfig:
    """The select stage's options. With the output on an object store, the selection writes its
    files to local scratch (the stage uploads them) and checkpoints straight to the store."""
    j, g = ctx.job, ctx.job.graph
    path = ctx.stage_dir(NAME)
    selectable = ctx.counts("assemble")["selectable"]
    remote = isinstance(path, RemotePath)
    out = (ctx.scratch / "select" if remote else path) / "selected.parquet"
    cache = j.cache_dir()
    threshold, degree, _ = graph_rule(ctx)
    options = options_of(j.graph) | options_of(j.selection) | {"sim_threshold": threshold,
                                                                "target_degree": degree}
    if has_limits(j.selection):  # the assembled pool carries each record's group and cost as columns
        options |= {"groups": GROUP if j.selection.groups else None, "cost": COST, "tokenizer": None}
    return SelectConfig(
        pool=ctx.out / "assemble" / "pool.parquet", n=selection_size(j.selection, selectable),
        out=out, checkpoint=path / output_paths(out)["checkpoint"].name if remote else None,
        valid_tags=resolve_path(g.valid_tags) if g.valid_tags else None,
        embedding_model=g.embedding_model,
        label_embeddings=resolve_path(g.label_embeddings) if g.label_embeddings else _tag_embeddings(ctx),
        embedding_cache_dir=cache / "label-embeddings" if isinstance(cache, Path) else None,
        ray_address=j.ray.address, shard_placement=j.ray.shard_actors,
        labels_field="labels", score_field="score", id_field="id", progress=j.progress,
        previous_manifest=nightly.previous_manifest(ctx), records=False, ids_unique=True, **options)


def selection_size(s, selectable: int) -> int | None:
    """K: n, or the fraction of the selectable pool; none when only a budget bounds the selection."""
    if s.n is None and s.fraction is None:
        return None
    return max(1, s.k(selectable))


def _tag_embeddings(ctx: RunContext) -> Path | None:
    path = ctx.stage_dir("tag") / LABEL_EMBEDDINGS
    return ctx.local(path, "tag") if path.is_file() else None


def run(ctx: RunContext) -> StageResult:
    from mig_ray.selection.run import run_select

    path = ctx.stage_dir(NAME)
    if ctx.counts("assemble")["selectable"] == 0:
        raise JobError(f"{ctx.source}: no selectable record (see {ctx.out}/assemble/unselectable.jsonl)")
    cfg = select_config(ctx)
    log(f"graph: {graph_rule(ctx)[2]}")
    if isinstance(path, RemotePath):
        rmtree(cfg.out.parent)
        cfg.out.parent.mkdir(parents=True)
    summary = run_select(cfg, on_round=ctx.on_round)
    if isinstance(path, RemotePath):
        for f in sorted(cfg.out.parent.iterdir()):
            copy_file(f, path / f.name)
    c = summary["counts"]
    resumed = summary["greedy"].get("resumed_from_checkpoint", 0)
    graph = {k: v for k, v in summary["graph"].items() if k != "threshold_rule"}
    details = {"information": summary["information"], "graph": graph, "greedy": summary["greedy"],
               "seconds": summary["seconds"]}
    if "constraints" in summary:
        details["constraints"] = summary["constraints"]
    return StageResult({"selectable": c["selectable"], "selected": c["selected"],
                        "resumed_from_checkpoint": resumed}, details)
