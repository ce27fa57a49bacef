"""Files a run cannot trust are moved aside, never deleted, and the run goes on without them.

A cache is a cache: a part that a node lost mid-upload, a disk that filled or a stray copy broke
must cost the work that made it (the records are annotated again, the stage runs again), never a
stuck pipeline, and never the user's only copy of something. `quarantine()` moves such a file to
`<root>/quarantine/<its path under root>` (locally a rename; on an object store a copy, then the
delete) and says so in one line on stderr, naming the file, the reason and where it went.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mig_ray.storage import Location, RemotePath, copy_file, location

FOLDER = "quarantine"


@dataclass(frozen=True)
class Quarantined:
    """One file moved aside: where it was, where it is now, and why."""

    path: str
    moved_to: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Damaged(Exception):
    """Output of an earlier stage that a later one could not read; it was moved aside and the
    stages named must run again (the job loop catches this and redoes them)."""

    def __init__(self, stages: tuple[str, ...], moved: list[Quarantined]) -> None:
        super().__init__(f"damaged output of {', '.join(stages)}: {', '.join(m.path for m in moved)}")
        self.stages = stages
        self.moved = moved


def one_line(e: BaseException) -> str:
    """An exception as a short reason: its type and first line (Arrow's messages run long)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def destination(path: Location, root: Location) -> Location:
    """`<root>/quarantine/<path relative to root>` (just its name when it is not under root), with
    `.1`, `.2`, ... appended when an earlier quarantine already holds that name."""
    rel = str(path)[len(str(root).rstrip("/")) + 1:] if str(path).startswith(str(root).rstrip("/") + "/") \
        else path.name
    base = location(root) / FOLDER
    for part in rel.split("/"):
        base = base / part
    dest, n = base, 0
    while dest.exists():
        n += 1
        dest = base.with_name(f"{base.name}.{n}")
    return dest


def quarantine(path: Location, root: Location, reason: str, what: str = "") -> Quarantined:
    """Move `path` aside under `<root>/quarantine/` and warn in one line; returns what was done."""
    dest = destination(path, root)
    if isinstance(path, RemotePath) or isinstance(dest, RemotePath):
        copy_file(path, dest)
        path.unlink(missing_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)
        except OSError:  # another filesystem: copy, then remove
            shutil.copyfile(path, dest)
            Path(path).unlink(missing_ok=True)
    then = f"; {what}" if what else ""
    print(f"warning: {path}: unreadable ({reason}); moved to {dest}{then}", file=sys.stderr, flush=True)
    return Quarantined(str(path), str(dest), reason)
