"""Stage `ingest`: the input files -> Parquet parts of normalised records with stable ids, in input
order, read in Ray tasks where the data is; bad records quarantined to rejects.jsonl."""

from __future__ import annotations

from mig_ray import __version__
from mig_ray.job.context import RunContext
from mig_ray.job.stages import StageResult, file_identity
from mig_ray.job.stages import fingerprint as digest
from mig_ray.pools.ingest import ingest

NAME = "ingest"


def fingerprint(ctx: RunContext) -> str:
    """The input files by identity (path, size, mtime), the layout and the id rule."""
    spec = ctx.job.input
    return digest("ingest", __version__, [file_identity(p) for p in spec.resolved()], spec.layout,
                  spec.id_field)


def run(ctx: RunContext) -> StageResult:
    path = ctx.stage_dir(NAME)
    res = ingest(ctx.job.input.resolved(), path / "parts", layout=ctx.job.input.layout,
                 id_field=ctx.job.input.id_field, rejects_path=path / "rejects.jsonl",
                 progress=ctx.job.progress).to_dict()
    return StageResult({k: res[k] for k in ("read", "rejected", "accepted")},
                       {"reasons": res["reasons"], "layouts": res["layouts"]})
