"""Run an annotator over a pool on Ray Data, through the annotation cache.

    read (id, messages) -> drop ids already cached -> annotator actors (map_batches) -> part writers

Only ids the cache has not seen under the annotator's identity reach the actors, so a nightly run
over a pool that grew pays only for the new records, and a run with nothing new loads no model.
Parts are written by Ray tasks (temp name, then rename), every `part_rows` results, so a killed
run keeps what it finished. A failed row is cached as failed and counted, not retried every run.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mig_ray import metrics
from mig_ray.annotate.cache import (
    cache_folder,
    check_kind,
    contains,
    identity_hash,
    identity_of,
    load_annotations,
    prepare_folder,
    quarantine_parts,
    result_table,
    scan_ids,
    write_part,
)
from mig_ray.annotate.resources import ActorResources
from mig_ray.runtime.session import ensure_ray, ray_progress_bars
from mig_ray.storage import Location, RemotePath, location

__all__ = ["AnnotateStats", "annotate", "load_annotations"]

AUX_CPUS = 0.1  # the read/filter/write tasks: small, so actors that take most CPUs cannot starve them
_CACHED: dict[str, np.ndarray] = {}  # per worker process: the cached-id array, fetched once


@dataclass
class AnnotateStats:
    """Counts of one annotate() call. total = cached + annotated; failed and model_calls are of
    the rows annotated in this call."""

    kind: str
    identity_hash: str
    cache_path: str
    total: int = 0
    cached: int = 0
    annotated: int = 0
    failed: int = 0
    model_calls: int = 0
    parts_written: int = 0
    quarantined: list[dict] = field(default_factory=list)  # unreadable parts moved aside, annotated again
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def annotate(source: Any, annotator_cls: type, annotator_cfg: Any, cache_dir: Location | str,
             resources: ActorResources | None = None, kind: str = "tags", progress: bool = True,
             part_rows: int = 10_000) -> AnnotateStats:
    """Annotate the records of `source` (an ingest output folder, or a ray.data.Dataset with columns
    id and messages) that the cache lacks; `annotator_cls(annotator_cfg)` is built once per actor."""
    t0 = time.perf_counter()
    check_kind(kind)
    resources = resources or ActorResources()
    ident = identity_of(annotator_cfg)
    folder = cache_folder(cache_dir, kind, ident)
    stats = AnnotateStats(kind, identity_hash(kind, ident), str(folder))
    ensure_ray()
    import ray
    import ray.data

    _warn_if_starved(resources)
    prepare_folder(folder, kind, ident)
    # the cache's ids are built in a task and stay in the object store: the driver sees their count
    n_ref, seen_ref, bad_ref = ray.remote(num_cpus=AUX_CPUS, num_returns=3)(_cached_ids).remote(
        str(folder), kind)
    # a part that cannot be read is moved aside, never trusted: its ids are annotated again
    stats.quarantined = [q.to_dict() for q in quarantine_parts(cache_dir, ray.get(bad_ref))]
    if not ray.get(n_ref):
        seen_ref = None
    with ray_progress_bars(progress):
        stats.total = _read(source, ["id"]).count()
        todo = _read(source, ["id", "messages"])
        if seen_ref is not None:
            todo = todo.map_batches(_drop_cached, fn_kwargs={"seen": seen_ref}, batch_format="pyarrow",
                                    num_cpus=AUX_CPUS)
            n_new = _read(source, ["id"]).map_batches(_drop_cached, fn_kwargs={"seen": seen_ref},
                                                       batch_format="pyarrow", num_cpus=AUX_CPUS).count()
        else:
            n_new = stats.total
        if n_new:
            kw = resources.map_batches_kwargs()
            # Ray 2.51+ deprecates `concurrency` for actor pools in favour of `compute`
            kw["compute"] = ray.data.ActorPoolStrategy(size=kw.pop("concurrency"))
            counter = ray.remote(num_cpus=0)(RecordCounter).remote() if progress else None
            done = todo.map_batches(_Annotate, batch_format="numpy", **kw,
                                    fn_constructor_args=(annotator_cls, annotator_cfg, kind, counter),
            ).map_batches(_write, fn_kwargs={"folder": str(folder), "kind": kind}, batch_size=part_rows,
                          batch_format="pyarrow", num_cpus=AUX_CPUS)
            # one bar for the stage (records/s and ETA over all new records) instead of Ray Data's
            # per-operator bars, whose counts are blocks and parts
            with ray_progress_bars(False), StageProgress(counter, n_new, kind):
                rows = done.take_all()
            for row in rows:
                stats.annotated += int(row["rows"])
                stats.failed += int(row["failed"])
                stats.model_calls += int(row["calls"])
                stats.parts_written += 1
                metrics.annotated(kind, int(row["rows"]), int(row["failed"]))
    stats.cached = stats.total - stats.annotated
    metrics.cached(kind, stats.cached)
    stats.seconds = round(time.perf_counter() - t0, 3)
    return stats


def _read(source: Any, columns: list[str]):
    import ray.data

    if isinstance(source, str | Path | RemotePath):
        source = ray.data.read_parquet(str(source), num_cpus=AUX_CPUS)
    if isinstance(source, ray.data.Dataset):
        # a projection task asks for 1 CPU by default, which actors on a small machine may hold
        return source.select_columns(columns, num_cpus=AUX_CPUS)
    raise TypeError(f"source must be an ingest folder or a ray.data.Dataset, got {type(source).__name__}")


def _warn_if_starved(res: ActorResources) -> None:
    """Actors that hold every CPU leave none for the read and write tasks: Ray Data then waits forever."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus and res.concurrency * res.num_cpus + AUX_CPUS > cpus:
        warnings.warn(f"{res.concurrency} annotator actors x {res.num_cpus} CPUs leave less than {AUX_CPUS} "
                      f"of this cluster's {cpus:g} CPUs for reading and writing; the stage may hang "
                      "(use fractional num_cpus)", RuntimeWarning, stacklevel=3)


