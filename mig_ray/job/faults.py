"""What a long-lived job meets besides bad input: a stage's output damaged after it was done, a
Ray task's own error inside Ray's wrappers, a disk that filled. Each ends in a redo or in one line
that names the file or folder, never in a stack or an "internal error"."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pyarrow as pa

from mig_ray.errors import JobError
from mig_ray.job.context import RunContext
from mig_ray.quarantine import one_line
from mig_ray.runtime.task_errors import task_cause
from mig_ray.storage import Location, parquet_file

REDO_ATTEMPTS = 3  # runs of the loop when a later stage finds an earlier one's output damaged


def unreadable_outputs(folder: Location) -> list[tuple[Location, str]]:
    """The Parquet files under a finished stage's folder whose footer does not read (a truncated
    or replaced part), with why; cheap: one footer per file, no data."""
    bad = []
    for p in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        if p.name.startswith(".") or not p.is_file():  # a temp file; a folder named *.parquet
            continue
        try:
            _ = parquet_file(p).metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            bad.append((p, one_line(e)))
    return bad


def user_error(ctx: RunContext, e: BaseException) -> BaseException:
    """What the user should read for `e` raised by a stage: a full disk as one line naming the
    folder; a Ray task's own error unwrapped (its one-line message, its type for the CLI); else e."""
    cause = task_cause(e)
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        return JobError(f"{ctx.source}: the disk is full: no space left in {full_folder(ctx, cause)}; free "
                        "space (or point output.dir elsewhere) and run the job again: finished stages are "
                        "kept and the rest resumes")
    return cause


def full_folder(ctx: RunContext, e: OSError) -> str:
    """The folder that filled: the failed file's folder when the error names it, else of the job's
    local folders (OUTDIR, the cache, the driver's scratch) the one with the least space left."""
    if e.filename:
        return str(Path(e.filename).parent)
    local = [p for p in (ctx.out, ctx.job.cache_dir(), ctx.scratch) if isinstance(p, Path)]
    free = []
    for p in local:
        q = p
        while not q.exists() and q != q.parent:
            q = q.parent
        try:
            free.append((shutil.disk_usage(q).free, str(p)))
        except OSError:
            continue
    return min(free)[1] if free else str(ctx.out)
