"""`mig-ray select` as a function: read -> embed labels -> graph -> vectors -> greedy -> write.

Single process, no Ray; the stages are the same ones the distributed engine calls.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import scipy.sparse as sp
from tqdm import tqdm

from mig_ray import __version__
from mig_ray.core.certified import Commit, threaded_greedy
from mig_ray.core.cores import available_cores
from mig_ray.core.graph import LabelGraph
from mig_ray.core.greedy import GreedyResult, LazyGreedy, add_rows, limited_greedy
from mig_ray.core.increments import keys_and_gains
from mig_ray.core.limits import Limits, RowLimits
from mig_ray.core.objective import Phi, information, label_mass
from mig_ray.core.stats import ReportData, carriers, score_edges, score_hist
from mig_ray.core.vectors import propagate, sample_matrix
from mig_ray.embeddings import LabelVectors
from mig_ray.errors import PoolError
from mig_ray.guard import check_not_a_jobs_outputs, check_outputs_not_inputs, check_writable
from mig_ray.pools.annotated import (
    AnnotatedPool,
    load_valid_tags,
    parquet_parts,
    parquet_schema,
    pool_format,
    read_annotated,
)
from mig_ray.pools.arrow_read import read_jsonl_arrow
from mig_ray.pools.parallel_read import read_jsonl_parallel, use_parallel
from mig_ray.pools.rejects import Rejects
from mig_ray.pools.write import output_format, write_jsonl, write_records, write_selected
from mig_ray.selection.checkpoint import Checkpoint, fingerprint
from mig_ray.selection.config import SelectConfig, output_paths
from mig_ray.selection.limits import account, has_limits, local_limits

ISOLATED_WARNING = 0.5


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 4)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def label_vectors(cfg: SelectConfig, valid: set[str] | None) -> LabelVectors:
    """Started before the read, so that the model loads while the pool is read."""
    return LabelVectors(model=cfg.embedding_model, batch_size=cfg.embedding_batch_size,
                        progress=cfg.progress, valid_tags=valid, file=cfg.label_embeddings,
                        cache_dir=cfg.embedding_cache_dir, use_cache=cfg.embedding_cache)


def build_graph(cfg: SelectConfig, labels: list[str], vectors: LabelVectors) -> LabelGraph:
    emb = vectors.embeddings(labels)
    threshold, degree, _ = cfg.graph_rule()
    return LabelGraph.build(labels, emb, threshold=threshold, target_degree=degree)


def phi_of(cfg: SelectConfig) -> Phi:
    return Phi(cfg.phi, a=cfg.phi_a, b=cfg.phi_b, alpha=cfg.phi_alpha)


def read_pool(cfg: SelectConfig, rejects: Rejects, valid: set[str] | None) -> AnnotatedPool:
    spec = cfg.field_spec()
    if pool_format(cfg.pool) == "parquet":  # the reader reports rows read (over every part)
        total, unit = sum(n for _, n in parquet_parts(cfg.pool)), " records"
    else:  # bytes read
        total, unit = cfg.pool.stat().st_size, "B"
    bar = tqdm(total=total, unit=unit, unit_scale=True, desc="read pool", disable=not cfg.progress,
               file=sys.stderr)

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        if use_parallel(cfg.pool, spec, available_cores()):
            pool = read_jsonl_arrow(cfg.pool, spec, valid, rejects, progress)
            if pool is not None:
                return pool
            return read_jsonl_parallel(cfg.pool, spec, valid, rejects, available_cores(), progress)
        return read_annotated(cfg.pool, spec, valid, rejects, progress)
    finally:
        bar.close()


@dataclass
class Selection:
    """What a selection engine hands back for writing: the order and how to fetch its records."""

    order: np.ndarray
    gains: np.ndarray
    x: np.ndarray
    counts: dict[str, int]
    graph: LabelGraph
    write_records: Callable[[Path], None]
    manifest: Iterable[dict]
    extra: dict[str, Any] = field(default_factory=dict)
    report: ReportData | None = None
    constraints: dict[str, Any] | None = None  # per-group account and budget (selection/limits.py)


def _log_graph(graph: LabelGraph, rule: str) -> None:
    stats = graph.stats()
    log(f"{stats.line()} [{rule}]")
    if stats.labels and stats.isolated_share > ISOLATED_WARNING:
        log(f"warning: {stats.isolated_share:.0%} of labels have no neighbour at cos >= "
            f"{stats.threshold:.3f}; propagation changes little. The threshold is model-relative: "
            "try --target-degree 5 or a lower --sim-threshold.")


def _log_read(cfg: SelectConfig, counts: dict[str, int], rejects_path: Path) -> None:
    see = f" (see {rejects_path})" if counts["rejected"] else ""
    dropped = counts.get("labels_dropped_by_valid_tags", 0)
    filtered = f" ({dropped} labels not in {cfg.valid_tags} dropped)" if cfg.valid_tags is not None else ""
    log(f"read {counts['read']} records from {cfg.pool}: {counts['selectable']} selectable, "
        f"{counts['rejected']} rejected{see}, {counts['no_valid_label']} with no valid label{filtered}")
    if cfg.n is not None and cfg.n > counts["selectable"]:
        log(f"-n {cfg.n} is more than the {counts['selectable']} selectable records: selecting all of them")


def check_before_write(cfg: SelectConfig, paths: dict[str, Path]) -> None:
    """Everything that can fail before the read fails here, before any output is opened."""
    if not cfg.pool.exists():
        raise PoolError(f"{cfg.pool}: no such file")
    is_parts = cfg.pool.is_dir() and pool_format(cfg.pool) == "parquet"  # a job's assembled pool
    if not (cfg.pool.is_file() or is_parts):
        raise PoolError(f"{cfg.pool}: not a file (give a .jsonl or .parquet pool)")
    # parquet_parts reads every part's footer, so a broken file is named here
    if pool_format(cfg.pool) == "parquet" and not parquet_parts(cfg.pool):
        raise PoolError(f"{cfg.pool}: a folder without part-*.parquet files")
    output_format(cfg.out)
    for what, p in (("valid tags", cfg.valid_tags), ("label embeddings", cfg.label_embeddings),
                    ("previous manifest", cfg.previous_manifest)):
        if p is not None and not Path(p).is_file():
            state = "is not a file" if Path(p).exists() else "does not exist"
            raise PoolError(f"{p}: the {what} file {state}")
    check_outputs_not_inputs(paths, {"pool": cfg.pool, "valid tags": cfg.valid_tags,
                                     "label embeddings": cfg.label_embeddings,
                                     "previous manifest": cfg.previous_manifest})
    check_writable(paths.values())
    check_not_a_jobs_outputs(paths.values(), cfg.force)


def run_select(cfg: SelectConfig, on_round: Callable | None = None) -> dict[str, Any]:
    """Run the whole selection; returns the summary that is also written beside OUT.

    One process unless `cfg.shards > 1` or a Ray address is given; the order is the same either way.
    `on_round(round, actors)` is a hook for tests of the distributed engine.
    """
    paths = output_paths(cfg.out)
    if cfg.checkpoint is not None:
        paths["checkpoint"] = cfg.checkpoint
    if not cfg.records:
        del paths["selected"]
    check_before_write(cfg, paths)
    timer = Timer()
    phi = phi_of(cfg)
    valid = load_valid_tags(cfg.valid_tags) if cfg.valid_tags else None
    previous = read_manifest(cfg.previous_manifest) if cfg.previous_manifest else None  # fails early
    with label_vectors(cfg, valid) as vectors:  # a bad model path or .npz fails here, before the read
        try:  # nothing is created before every check above passed
            cfg.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PoolError(f"{cfg.out.parent}: cannot create the output folder ({e.strerror})") from None
        if cfg.shards > 1 or cfg.ray_address:
            sel = _select_ray(cfg, timer, paths, phi, vectors, on_round)
        else:
            sel = _select_local(cfg, timer, paths, phi, vectors, valid, on_round)
    with timer.stage("write"):
        if cfg.records:
            sel.write_records(paths["selected"])
        increase = information_increase(sel, phi)
        rows = zip(sel.manifest, sel.gains, increase, strict=True)
        write_jsonl(paths["manifest"], ({"rank": r, **row, "greedy_key": float(key), "gain": float(g)}
                                        for r, (row, key, g) in enumerate(rows, 1)))
    summary = _summary(cfg, sel, phi, timer, paths)
    if previous is not None:
        summary["information"]["previous_selection"] = {
            "manifest": str(cfg.previous_manifest), **information_of(sel.graph, cfg, phi, previous)}
    summary["label_embeddings"] = vectors.info
    if sel.report is not None:
        summary["report"], label_counts = sel.report.summary(phi, sel.graph.labels)
        paths["labels"].write_text(json.dumps(label_counts) + "\n")
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def information_increase(sel: Selection, phi: Phi) -> np.ndarray:
    """E(D + i) - E(D) of each selected sample in order (the manifest's `gain`; the engines' gains
    are the greedy's keys, its `greedy_key`)."""
    r = sel.report
    return keys_and_gains(phi, "exact", r.ptr, r.idx, r.val, sel.graph.n_labels)[1]


def _select_local(cfg: SelectConfig, timer: Timer, paths: dict[str, Path], phi: Phi,
                  label_vecs: LabelVectors, valid: set[str] | None, on_round: Callable | None) -> Selection:
    with timer.stage("read"), Rejects(paths["rejects"], cfg.strict) as rejects:
        pool = read_pool(cfg, rejects, valid)
    _log_read(cfg, pool.counts, paths["rejects"])
    labels, codes = pool.node_labels()
    with timer.stage("embed_labels"):
        graph = build_graph(cfg, labels, label_vecs)
    _log_graph(graph, cfg.graph_rule()[2])
    with timer.stage("graph"):
        p = graph.propagation(cfg.propagation, cfg.prop_weight)
    with timer.stage("vectors"):
        e = sample_matrix(pool.label_indptr, codes, pool.scores, graph.n_labels, cfg.norm)
        vectors = propagate(e, p)
    rows, limits, names = local_limits(cfg, pool.groups, pool.costs, cfg.n, len(pool))
    with timer.stage("select"):
        resumed = first_pass = 0
        engine: dict = {}
        if has_limits(cfg):  # quotas or a budget: not checkpointed in process yet
            result, decided = _greedy(vectors, cfg.k(len(pool)), phi, cfg, rows, limits)
        else:
            ckpt = Checkpoint(paths["checkpoint"], fingerprint(cfg), cfg.checkpoint_seconds)
            result, resumed, first_pass, engine = resumable_greedy(vectors, cfg.k(len(pool)), phi, cfg, ckpt,
                                                                   on_round)
            ckpt.remove()
    constraints = None
    if has_limits(cfg):
        constraints = account(names, limits, rows.groups, rows.costs, rows.groups[result.order],
                              rows.costs[result.order], decided)
    chosen = vectors[result.order]
    edges = score_edges(pool.scores.min(initial=np.inf), pool.scores.max(initial=-np.inf))
    report = ReportData(chosen.indptr, chosen.indices, chosen.data,
                        np.bincount(e.indices, minlength=graph.n_labels),
                        np.bincount(e[result.order].indices, minlength=graph.n_labels),
                        edges, score_hist(pool.scores, edges), pool.scores[result.order])
    manifest = ({"id": pool.ids[i], "score": float(pool.scores[i]), "labels": pool.labels_of(i),
                 "line": int(pool.lines[i])} for i in result.order)
    return Selection(result.order, result.gains, result.x, pool.counts, graph,
                     lambda out: write_selected(pool, result.order, out), manifest,
                     {"engine": "local", **engine, "evaluations_after_first_pass": result.evaluations,
                      "evaluations_per_round": result.evaluations / max(1, len(result.order)),
                      # only when resumed: a run from scratch keeps the summary it always had
                      **({"resumed_from_checkpoint": resumed, "first_pass_evaluations": first_pass}
                         if resumed else {})}, report, constraints)


def _select_ray(cfg: SelectConfig, timer: Timer, paths: dict[str, Path], phi: Phi,
                label_vecs: LabelVectors, on_round: Callable | None) -> Selection:
    from mig_ray.selection.engine import select_on_ray

    def embed(labels: list[str]) -> LabelGraph:
        graph = build_graph(cfg, labels, label_vecs)
        _log_graph(graph, cfg.graph_rule()[2])
        return graph

    out = select_on_ray(cfg, timer.stage, embed, phi, paths["checkpoint"], cfg.checkpoint_seconds,
                        cfg.batch, on_round)
    if not cfg.strict:
        write_jsonl(paths["rejects"], out["rejects"])
    _log_read(cfg, out["counts"], paths["rejects"])
    rounds = out["rounds"]
    log(f"sharded selection: {rounds['shards']} shards, {rounds['rounds']} rounds, "
        f"{rounds['samples_per_round']:.1f} samples/round, "
        f"{1000 * rounds['seconds_per_round']:.2f} ms/round, "
        f"{(rounds['bytes_proposed'] + rounds['bytes_broadcast']) / 2**20:.1f} MiB moved")
    in_format = pool_format(cfg.pool)
    schema = None
    if in_format == "parquet":
        schema = parquet_schema(cfg.pool)
    out["checkpoint"].remove()
    c, graph = out["committed"], out["graph"]
    pool_carriers, edges, pool_hist = out["pool_stats"]
    node = {name: j for j, name in enumerate(graph.labels)}
    chosen = carriers((m["labels"] for m in out["manifest"]), node)
    scores = np.array([m["score"] for m in out["manifest"]], dtype=np.float64)
    report = ReportData(c.ptr, c.idx, c.val, pool_carriers, chosen, edges, pool_hist, scores)
    return Selection(out["positions"], out["gains"], out["x"], out["counts"], graph,
                     lambda path: write_records(path, in_format, out["records"], schema), out["manifest"],
                     {"engine": "ray", **rounds}, report, out["constraints"])


def read_manifest(path: Path) -> list[tuple[list[str], float]]:
    """(labels, score) of each row of a selection manifest (`mig-ray select`'s or a job's)."""
    rows = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise PoolError(f"{path}: cannot read the previous manifest ({e})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise PoolError(f"{path}:{n}: not JSON ({e})") from e
        if not isinstance(row, dict):
            raise PoolError(f"{path}:{n}: a manifest row must be a JSON object")
        labels, score = row.get("labels"), row.get("score")
        if not isinstance(labels, list) or not all(isinstance(t, str) for t in labels):
            raise PoolError(f"{path}:{n}: field 'labels' must be a list of strings")
        if type(score) not in (int, float) or not 0.0 <= score < float("inf"):
            raise PoolError(f"{path}:{n}: field 'score' must be a finite number >= 0, got {score!r}")
        rows.append((labels, float(score)))
    return rows


def information_of(graph: LabelGraph, cfg: SelectConfig, phi: Phi,
                   samples: list[tuple[list[str], float]]) -> dict[str, Any]:
    """Information of a set of samples, given by labels and score, on this run's graph.

    What a nightly diff needs: yesterday's selection measured on today's graph, so that before and
    after are one measure. The labels are the ones the earlier run kept (its valid-tag filter, its
    tagger). A label that is not a node of this graph is left out, as the selection leaves out a
    label the filter drops: with `norm` the score is then spread over the remaining labels.
    `labels_not_in_graph` counts such labels, once per sample.
    """
    index = graph.index()
    indptr, codes, scores, outside = [0], [], [], 0
    for labels, score in samples:
        ids = [index[t] for t in labels if t in index]
        outside += len({t for t in labels if t not in index})
        codes.extend(ids)
        indptr.append(len(codes))
        scores.append(score)
    e = sample_matrix(np.array(indptr, dtype=np.int64), np.array(codes, dtype=np.int64),
                      np.array(scores, dtype=np.float64), graph.n_labels, cfg.norm)
    vectors = propagate(e, graph.propagation(cfg.propagation, cfg.prop_weight))
    x = label_mass(vectors, np.arange(len(samples)))  # added in manifest order, as the greedy added them
    return {"samples": len(samples), "labels_not_in_graph": outside, "selected": information(phi, x)}


THREADED_MIN = 200_000  # rows from which the in-process greedy runs as threaded shards
MAX_THREADS = 8


def greedy_threads(n: int) -> int:
    """Threads of the in-process greedy: one below THREADED_MIN rows, where the rounds' fixed costs
    outweigh a second core; else the cores, at most MAX_THREADS (1M records, K = 50K, 2 cores: 1.32 s
    against 1.72 s for one lazy greedy, the same order and gains)."""
    return min(available_cores(), MAX_THREADS) if n >= THREADED_MIN else 1


def resumable_greedy(vectors: sp.csr_matrix, k: int, phi: Phi, cfg: SelectConfig, ckpt: Checkpoint,
                     on_round: Callable | None = None) -> tuple[GreedyResult, int, int, dict]:
    """The in-process lazy greedy, checkpointed as the sharded engine is: the committed order goes
    to `ckpt` every `checkpoint_seconds`, and a run whose checkpoint matches its fingerprint starts
    from it. The resumed run's remaining candidates start with fresh gains at the committed mass,
    so its picks are exactly the uninterrupted run's. From THREADED_MIN rows, on several cores, the
    certified rounds of the sharded engine run over threads (`threaded_greedy`): the same order.
    Returns the result (the whole order), how many picks came from the checkpoint, the gains
    evaluated in the first pass (the rows left) and what the summary says of the engine.
    `on_round(committed, [])` runs after each chunk or round (a test hook, as the sharded engine's)."""
    n = vectors.shape[0]
    resume = ckpt.load()
    done = np.zeros(0, dtype=np.int64) if resume is None else resume.positions.astype(np.int64)
    fits = len(done) <= k and len(np.unique(done)) == len(done) and bool(np.all((done >= 0) & (done < n)))
    if not fits:
        done = np.zeros(0, dtype=np.int64)
    x0 = np.zeros(vectors.shape[1])
    rows = vectors[done]  # the committed vectors from this pool, not from the file
    add_rows(x0, rows.indptr.astype(np.int64), rows.indices.astype(np.int64), rows.data.astype(np.float64))
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), done)
    gains = resume.gains[:len(done)].astype(np.float64) if len(done) else np.zeros(0)
    history = [Commit(done, gains, rows.indptr.astype(np.int64), rows.indices.astype(np.int64),
                      rows.data.astype(np.float64))]
    bar = tqdm(total=k, initial=len(done), desc="select", unit="sample", disable=not cfg.progress,
               file=sys.stderr)
    threads = greedy_threads(len(rest))
    if threads > 1:
        try:
            result = _threaded(vectors[rest] if len(done) else vectors, rest, k, phi, cfg, ckpt, on_round,
                               history, bar, threads)
        finally:
            bar.close()
        return result, len(done), len(rest), {"threads": threads}
    # a run from scratch takes the matrix as it is (scipy's row selection would copy all of it)
    state = LazyGreedy(vectors[rest] if len(done) else vectors, phi, cfg.gain, x0=x0,
                       positions=rest if len(done) else None)
    chunk = max(1, min(1000, k // 100))
    try:
        while len(done) + state.committed < k:
            before = state.committed
            if state.step(min(chunk, k - len(done) - state.committed)) == 0:
                break
            picked = rest[state.order[before:state.committed]]
            sub = vectors[picked]
            history.append(Commit(picked, state.order_gain[before:state.committed].copy(),
                                  sub.indptr.astype(np.int64), sub.indices.astype(np.int64),
                                  sub.data.astype(np.float64)))
            ckpt.maybe_save(history)
            bar.update(len(done) + state.committed - bar.n)
            if on_round is not None:
                on_round(len(done) + state.committed, [])
    finally:
        bar.close()
    whole = Commit.concat(history)
    result = GreedyResult(whole.positions, whole.gains, state.evaluations, state.x.copy())
    return result, len(done), len(rest), {}


def _threaded(vectors: sp.csr_matrix, rest: np.ndarray, k: int, phi: Phi, cfg: SelectConfig, ckpt: Checkpoint,
              on_round: Callable | None, history: list[Commit], bar: tqdm, threads: int) -> GreedyResult:
    """resumable_greedy's rounds over threaded shards of the rows not committed yet (`rest`, their
    positions; `vectors` their rows): each round's commit joins `history` (the checkpoint's), the
    first entry being what the checkpoint gave."""
    def round_done(_: int, commit: Commit) -> None:
        history.append(commit)
        ckpt.maybe_save(history)
        committed = sum(len(c.positions) for c in history)
        bar.update(committed - bar.n)
        if on_round is not None:
            on_round(committed, [])

    resume = history[0] if len(history[0].positions) else None
    if resume is None:
        history.clear()
    whole, log = threaded_greedy(vectors, k, phi, cfg.gain, threads, cfg.batch, positions=rest, resume=resume,
                                 on_round=round_done)
    x = np.zeros(vectors.shape[1])
    add_rows(x, whole.ptr, whole.idx, whole.val)  # in commit order, as the greedy added it
    return GreedyResult(whole.positions, whole.gains, log.evaluations, x)


def _greedy(vectors, k: int, phi: Phi, cfg: SelectConfig, rows: RowLimits,
            limits: Limits) -> tuple[GreedyResult, dict]:
    """Lazy greedy under the limits (core/greedy.limited_greedy), with a progress bar."""
    bar = tqdm(total=k, desc="select", unit="sample", disable=not cfg.progress, file=sys.stderr)

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        return limited_greedy(vectors, k, phi, cfg.gain, rows, limits, chunk=max(1000, k // 100),
                              progress=progress)
    finally:
        bar.close()


def _summary(cfg: SelectConfig, sel: Selection, phi: Phi, timer: Timer, paths: dict[str, Path]) -> dict:
    empty = information(phi, np.zeros(sel.graph.n_labels))
    info = information(phi, sel.x)
    return {
        "mig_ray_version": __version__,
        "command": "select",
        "config": json.loads(cfg.model_dump_json()),
        "counts": {**sel.counts, "selected": len(sel.order), "requested": cfg.n},
        "selected_all": len(sel.order) >= sel.counts["selectable"],
        **({"constraints": sel.constraints} if sel.constraints is not None else {}),
        "approximate": False,
        "graph": vars(sel.graph.stats()) | {"threshold_rule": cfg.graph_rule()[2]},
        "information": {"selected": info, "empty": empty, "gain": info - empty},
        "greedy": sel.extra,
        "seconds": timer.seconds,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # the largest finished child: the embedding model's process
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "outputs": {k: str(v) for k, v in paths.items() if k != "checkpoint"},
    }
