"""Stage `assemble`: one annotated pool (id, labels, score, position; in input order; and each
record's group and cost when the selection has quotas or a budget) for the selection, as Parquet
parts `pool.parquet/part-*.parquet`, written by one Ray task per ingest part.
Labels and scores come from the annotation cache (through the hash join of join.py), from fields
of the records, from the ingest part's own columns (released annotations) or a constant; a record
without usable labels or score goes to unselectable.jsonl with the reason, counted. The driver sees
only each part's counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mig_ray.errors import BadRecord
from mig_ray.job.context import RunContext
from mig_ray.job.join import annotations_of_part, join_pool
from mig_ray.job.kept import dropped_positions, without
from mig_ray.job.stages import StageResult
from mig_ray.job.stages import fingerprint as digest
from mig_ray.pools.costs import FILE_GROUP, TOKENS, record_cost, record_group
from mig_ray.pools.fields import FieldSpec
from mig_ray.runtime.session import run_tasks
from mig_ray.storage import concat_files, location, read_parquet, rmtree, write_atomic, write_parquet_atomic

NAME = "assemble"
GROUP, COST = "group", "cost"  # the pool's columns of each record's group and cost, when asked for
NO_LABELS = "missing labels: annotation.instag.content"
NO_SCORE = "missing score: annotation.deita"


@dataclass(frozen=True)
class AssembleSpec:
    """Where a part's labels and score come from and where it writes; shared by every task."""

    labels_field: str | None  # labels read from this dotted field of the records (from-data tagger)
    tags: Any  # the tagger's identity when labels come from the cache, else None
    scorer: str  # "field", "constant" or "cache"
    score_field: str | None
    constant: float
    score: Any  # the scorer's identity when scores come from the cache, else None
    pool: str  # folder of the assembled parts
    unselectable: str  # folder of each part's unselectable rows
    join: dict[str, Any] | None = None  # per kind ("tags", "score"): the join's files (join_pool)
    group_field: str | None = None  # selection.groups: a dotted field of the records, or "file"
    cost_field: str | None = None  # selection.cost when there is a budget: "tokens" or a numeric field
    tokenizer: str | None = None  # selection.tokenizer, for cost "tokens"
    dropped: str | None = None  # the dedup stage's dropped positions, a file a part (job/kept.py)

    def limits(self) -> bool:
        return self.group_field is not None or self.cost_field is not None


@dataclass(frozen=True)
class AssembledPart:
    k: int
    ingested: int
    selectable: int
    reasons: dict[str, int]
    unselectable: str  # this part's unselectable.jsonl


def fingerprint(ctx: RunContext) -> str:
    return digest("assemble", ctx.fingerprints["tag"], ctx.fingerprints["score"], limit_fields(ctx.job))


def limit_fields(job) -> tuple[str | None, str | None, str | None]:
    """(group field, cost field, tokenizer) the pool carries for the selection's quotas and budget."""
    s = job.selection
    cost = s.cost if s.budget_tokens is not None else None
    return s.groups, cost, s.tokenizer if cost == TOKENS else None


def run(ctx: RunContext) -> StageResult:
    j, path = ctx.job, ctx.stage_dir(NAME)
    spec = AssembleSpec(
        labels_field=j.annotate.tagger.labels_field if ctx.tagger is None else None,
        tags=None if ctx.tagger is None else ctx.tagger.identity(),
        scorer=j.annotate.scorer.kind if ctx.scorer is None else "cache",
        score_field=j.annotate.scorer.field, constant=j.annotate.scorer.value,
        score=None if ctx.scorer is None else ctx.scorer.identity(),
        pool=str(path / "pool.parquet"), unselectable=str(path / "_unselectable"),
        group_field=(fields := limit_fields(j))[0], cost_field=fields[1], tokenizer=fields[2],
        dropped=None if (dropped := ctx.dropped_folder()) is None else str(dropped))
    (path / "pool.parquet").mkdir()
    (path / "_unselectable").mkdir()
    parts = ctx.record_parts()
    kinds = {kind: ident for kind, ident in (("tags", spec.tags), ("score", spec.score)) if ident is not None}
    if kinds:  # each task gets its ids' cache rows from a hash join, not the whole cache
        joined = join_pool(str(j.cache_dir()), kinds, parts, path / "_join", run_tasks, dropped=spec.dropped)
        spec = AssembleSpec(**{**vars(spec), "join": joined["files"]})
    done: list[AssembledPart] = run_tasks([(k, str(p)) for k, p in enumerate(parts)], assemble_task,
                                          {"spec": spec})
    rmtree(path / "_join")
    concat_files([location(r.unselectable) for r in done], path / "unselectable.jsonl")
    rmtree(path / "_unselectable")
    reasons: dict[str, int] = {}
    for r in done:
        for key, v in r.reasons.items():
            reasons[key] = reasons.get(key, 0) + v
    n = sum(r.ingested for r in done)
    keep = sum(r.selectable for r in done)
    return StageResult({"ingested": n, "selectable": keep, "unselectable": n - keep},
                       {"unselectable_reasons": reasons})