def _cached_ids(folder: str, kind: str) -> tuple[int, np.ndarray, list[tuple[str, str]]]:
    """In a task: how many ids the readable parts hold, their sorted array, and the parts that
    cannot be read, with why (see cache.scan_ids)."""
    seen, bad = scan_ids(location(folder), kind)
    return len(seen), seen, bad


def _drop_cached(batch: pa.Table, seen: Any) -> pa.Table:
    import ray

    if isinstance(seen, np.ndarray):
        arr = seen
    else:
        arr = _CACHED.get(seen.hex())
        if arr is None:
            _CACHED.clear()
            arr = _CACHED[seen.hex()] = ray.get(seen)
    ids = np.array([s.encode() for s in batch.column("id").to_pylist()], dtype="S")
    return batch.filter(pa.array(~contains(arr, ids)))


class RecordCounter:
    """A Ray actor's state: how many records the annotator actors have finished (each adds after
    a batch and waits for the answer, a millisecond, so the count is complete when the stage is)."""

    def __init__(self) -> None:
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n

    def value(self) -> int:
        return self.done


class StageProgress:
    """A tqdm bar over the stage's new records, fed from a RecordCounter by a driver thread every
    second: records/s and an ETA for the whole stage from the first finished batch on, so a user
    sees within seconds whether it takes a minute or a day. No counter: no bar."""

    def __init__(self, counter: Any, total: int, kind: str, interval: float = 1.0) -> None:
        self.counter, self.total, self.kind, self.interval = counter, total, kind, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar = None

    def __enter__(self) -> StageProgress:
        if self.counter is None:
            return self
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=f"annotate {self.kind}", unit="rec", smoothing=0.05,
                        file=sys.stderr, dynamic_ncols=True)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._update()

    def _update(self) -> None:
        import ray

        done = ray.get(self.counter.value.remote())
        self.bar.update(min(done, self.total) - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._update()  # every batch's count has arrived: the actors wait for it
        self.bar.close()


class _Annotate:
    """Wraps an annotator: builds it once per actor, checks that every input id comes back in
    order (an annotator that drops or reorders rows would corrupt the cache), and gives the
    writer one Arrow table with the contract columns."""

    def __init__(self, annotator_cls: type, annotator_cfg: Any, kind: str, counter: Any = None) -> None:
        self.inner = annotator_cls(annotator_cfg)
        self.kind = kind
        self.counter = counter

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        out = _to_table(self.inner(batch))
        want = [str(x) for x in batch["id"]]
        got = out.column("id").to_pylist() if "id" in out.column_names else None
        if got != want:
            raise RuntimeError(f"{type(self.inner).__name__} returned ids that do not match its input "
                               f"batch ({len(want)} in, {out.num_rows} out)")
        if self.counter is not None:
            import ray

            ray.get(self.counter.add.remote(len(want)))
        return result_table(out, self.kind)


def _to_table(out: Any) -> pa.Table:
    if isinstance(out, pa.Table):
        return out
    if isinstance(out, dict):
        return pa.table({k: (pa.array(list(v)) if isinstance(v, np.ndarray) and v.dtype == object else v)
                         for k, v in out.items()})
    if hasattr(out, "to_dict") and hasattr(out, "columns"):  # pandas
        return pa.Table.from_pandas(out, preserve_index=False)
    raise TypeError(f"annotator returned {type(out).__name__}; expected a pyarrow Table or dict of columns")


def _write(batch: pa.Table, folder: str, kind: str) -> dict[str, np.ndarray]:
    table = result_table(batch, kind)
    path = write_part(table, location(folder))
    failed = int(np.sum(np.asarray(table.column("status").to_pylist(), dtype=object) != "ok"))
    calls = int(np.sum(table.column("calls").to_numpy(zero_copy_only=False)))
    return {"rows": np.array([table.num_rows]), "failed": np.array([failed]), "calls": np.array([calls]),
            "part": np.array([str(path)])}
