"""`mig-ray run JOB.yaml`: the loop over the job's stages, each resumable.

A stage is a module of this package (`ingest`, `tag`, `score`, `assemble`, `select`, `write`) with
`NAME`, `fingerprint(ctx)` and `run(ctx) -> StageResult`. Every stage persists its output under
OUTDIR/<stage>/ and a completion marker keyed by its fingerprint; a re-run (after a crash, a
`kill -9`, or just again) skips completed stages, and annotation resumes from its cache, so the
final outputs are byte-identical. Adding a stage is a module and one line in STAGES.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from mig_ray.errors import JobError
from mig_ray.job import assemble, checks, dedup, ingest, nightly, score, select, summary, tag, write
from mig_ray.job.annotators import annotators
from mig_ray.job.context import RunContext, log
from mig_ray.job.faults import REDO_ATTEMPTS, unreadable_outputs, user_error
from mig_ray.job.jobfile import JobConfig
from mig_ray.job.stages import MARKER, StageDir, StageLog, StageResult
from mig_ray.quarantine import Damaged, quarantine
from mig_ray.storage import RemotePath, copy_file, write_atomic

STAGES = (ingest, dedup, tag, score, assemble, select, write)
STAGE_NAMES = tuple(stage.NAME for stage in STAGES)


def run_job(job: JobConfig, source: str = "job", until: str = "write",
            on_round: Callable | None = None, check_only: bool = False) -> dict[str, Any]:
    """Validate the annotators' options, then run the job's stages up to `until`. `check_only`
    stops after the checks a run makes before it writes anything or starts Ray (`run --check`).
    `on_round` is the sharded selection's test hook (select_on_ray)."""
    if until not in STAGE_NAMES:
        raise JobError(f"unknown stage {until!r} (stages: {', '.join(STAGE_NAMES)})")
    tagger, scorer = annotators(job, source)
    ctx = RunContext.create(job, source, tagger, scorer, on_round)
    if check_only:
        checks.check_outputs(ctx)
        return {"checked": source}
    stage_log = StageLog()
    result = run_stages(ctx, stage_log, until)
    log(stage_log.table())
    return result


def run_stages(ctx: RunContext, stage_log: StageLog, until: str = "write") -> dict[str, Any]:
    """Run (or skip) every stage up to and including `until`; the summary when all ran."""
    checks.check_outputs(ctx)
    try:
        ctx.out.mkdir(parents=True, exist_ok=True)
        ctx.scratch.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobError(f"{ctx.source}: output.dir {ctx.out}: cannot create it ({e.strerror})") from None
    for stage in STAGES:
        ctx.fingerprints[stage.NAME] = stage.fingerprint(ctx)
    nightly.archive_previous_run(ctx)
    write_atomic(ctx.out / "job.resolved.yaml", ctx.job.resolved_yaml())
    todo = STAGES[:STAGE_NAMES.index(until) + 1]
    started = [False]
    result = None
    try:
        for attempt in range(REDO_ATTEMPTS):
            try:
                run_todo(ctx, stage_log, todo, started)
                break
            except Damaged as e:  # an earlier stage's output was lost since it was done: redo it
                ctx.quarantined += [q.to_dict() for q in e.moved]
                if attempt == REDO_ATTEMPTS - 1:
                    raise JobError(f"{ctx.source}: {e} (still damaged after {REDO_ATTEMPTS} runs of the "
                                   "stages that write it)") from None
                for name in e.stages:
                    (StageDir(ctx.out, name).path / MARKER).unlink(missing_ok=True)
                log(f"redoing {', '.join(e.stages)}: its output was damaged since it was done")
        if until == STAGE_NAMES[-1]:  # Ray needs none of it: the outputs are whole before it goes down
            result = summary.finish(ctx, stage_log)
    except Exception as e:
        plain = user_error(ctx, e)
        if plain is e:
            raise
        raise plain from e
    finally:
        if started[0]:
            import ray

            t = time.perf_counter()
            ray.shutdown()
            log(f"ray: started in {ctx.ray_seconds.get('start', 0.0):.2f} s, shut down in "
                f"{time.perf_counter() - t:.2f} s")
        ctx.ray_logs.stop()
        if isinstance(ctx.out, RemotePath) and ctx.ray_logs.path.is_file():
            copy_file(ctx.ray_logs.path, ctx.out / "logs" / "ray.log")
    if result is None:
        return {"stages": stage_log.rows, "until": until}
    if ctx.job.compare is not None:  # after select and write; Ray is not needed
        from mig_ray.job import compare

        # summary.json is whole before the comparison too, so a failed comparison leaves the
        # selection's summary; it gains the `compare` key once the comparison is done
        result["compare"] = compare.run(ctx)
        summary.write_summary(ctx, result)
    return result


def run_todo(ctx: RunContext, stage_log: StageLog, todo: tuple, started: list[bool]) -> None:
    """Run or skip each stage of `todo`. A stage done in an earlier run whose Parquet outputs no
    longer read (a part truncated, a file replaced) is not trusted: its files are moved aside and
    it runs again. The marker is written only after a stage's writes all finished."""
    for i, stage in enumerate(todo, 1):
        marker = StageDir(ctx.out, stage.NAME)
        fp = ctx.fingerprints[stage.NAME]
        with stage_log.stage(stage.NAME) as row:
            stats = marker.done(fp)
            if stats is not None and (bad := unreadable_outputs(marker.path)):
                ctx.quarantined += [quarantine(p, ctx.out, why, f"stage {stage.NAME} runs again").to_dict()
                                    for p, why in bad]
                stats = None
            if stats is not None:
                row["status"] = "skipped"
                log(f"[{i}/{len(STAGES)}] {stage.NAME}: done in an earlier run, skipped")
                result = StageResult.from_marker(stats)
            else:
                log(f"[{i}/{len(STAGES)}] {stage.NAME}")
                started[0] = started[0] or ray_up(ctx)
                marker.reset(keep=getattr(stage, "KEEP", ()))
                result = stage.run(ctx)
                marker.finish(fp, result.to_marker())
                ctx.quarantined += result.details.get("quarantined", [])
            row["counts"] = result.counts
            if "source" in result.details:  # where labels or scores came from, for the table
                row["source"] = result.details["source"]
            ctx.results[stage.NAME] = result


def ray_up(ctx: RunContext) -> bool:
    """Join or start Ray when the first stage has work to do (a finished job starts none)."""
    from mig_ray.runtime.session import ray_up as join_or_start

    ctx.ray_logs.start()  # Ray's own log lines go to OUTDIR/logs/ray.log
    t = time.perf_counter()
    started = join_or_start(ctx.job.ray.address, ctx.job.ray.num_cpus or max(8, os.cpu_count() or 1),
                            include_dashboard=ctx.job.ray.include_dashboard)
    ctx.ray_seconds["start"] = round(time.perf_counter() - t, 3)  # inside the first stage's seconds
    import ray.data  # noqa: F401  (its logger exists once imported)

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines drown the stages
    checks.check_placement(ctx, started)
    return started