def assemble_task(item: tuple[int, str], spec: AssembleSpec) -> AssembledPart:
    """In a Ray task: ingest part number k -> its part of the pool and its unselectable rows."""
    k, part = item
    return assemble_part(k, part, spec)


def assemble_part(k: int, part: str, spec: AssembleSpec) -> AssembledPart:
    """One ingest part's labels and scores, row by row where they come from the cache or the
    records; a column filter where they are the part's own columns or a constant."""
    need_record = bool(spec.labels_field) or (spec.scorer == "field" and bool(spec.score_field)) \
        or spec.cost_field is not None or spec.group_field not in (None, FILE_GROUP)
    cols = ["id", "position", "file", "line", "labels", "score"] + (["record"] if need_record else [])
    table = without(read_parquet(location(part), columns=cols),
                    dropped_positions(spec.dropped, location(part).name))
    if spec.tags is None and not need_record and spec.score is None and not spec.limits():
        return _assemble_columns(k, spec, table)
    ids = table.column("id").to_pylist()
    # each record parsed once, for every field read from it (labels, score, group, cost)
    records = [orjson.loads(r) for r in table.column("record").to_pylist()] if need_record else None
    n = len(ids)
    if spec.tags is not None:
        got = annotations_of_part(spec.join["tags"], k, table.column("id"), "tags")
        labels, label_err = annotation_column(got, ids, "labels")
    elif spec.labels_field:
        read = FieldSpec(labels_field=spec.labels_field, score_field="_", id_field="_").labels
        labels, label_err = _from_records(records, read)
    else:
        labels = table.column("labels").to_pylist()
        label_err = [None if v is not None else NO_LABELS for v in labels]
    if spec.score is not None:
        got = annotations_of_part(spec.join["score"], k, table.column("id"), "score")
        scores, score_err = annotation_column(got, ids, "score")
    elif spec.scorer == "constant":
        scores, score_err = [spec.constant] * n, [None] * n
    elif spec.score_field:
        read = FieldSpec(labels_field="_", score_field=spec.score_field, id_field="_").score
        scores, score_err = _from_records(records, read)
    else:
        scores = table.column("score").to_pylist()
        score_err = [None if v is not None else NO_SCORE for v in scores]
    files, lines = table.column("file"), table.column("line")
    groups, costs, limit_err = _limits(spec, records, files.to_pylist(), n)
    keep, bad = [], []
    for i in range(n):
        reason = label_err[i] or score_err[i] or limit_err[i]
        if reason:
            bad.append({"id": ids[i], "file": files[i].as_py(), "line": lines[i].as_py(), "reason": reason})
        else:
            keep.append(i)
    idx = pa.array(keep, pa.int64())
    columns = {
        "id": table.column("id").take(idx),
        "labels": pa.array([labels[i] for i in keep], pa.list_(pa.string())),
        "score": pa.array([float(scores[i]) for i in keep], pa.float64()),
        "position": table.column("position").take(idx),
    }
    if spec.group_field is not None:
        columns[GROUP] = pa.array([groups[i] for i in keep], pa.string())
    if spec.cost_field is not None:
        columns[COST] = pa.array([costs[i] for i in keep], pa.float64())
    return _write_assembled(k, spec, pa.table(columns), n, bad)


