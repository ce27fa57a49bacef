"""Nightly curation: a job re-run over a grown pool in the same OUTDIR. The finished run's
selection is archived to OUTDIR/previous before this run overwrites it; afterwards diff.json says
which ids were added and dropped, with the information before and after and last night's selection
measured on tonight's graph (the one number that compares with tonight's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from mig_ray.errors import JobError, PoolError
from mig_ray.job.context import RunContext
from mig_ray.quarantine import one_line, quarantine
from mig_ray.storage import Location, copy_file, rmtree, write_atomic

RUN_FILE = "run.json"  # the finished run's record: its ingest fingerprint and information
PREVIOUS = "previous"


def archive_previous_run(ctx: RunContext) -> None:
    """A different pool in an OUTDIR that holds a finished run is a nightly increment: it needs
    --incremental, and the finished run's selection moves to OUTDIR/previous for the diff. The
    run record goes last, so a crash after this point does not archive twice."""
    path = ctx.out / RUN_FILE
    prev = read_record(ctx, path)
    if prev is None:
        return
    if prev.get("ingest_fingerprint") == ctx.fingerprints["ingest"]:
        return
    if not ctx.job.incremental:
        raise JobError(f"{ctx.out} holds a run over a different pool (the input files changed); "
                       "pass --incremental (or `incremental: true`) for nightly curation, or use a new "
                       "output.dir")
    keep = ctx.out / PREVIOUS
    rmtree(keep)  # a crash from here on leaves run.json: the next run archives again
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("selected.manifest.jsonl", "summary.json", RUN_FILE):
        if (ctx.out / name).exists():
            copy_file(ctx.out / name, keep / name)
    path.unlink()


def previous_run(ctx: RunContext) -> dict | None:
    """The archived run this one follows, when it was over a different pool."""
    prev = read_record(ctx, ctx.out / PREVIOUS / RUN_FILE)
    if prev is None:
        return None
    return None if prev.get("ingest_fingerprint") == ctx.fingerprints["ingest"] else prev


def previous_manifest(ctx: RunContext) -> Path | None:
    """Last night's manifest when this run is an increment over it: measured on this run's graph."""
    path = ctx.out / PREVIOUS / "selected.manifest.jsonl"
    if previous_run(ctx) is None or not path.is_file():
        return None
    from mig_ray.selection.run import read_manifest

    local = ctx.local(path, PREVIOUS)
    try:
        read_manifest(local)
    except PoolError as e:  # last night's manifest is damaged: tonight runs without the comparison
        ctx.quarantined.append(quarantine(path, ctx.out, str(e).replace(f"{local}:", "line "),
                                          "tonight's diff goes without it").to_dict())
        return None
    return local


def read_record(ctx: RunContext, path: Location) -> dict | None:
    """A run record (run.json), or None when there is none; one that is not a JSON object with the
    fingerprints is moved aside (OUTDIR/quarantine/) and counts as none: a damaged archive costs
    the night's diff, never the run."""
    if not path.exists():
        return None
    try:
        prev = json.loads(path.read_text())
        if not isinstance(prev, dict) or not isinstance(prev.get("ingest_fingerprint"), str):
            raise ValueError("not a run record (a JSON object with ingest_fingerprint)")
        if not isinstance(prev.get("information", {}), dict):
            raise ValueError("its information is not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        ctx.quarantined.append(quarantine(path, ctx.out, one_line(e), "taken as no finished run").to_dict())
        return None
    return prev


def record_run(ctx: RunContext, information: dict) -> None:
    """The finished run's record, written last: the next night compares its pool with this one."""
    write_atomic(ctx.out / RUN_FILE, json.dumps({"ingest_fingerprint": ctx.fingerprints["ingest"],
                                                 "write_fingerprint": ctx.fingerprints["write"],
                                                 "information": information}, indent=2))


def write_diff(ctx: RunContext, previous: dict, information: dict) -> dict[str, Any]:
    """diff.json: the ids added and dropped since the archived run, the information of both, and
    how many of tonight's records were dropped as copies of an earlier night's."""
    old_path = ctx.out / PREVIOUS / "selected.manifest.jsonl"
    old = []
    if old_path.exists():
        try:
            old = manifest_ids(old_path)
        except (ValueError, KeyError, TypeError) as e:  # orjson's decode error is a ValueError
            ctx.quarantined.append(quarantine(old_path, ctx.out, one_line(e),
                                              "the diff lists no previous ids").to_dict())
    new = manifest_ids(ctx.out / "selected.manifest.jsonl")
    old_set, new_set = set(old), set(new)
    dedup = ctx.results["dedup"].counts if "dedup" in ctx.results else {}
    diff = {"previous_selected": len(old), "selected": len(new),
            # tonight's records dropped as duplicates of an earlier night's kept ones (not annotated)
            "duplicates_of_earlier_nights": dedup.get("earlier_nights", 0),
            "added": [i for i in new if i not in old_set],
            "dropped": [i for i in old if i not in new_set],
            "kept": len(old_set & new_set),
            "information": {
                "before": previous.get("information", {}).get("selected"),
                "after": information["selected"],
                "before_on_this_graph": information.get("previous_selection", {}).get("selected"),
                "note": "before and after: each on its own run's label graph; before_on_this_graph: "
                        "the previous selection on this run's graph, the measure `after` is on"}}
    write_atomic(ctx.out / "diff.json", json.dumps(diff, indent=2) + "\n")
    return diff


def manifest_ids(manifest: Location) -> list[str]:
    return [orjson.loads(x)["id"] for x in manifest.read_bytes().splitlines()]
