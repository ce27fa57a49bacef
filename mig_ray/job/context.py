"""What every stage of a job reads: the typed run context.

A stage is a module with `NAME`, `fingerprint(ctx) -> str` (what its output depends on) and
`run(ctx) -> StageResult`; it reads the job and earlier stages' results from the context and
writes only under `ctx.stage_dir(NAME)`. The loop in pipeline.py skips, runs and marks stages.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mig_ray.job.annotators import Annotator
from mig_ray.job.jobfile import JobConfig
from mig_ray.job.kept import dropped_folder, record_source
from mig_ray.job.stages import StageResult
from mig_ray.runtime.session import RayLogs
from mig_ray.storage import Location, copy_file


@dataclass
class RunContext:
    """One run of a job: the validated job, where it writes, its annotators and what each stage
    reported so far. A dataclass, so that a reader (and a type checker) can follow every field."""

    job: JobConfig
    source: str  # the job file, for messages
    out: Location  # OUTDIR, local or on an object store
    scratch: Path  # the driver's own folder: OUTDIR itself when local (see local_scratch)
    ray_logs: RayLogs
    tagger: Annotator | None  # None: labels from the data
    scorer: Annotator | None  # None: a score field or a constant
    on_round: Callable | None = None  # the sharded selection's test hook (select_on_ray)
    fingerprints: dict[str, str] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    quarantined: list[dict] = field(default_factory=list)  # files of this run moved aside (quarantine.py)
    ray_seconds: dict[str, float] = field(default_factory=dict)  # Ray's start in this run (pipeline.ray_up)

    @classmethod
    def create(cls, job: JobConfig, source: str, tagger: Annotator | None, scorer: Annotator | None,
               on_round: Callable | None = None) -> RunContext:
        out = job.output_dir()
        scratch = local_scratch(out)
        return cls(job, source, out, scratch, RayLogs(scratch / "logs" / "ray.log"), tagger, scorer, on_round)

    def stage_dir(self, name: str) -> Location:
        return self.out / name

    def counts(self, stage: str) -> dict[str, Any]:
        return self.results[stage].counts

    def record_parts(self) -> list[Location]:
        """The ingest stage's Parquet parts, in input order. When the job curates, the dedup stage
        dropped some of their rows: read a part less `dropped_folder()`'s positions (job/kept.py)."""
        return sorted((self.out / "ingest" / "parts").glob("part-*.parquet"))

    def dropped_folder(self) -> Location | None:
        """The dedup stage's dropped positions, a file an ingest part (None: the job does not curate)."""
        return dropped_folder(self.out) if self.job.curates() else None

    def record_source(self) -> Any:
        """The kept records for the annotators: the ingest folder, or a Ray dataset of it filtered by
        the dropped positions."""
        return record_source(self.out, self.job.curates())

    def local(self, path: Location, folder: str) -> Path:
        """A driver-side copy of a small file of OUTDIR (the file itself when OUTDIR is local)."""
        if isinstance(path, Path):
            return path
        local = self.scratch / folder / path.name
        copy_file(path, local)
        return local


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def local_scratch(out: Location) -> Path:
    """The driver's own folder for a run: OUTDIR itself when it is local; for an object store, a
    folder of this machine's temp space named by the URI (Ray's log, the selection's files before
    they are uploaded, copies of small OUTDIR files the selection reads)."""
    if isinstance(out, Path):
        return out
    key = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mig_ray-runs" / key
