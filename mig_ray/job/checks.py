"""What a job checks before it writes anything: that no output is one of its inputs, that an
object store is writable, and that the custom resources it asks for exist on the Ray it joined."""

from __future__ import annotations

import os
from pathlib import Path

from mig_ray.errors import JobError, PoolError
from mig_ray.guard import SELECT_SIDECAR, check_outputs_not_inputs, check_writable, clip, input_files
from mig_ray.job.context import RunContext, log
from mig_ray.job.jobfile import resolve_path
from mig_ray.job.nightly import RUN_FILE
from mig_ray.runtime.placement import cpu_shortfall, joins_a_cluster, unplaceable
from mig_ray.storage import RemotePath

FINAL_OUTPUTS = ("selected.jsonl", "selected.parquet", "selected.manifest.jsonl", "summary.json", "diff.json",
                 "job.resolved.yaml", RUN_FILE)


def check_outputs(ctx: RunContext) -> None:
    """No file the run may write (anything under OUTDIR or the annotation cache, the final
    outputs) is one of its inputs, by file identity: a hard link into OUTDIR counts."""
    j = ctx.job
    inputs: dict[str, Path] = {f"input {p}": p for p in j.input.resolved()}
    for key, val in (("graph.valid_tags", j.graph.valid_tags),
                     ("graph.label_embeddings", j.graph.label_embeddings)):
        if val:
            inputs[key] = resolve_path(val)
    if Path(ctx.source).is_file():
        inputs["job file"] = Path(ctx.source)
    outputs = {f"{folder.name}/{p.relative_to(folder)}": p for folder in (ctx.out, j.cache_dir())
               if isinstance(folder, Path) and folder.is_dir() for p in input_files(folder)}
    outputs.update({name: ctx.out / name for name in FINAL_OUTPUTS})
    if isinstance(ctx.out, Path) and (ctx.out / SELECT_SIDECAR).exists():
        raise JobError(f"{ctx.source}: output.dir {ctx.out} holds the outputs of `mig-ray select` "
                       f"({SELECT_SIDECAR}); a job would replace its selected.* and manifest: choose another "
                       "output.dir or remove them")
    try:
        check_outputs_not_inputs(outputs, inputs)
        check_writable([ctx.out / "summary.json"])
    except PoolError as e:
        raise JobError(f"{ctx.source}: output.dir {ctx.out}: {e}") from None
    for key, folder in (("output.dir", ctx.out), ("annotate.cache_dir", j.cache_dir())):
        if isinstance(folder, RemotePath):
            probe_store(folder, f"{ctx.source}: {key} {folder}")


def probe_store(folder: RemotePath, what: str) -> None:
    """Write and delete one small object, so a bucket that is missing or not writable fails now,
    with the URI named, and not after hours of tagging."""
    probe = folder / f".mig_ray-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as e:
        raise JobError(f"{what}: cannot write there ({clip(str(e), 300)})") from None


def check_placement(ctx: RunContext, started: bool) -> None:
    """Custom resources that no node has, or more shard actors than the CPUs can hold at once: a
    local Ray never grows, so fail now rather than wait forever; a cluster may still add nodes
    (autoscaler), so there it is a warning."""
    j = ctx.job
    asks = (("annotate.tagger.resources", j.annotate.tagger.resources, ctx.tagger is not None),
            ("annotate.scorer.resources", j.annotate.scorer.resources, ctx.scorer is not None),
            ("ray.shard_actors", j.ray.shard_actors, j.selection.shards > 1 or bool(j.ray.address)))
    for key, spec, used in asks:
        if used and unplaceable(spec.custom_resources):
            msg = f"{ctx.source}: {key}.custom_resources: no node of this Ray has {spec.custom_resources}"
            if started:
                import ray

                ray.shutdown()
                raise JobError(f"{msg} (a local Ray has no custom resources: set ray.address to a "
                               "cluster whose nodes were started with them, or drop the key)")
            log(f"warning: {msg}; its actors wait until such a node joins")
    if j.selection.shards > 1 and (short := cpu_shortfall(j.selection.shards, j.ray.shard_actors.num_cpus)):
        msg = (f"{ctx.source}: selection.shards {j.selection.shards} x ray.shard_actors.num_cpus "
               f"{j.ray.shard_actors.num_cpus:g} needs {short[0]:g} CPUs at once; this Ray has {short[1]:g}")
        if not joins_a_cluster(j.ray.address):
            if started:
                import ray

                ray.shutdown()
            raise JobError(f"{msg}: lower selection.shards (or shard_actors.num_cpus), or give the local Ray "
                           "more logical CPUs (ray.num_cpus)")
        log(f"warning: {msg}; the shard actors wait until the cluster grows")
