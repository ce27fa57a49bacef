"""Stage `dedup`: exact and near-duplicate removal and benchmark decontamination, between ingest and
tag, so that no copy is annotated and none is selected. Of each cluster of duplicates the lowest
input position stays (the tie rule's choice); every record left out is listed with its reason in
dedup/duplicates.jsonl (id, kept twin's id, estimated Jaccard) or dedup/contaminated.jsonl
(benchmark file, matching n-gram), and counted. The kept records are not written again: the
positions left out of each ingest part go to dedup/dropped/, and every later stage reads the ingest
parts less those (job/kept.py).

The work runs in Ray tasks where the data is (dedup_tasks.py); the driver sees counts and the
verified duplicate edges (21 bytes each: at 10^8 records with 1% near duplicates, about 21 MB).
The kept records' signatures go to the annotation cache, keyed by id; with --incremental
tonight's records are also compared with every earlier night's: a re-crawled prompt is dropped
tonight and not annotated again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from mig_ray import __version__
from mig_ray.curate.clusters import keep_lowest
from mig_ray.curate.contamination import NgramIndex
from mig_ray.errors import BadRecord, JobError
from mig_ray.job.context import RunContext
from mig_ray.job.dedup_tasks import (
    PAIR_SCHEMA,
    CurateSpec,
    attach,
    bucket_pairs,
    finish_part,
    part_rows,
    sign_cached,
    sign_part,
    split_by_source,
    verify,
)
from mig_ray.job.jobfile import DecontaminateSpec, JobConfig
from mig_ray.job.join import buckets_for, write_ipc
from mig_ray.job.kept import dropped_folder
from mig_ray.job.stages import StageResult, file_identity
from mig_ray.job.stages import fingerprint as digest
from mig_ray.pools.layouts import normalise as messages_of
from mig_ray.runtime.session import run_tasks
from mig_ray.storage import Location, concat_files, location, open_read, read_parquet, rmtree, write_atomic

NAME = "dedup"
OUTPUTS = "dropped positions"  # what the stage leaves for later stages (before: rewritten parts)
SIGNATURE_SCHEME = 2  # raised when a signature's value changes (2: FNV-1a word hashes, compiled)
NIGHTS = "nights.json"  # in the signature cache: the ingest fingerprints of the nights, in order


def fingerprint(ctx: RunContext) -> str:
    """The ingest, the settings, the benchmark files by identity and (incremental) the earlier
    nights in the cache."""
    j = ctx.job
    if not j.curates():
        return digest("dedup", ctx.fingerprints["ingest"], False)
    bench = None
    if j.decontaminate is not None:
        bench = [j.decontaminate.model_dump(), [file_identity(p) for p in benchmark_files(j.decontaminate)]]
    nights = earlier_nights(ctx) if j.incremental and j.dedup.enabled else []
    return digest("dedup", __version__, OUTPUTS, ctx.fingerprints["ingest"], j.dedup.model_dump(), bench,
                  nights)


def run(ctx: RunContext) -> StageResult:
    j = ctx.job
    if not j.curates():
        return StageResult({"enabled": 0})
    path = ctx.stage_dir(NAME)
    work = path / "_work"
    left_out = dropped_folder(ctx.out)
    for sub in (work, left_out, path / "_duplicates"):
        sub.mkdir(parents=True, exist_ok=True)
    d = j.dedup
    parts = ctx.record_parts()
    rows = sum(part_rows(str(p)) for p in parts)
    on = d.enabled
    spec = CurateSpec(turns=d.turns, exact=on and d.exact, near=on and d.near, ngram=d.ngram,
                      num_perm=d.num_perm,
                      bands=d.bands, seed=d.seed, threshold=d.threshold,
                      buckets=buckets_for(rows * (d.bands + 1), d.rows_per_bucket), work=str(work),
                      index=benchmark_index(j.decontaminate, ctx.source) if j.decontaminate else None)
    width = d.num_perm if spec.near else 0
    incremental = j.incremental and on
    cached = cached_parts(ctx) if incremental else []
    signed_cache = run_tasks(cached, sign_cached, {"spec": spec})
    signed = run_tasks([(k, str(p)) for k, p in enumerate(parts)], sign_part, {"spec": spec})
    sources = [s for s in [*signed_cache, *signed] if s.hi >= s.lo]
    starts = [s.lo for s in sources]
    sig_files = [s.sig_file for s in sources]
    source_of_part = {s.k: i for i, s in enumerate(sources) if s.k >= 0}
    candidates, edges, twins = 0, 0, []
    if on and sources:
        pairs = run_tasks(list(range(spec.buckets)), bucket_pairs,
                          {"band_files": [s.band_file for s in sources], "starts": starts, "work": str(work)})
        common = {"sig_files": sig_files, "starts": starts, "num_perm": width, "work": str(work)}
        att = run_tasks(list(range(len(sources))), attach,
                        {"pair_files": [p["file"] for p in pairs], **common, "tag": "candidates"})
        found = run_tasks(list(range(len(sources))), verify,
                          {"attach_files": [x["file"] for x in att], "sig_files": sig_files,
                           "num_perm": width,
                           "threshold": d.threshold})
        candidates = sum(f["candidates"] for f in found)
        a = np.concatenate([f["a"] for f in found])
        b = np.concatenate([f["b"] for f in found])
        edges = len(a)
        kept, dropped = keep_lowest(a, b)
        tonight = dropped >= 0  # an earlier night's record left out of a cluster is not tonight's to drop
        twin_file = work / "twins.arrow"
        table = pa.table({"a": kept[tonight], "b": dropped[tonight]}, schema=PAIR_SCHEMA)
        write_ipc(twin_file, PAIR_SCHEMA, split_by_source(table, "a", np.asarray(starts)))
        twins = run_tasks(list(range(len(sources))), attach, {"pair_files": [str(twin_file)], **common,
                                                              "tag": "twins"})
    night = night_folder(ctx) if on else None  # every run keeps its signatures for the nights after it
    items = [(s.k, str(parts[s.k]), source_of_part.get(s.k, -1), s.sig_file) for s in signed]
    done = run_tasks(items, finish_part, {"attach_files": [t["file"] for t in twins], "num_perm": width,
                                          "dropped": str(left_out),
                                          "cache": None if night is None else str(night)})
    concat_files([location(f.duplicates_file) for f in done], path / "duplicates.jsonl")
    concat_files([location(s.contaminated_file) for s in signed], path / "contaminated.jsonl")
    if night is not None:
        record_night(ctx)
    rmtree(work)
    rmtree(path / "_duplicates")
    by_file: dict[str, int] = {}
    for line in (path / "contaminated.jsonl").read_bytes().splitlines():
        name = orjson.loads(line)["benchmark"]
        by_file[name] = by_file.get(name, 0) + 1
    counts = {"records": rows, "kept": sum(f.kept for f in done), "exact": sum(f.exact for f in done),
              "near": sum(f.near for f in done), "contaminated": sum(s.contaminated for s in signed)}
    if incremental:
        counts["earlier_nights"] = sum(f.earlier_nights for f in done)
    return StageResult(counts, {"candidates": candidates, "edges": edges, "buckets": spec.buckets,
                                "earlier_night_records": sum(s.rows for s in signed_cache),
                                "contaminated_by_benchmark": by_file})


# ---------------------------------------------------------------- benchmark prompts

def benchmark_files(spec: DecontaminateSpec) -> list[Location]:
    from mig_ray.job.jobfile import InputSpec

    return InputSpec(paths=spec.paths).resolved()


def benchmark_index(spec: DecontaminateSpec, source: str) -> NgramIndex:
    """The n-gram index of every prompt of the benchmark files (read on the driver: they are small)."""
    files = benchmark_files(spec)
    prompts: list[tuple[int, str]] = []
    for i, path in enumerate(files):
        if not path.is_file():
            raise JobError(f"{source}: decontaminate.paths: {path} is not a file")
        prompts += [(i, text) for text in benchmark_prompts(path, spec.layout)]
    return NgramIndex.build(prompts, [str(p) for p in files], spec.ngram)


def benchmark_prompts(path: Location, layout: str = "auto") -> list[str]:
    """The prompt texts of one benchmark file: each line of a plain-text file; of each record of a
    JSONL / JSON / Parquet file its user turns (or a `prompt` string, or a `turns` list of strings)."""
    name = str(path).lower()
    if name.endswith(".parquet"):
        return [t for i, rec in enumerate(read_parquet(path).to_pylist(), 1)
                for t in record_prompts(rec, layout, f"{path}: row {i}")]
    with open_read(path) as f:
        data = f.read()
    if name.endswith(".json"):
        try:
            records = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise JobError(f"{path}: invalid JSON ({e})") from None
        if not isinstance(records, list):
            raise JobError(f"{path}: a JSON benchmark file must hold a list of records")
        return [t for i, rec in enumerate(records, 1)
                for t in record_prompts(rec, layout, f"{path}: record {i}")]
    if name.endswith(".jsonl"):
        out = []
        for i, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise JobError(f"{path}: line {i}: invalid JSON ({e})") from None
            out += record_prompts(rec, layout, f"{path}: line {i}")
        return out
    return [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]


def record_prompts(rec: Any, layout: str, where: str) -> list[str]:
    if isinstance(rec, dict) and isinstance(rec.get("prompt"), str):
        return [rec["prompt"]]
    turns = rec.get("turns") if isinstance(rec, dict) else None
    if isinstance(turns, list) and all(isinstance(t, str) for t in turns):
        return list(turns)
    try:
        _, messages = messages_of(rec, layout)
    except BadRecord as e:
        raise JobError(f"{where}: {e.reason} (a benchmark record needs user turns, `prompt` or `turns`)"
                       ) from None
    return [str(m.get("content") or "") for m in messages if m.get("role") == "user"]


# ---------------------------------------------------------------- earlier nights' signatures

def cache_root(job: JobConfig) -> Location:
    """The signature cache of these settings (what a signature depends on) in the annotation cache."""
    d = job.dedup
    key = json.dumps([SIGNATURE_SCHEME, d.turns, d.exact, d.near, d.ngram, d.num_perm, d.seed])
    return job.cache_dir() / "dedup" / hashlib.sha256(key.encode()).hexdigest()[:16]


def nights(ctx: RunContext) -> list[str]:
    path = cache_root(ctx.job) / NIGHTS
    return json.loads(path.read_text()) if path.exists() else []


def earlier_nights(ctx: RunContext) -> list[str]:
    """The ingest fingerprints of the cached nights other than tonight's, oldest first."""
    return [fp for fp in nights(ctx) if fp != ctx.fingerprints["ingest"]]


def night_folder(ctx: RunContext) -> Location:
    folder = cache_root(ctx.job) / f"night-{ctx.fingerprints['ingest'][:16]}"
    rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def record_night(ctx: RunContext) -> None:
    """Tonight's signatures are complete: list tonight after the earlier nights."""
    write_atomic(cache_root(ctx.job) / NIGHTS, json.dumps([*earlier_nights(ctx), ctx.fingerprints["ingest"]]))


def cached_parts(ctx: RunContext) -> list[tuple[int, str, int]]:
    """(index, cache part, first position) of every earlier night's kept records, oldest first, at
    negative positions: any of them is lower than any of tonight's."""
    files = []
    for fp in earlier_nights(ctx):
        folder = cache_root(ctx.job) / f"night-{fp[:16]}"
        files += sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    sizes = [part_rows(str(f)) for f in files]
    base = -sum(sizes)
    out = []
    for i, (f, n) in enumerate(zip(files, sizes, strict=True)):
        out.append((i, str(f), base))
        base += n
    return out
