"""Checks done before anything is opened for writing: no output may be an input, every output
folder must be writable, and an output path must not name a directory.

Identity is (device, inode), so a hard link or a symlink to an input counts as that input; a path
that does not exist yet is compared by its resolved name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mig_ray.errors import PoolError
from mig_ray.storage import RemotePath

MAX_SHOWN = 200


def short(value: object, limit: int = MAX_SHOWN) -> str:
    """repr of a value cut to `limit` characters: messages never print a huge value whole."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxdict = r.maxtuple = r.maxset = 8
    r.maxlevel = 4
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """A message part cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def input_files(path: Path) -> list[Path]:
    """The files an input path stands for: itself, or every file under a directory."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def check_outputs_not_inputs(outputs: Mapping[str, Path], inputs: Mapping[str, Path | None]) -> None:
    """PoolError naming both when an output is an input (same file, a hard link or a symlink)."""
    ids: dict[tuple[int, int], tuple[str, Path]] = {}
    names: dict[Path, tuple[str, Path]] = {}
    for what, path in inputs.items():
        if path is None or isinstance(path, RemotePath):  # objects have no links: names differ or not
            continue
        for f in input_files(Path(path)):
            ident = _identity(f)
            if ident is not None:
                ids.setdefault(ident, (what, f))
            names.setdefault(Path(os.path.realpath(f)), (what, f))
    for what, out in outputs.items():
        if isinstance(out, RemotePath):
            continue
        out = Path(out)
        hit = ids.get(_identity(out)) if out.exists() else None
        hit = hit or names.get(Path(os.path.realpath(out)))
        if hit is not None:
            raise PoolError(f"{out}: the {what} output would overwrite the {hit[0]} {hit[1]} "
                            "(same file); choose another output name")


def check_writable(outputs: Iterable[Path]) -> None:
    """Each output is not a directory and its folder exists or can be made, and is writable."""
    for out in outputs:
        if isinstance(out, RemotePath):  # found when written; the job probes its output store first
            continue
        out = Path(out)
        if out.is_dir():
            raise PoolError(f"{out}: is a directory; give a file name for the output")
        folder = out.parent
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise PoolError(f"{folder}: cannot create the output folder ({probe} is not a directory)")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PoolError(f"{probe}: the output folder is not writable")


JOB_MARKERS = ("run.json", "job.resolved.yaml")  # what only `mig-ray run` writes at OUTDIR's top
SELECT_SIDECAR = "selected.summary.json"  # what `mig-ray select -o DIR/selected.*` writes there


def check_not_a_jobs_outputs(outputs: Iterable[Path], force: bool = False) -> None:
    """`select` (and `demo`) do not replace the files of a job's output folder (its selected.jsonl
    and manifest have the same names) unless told to with --force."""
    if force:
        return
    existing = [p for p in outputs if isinstance(p, Path) and p.exists()]
    for folder in {p.parent for p in existing}:
        if any((folder / m).exists() for m in JOB_MARKERS):
            names = ", ".join(sorted(p.name for p in existing if p.parent == folder)[:4])
            raise PoolError(f"{folder} holds the outputs of a job (mig-ray run): {names} would be replaced; "
                            "choose another --out, or pass --force to replace them")
