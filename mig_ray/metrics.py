"""A job's progress as Ray metrics, so Ray's Prometheus endpoint and dashboard show a running job.

Each stage calls one function below where its counts are known (ingest when its parts are final,
the annotation runner per part written, the sharded selection per committed round, the write
stage at its end). Ray exports a Counter named `mig_ray_X` as `ray_mig_ray_X_total` from every
node's metrics agent (the Prometheus text at the port `ray.nodes()` lists as `MetricsExportPort`),
with the dashboard or without it. Outside a Ray session the calls cost a dictionary lookup and
record nothing anyone reads. Ground floor: imports only ray.util.metrics, and that lazily.
"""

from __future__ import annotations

from functools import cache
from typing import Any

PREFIX = "mig_ray_"
# name -> (description, tag keys)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "records_ingested": ("records accepted by ingest (after duplicates are dropped)", ()),
    "records_rejected": ("records quarantined by ingest: bad input and duplicate ids", ()),
    "duplicates_dropped": ("records ingest dropped as a later copy of an id it had already read", ()),
    "records_annotated": ("records an annotator (tagger or scorer) ran on, failures included", ("kind",)),
    "records_cached": ("records whose annotation came from the cache", ("kind",)),
    "annotations_failed": ("records the annotator failed on (cached as failed, counted)", ("kind",)),
    "rounds_committed": ("rounds the sharded greedy committed", ()),
    "picks_committed": ("samples the sharded greedy committed to the selection", ()),
    "bytes_written": ("bytes of the files a stage wrote", ("stage",)),
}


@cache
def counter(name: str) -> Any:
    """The Ray Counter of `name` (one of COUNTERS), made once per process."""
    from ray.util.metrics import Counter

    description, tag_keys = COUNTERS[name]
    return Counter(PREFIX + name, description=description, tag_keys=tag_keys)


def add(name: str, value: float, **tags: str) -> None:
    """Add `value` to a counter; zero adds nothing (Ray's Counter takes only positive steps)."""
    if value > 0:
        counter(name).inc(value, tags=tags or None)


def ingested(accepted: int, rejected: int, duplicates: int, part_bytes: int) -> None:
    add("records_ingested", accepted)
    add("records_rejected", rejected)
    add("duplicates_dropped", duplicates)
    add("bytes_written", part_bytes, stage="ingest")


def annotated(kind: str, rows: int, failed: int) -> None:
    """One annotation part written: `rows` records, `failed` of them failed."""
    add("records_annotated", rows, kind=kind)
    add("annotations_failed", failed, kind=kind)


def cached(kind: str, rows: int) -> None:
    add("records_cached", rows, kind=kind)


def round_committed(picks: int) -> None:
    add("rounds_committed", 1)
    add("picks_committed", picks)


def bytes_written(stage: str, size: int) -> None:
    add("bytes_written", size, stage=stage)