def _limits(spec: AssembleSpec, records: list[Any] | None, files: list[str],
            n: int) -> tuple[list, list, list]:
    """Each record's group and cost (pools/costs.py, as `mig-ray select` reads them), and the reason
    a record has none usable (it is then unselectable, listed with the reason)."""
    groups, costs, err = [None] * n, [None] * n, [None] * n
    if not spec.limits():
        return groups, costs, err
    for i in range(n):
        try:
            rec = records[i] if records is not None else None
            if spec.group_field is not None:
                groups[i] = record_group(rec, spec.group_field, files[i])
            if spec.cost_field is not None:
                costs[i] = record_cost(rec, spec.cost_field, spec.tokenizer)
        except BadRecord as e:
            err[i] = e.reason
    return groups, costs, err


def _assemble_columns(k: int, spec: AssembleSpec, table: pa.Table) -> AssembledPart:
    """assemble_part when labels and score are the ingest part's own columns (released
    annotations) or a constant: a filter over columns, a Python row only for each unselectable one."""
    labels, scores = table.column("labels"), table.column("score")
    if spec.scorer == "constant":
        scores = pa.chunked_array([pa.array(np.full(table.num_rows, float(spec.constant)))])
    label_bad = pc.is_null(labels)
    bad_mask = pc.or_(label_bad, pc.is_null(scores))
    bad = [{"id": r["id"], "file": r["file"], "line": r["line"], "reason": NO_LABELS if lb else NO_SCORE}
           for r, lb in zip(table.select(["id", "file", "line"]).filter(bad_mask).to_pylist(),
                            label_bad.filter(bad_mask).to_pylist(), strict=True)]
    keep = pc.invert(bad_mask)
    pool = pa.table({"id": table.column("id").filter(keep), "labels": labels.filter(keep),
                     "score": scores.filter(keep), "position": table.column("position").filter(keep)})
    return _write_assembled(k, spec, pool, table.num_rows, bad)


def _write_assembled(k: int, spec: AssembleSpec, pool: pa.Table, n: int, bad: list[dict]) -> AssembledPart:
    name = f"part-{k:06d}"
    write_parquet_atomic(pool, location(spec.pool) / f"{name}.parquet")
    bad_path = location(spec.unselectable) / f"{name}.jsonl"
    write_atomic(bad_path, b"".join(orjson.dumps(b) + b"\n" for b in bad))
    reasons: dict[str, int] = {}
    for b in bad:
        key = b["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return AssembledPart(k, n, pool.num_rows, reasons, str(bad_path))


def _from_records(records: list[Any], read: Any) -> tuple[list, list]:
    """`read` (a FieldSpec getter) on each parsed record: its values, and per record why it failed."""
    out: list = [None] * len(records)
    err: list = [None] * len(records)
    for i, rec in enumerate(records):
        try:
            out[i] = read(rec)
        except BadRecord as e:
            err[i] = e.reason
    return out, err


def annotation_column(got: Any, ids: list[str], name: str) -> tuple[list, list]:
    """Per id: the annotation value, or the reason it is missing or failed (from the join's rows
    or load_annotations)."""
    table = got if isinstance(got, pa.Table) else pa.Table.from_pylist(list(got.values()) if isinstance(
        got, dict) else got)
    index = {rid: i for i, rid in enumerate(table.column("id").to_pylist())}
    values = table.column(name).to_pylist()
    status = table.column("status").to_pylist()
    errors = table.column("error").to_pylist() if "error" in table.column_names else [""] * len(values)
    out, err = [None] * len(ids), [None] * len(ids)
    for i, rid in enumerate(ids):
        j = index.get(rid)
        if j is None:
            err[i] = f"not annotated: no {name} in the cache"
        elif status[j] != "ok":
            err[i] = f"{name} failed: {errors[j]}"
        elif values[j] is None or (isinstance(values[j], float) and not np.isfinite(values[j])):
            err[i] = f"{name} failed: empty result"
        else:
            out[i] = values[j]
    return out, err

