"""A finished job's final outputs: the selected records and manifest copied to OUTDIR's top, the
summary (counts per stage, information, graph, greedy, seconds) and, for a nightly increment, the
diff against the archived run."""

from __future__ import annotations

import json
from typing import Any

from mig_ray import __version__
from mig_ray.job import nightly, select
from mig_ray.job.context import RunContext
from mig_ray.job.stages import StageLog
from mig_ray.storage import copy_file, write_atomic


def finish(ctx: RunContext, log: StageLog) -> dict[str, Any]:
    previous = nightly.previous_run(ctx)
    w = ctx.stage_dir("write")
    suffix = ctx.job.output.format
    for name in (f"selected.{suffix}", "selected.manifest.jsonl"):
        copy_file(w / name, ctx.out / name)
    sel = ctx.results["select"].details
    summary = {
        "mig_ray_version": __version__,
        "command": "run",
        "job": ctx.job.model_dump(mode="json"),
        "counts": count_table(ctx),
        "information": sel["information"],
        "graph": sel["graph"],
        "greedy": sel["greedy"],
        "stages": log.rows,
        "approximate": False,
        "outputs": {
            "selected": str(ctx.out / f"selected.{suffix}"),
            "manifest": str(ctx.out / "selected.manifest.jsonl"),
            "rejects": str(ctx.out / "ingest" / "rejects.jsonl"),
            "unselectable": str(ctx.out / "assemble" / "unselectable.jsonl"),
            "selection": str(ctx.out / "select" / "selected.summary.json"),
        },
    }
    if ctx.ray_seconds:  # Ray's start, counted in the first stage that ran (its shutdown is logged)
        summary["ray"] = {"start_seconds": ctx.ray_seconds["start"]}
    if "constraints" in sel:  # quotas and budget: per group, pool and selected against the cap
        summary["constraints"] = sel["constraints"]
    if ctx.quarantined:  # files of this run moved aside (never deleted) and their work redone
        summary["counts"]["quarantined"] = len(ctx.quarantined)
        summary["quarantined"] = ctx.quarantined
    if previous is not None:
        summary["diff"] = nightly.write_diff(ctx, previous, sel["information"])
        summary["outputs"]["diff"] = str(ctx.out / "diff.json")
    write_summary(ctx, summary)
    write_atomic(ctx.out / "job.resolved.yaml", ctx.job.resolved_yaml() + graph_comment(ctx, sel["graph"]))
    nightly.record_run(ctx, sel["information"])
    return summary


def graph_comment(ctx: RunContext, graph: dict[str, Any]) -> str:
    """What the run's graph used, as a comment after the resolved job (an unset threshold, or one
    chosen by target degree, is known only once the graph is built)."""
    _, degree, rule = select.graph_rule(ctx)
    how = f"from target_degree {degree:g}" if degree is not None else "as given"
    return (f"# graph as built by this run: sim_threshold {graph['threshold']:.6g} ({how}; {rule}), "
            f"{graph['labels']} labels, mean degree {graph['mean_degree']:.3g}\n")


def write_summary(ctx: RunContext, summary: dict[str, Any]) -> None:
    write_atomic(ctx.out / "summary.json", json.dumps(summary, indent=2) + "\n")


def count_table(ctx: RunContext) -> dict[str, Any]:
    ing, asm = ctx.counts("ingest"), ctx.counts("assemble")
    return {"records_in": ing.get("read"), "rejected": ing.get("rejected"),
            "ingested": asm["ingested"], "tagging": ctx.counts("tag"), "scoring": ctx.counts("score"),
            "unselectable": asm["unselectable"], "selectable": asm["selectable"],
            "selected": ctx.counts("select")["selected"]}
