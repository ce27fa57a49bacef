"""`mig-ray select` as a function: read -> embed labels -> graph -> vectors -> greedy -> write.

Single process, no Ray; the stages are the same ones the distributed engine calls.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from mig_ray import __version__
from mig_ray.config import SelectConfig, output_paths
from mig_ray.embeddings import embed_labels, load_label_embeddings
from mig_ray.graph import LabelGraph
from mig_ray.greedy import GreedyResult, lazy_greedy
from mig_ray.objective import Phi, information
from mig_ray.pools.annotated import AnnotatedPool, load_valid_tags, read_annotated
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.rejects import Rejects
from mig_ray.pools.write import output_format, write_jsonl, write_selected
from mig_ray.vectors import propagate, sample_matrix

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


def build_graph(cfg: SelectConfig, labels: list[str]) -> LabelGraph:
    if cfg.label_embeddings is not None:
        emb = load_label_embeddings(cfg.label_embeddings, labels)
    else:
        emb = embed_labels(labels, cfg.embedding_model, cfg.embedding_batch_size, progress=cfg.progress)
    return LabelGraph.build(labels, emb, threshold=cfg.sim_threshold, target_degree=cfg.target_degree)


def phi_of(cfg: SelectConfig) -> Phi:
    return Phi(cfg.phi, a=cfg.phi_a, b=cfg.phi_b, alpha=cfg.phi_alpha)


def read_pool(cfg: SelectConfig, rejects: Rejects) -> AnnotatedPool:
    valid = load_valid_tags(cfg.valid_tags) if cfg.valid_tags else None
    spec = FieldSpec(cfg.labels_field, cfg.score_field, cfg.id_field)
    size = cfg.pool.stat().st_size
    bar = tqdm(total=size if cfg.pool.suffix != ".parquet" else None, unit="B", unit_scale=True,
               desc="read pool", disable=not cfg.progress, file=sys.stderr)

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        return read_annotated(cfg.pool, spec, valid, rejects, progress)
    finally:
        bar.close()


def run_select(cfg: SelectConfig) -> dict[str, Any]:
    """Run the whole selection; returns the summary that is also written beside OUT."""
    paths = output_paths(cfg.out)
    output_format(cfg.out)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    with timer.stage("read"), Rejects(paths["rejects"], cfg.strict) as rejects:
        pool = read_pool(cfg, rejects)
    log(f"read {pool.counts['read']} records from {cfg.pool}: {pool.counts['selectable']} selectable, "
        f"{pool.counts['rejected']} rejected (see {paths['rejects']}), "
        f"{pool.counts['no_valid_label']} with no valid label")

    labels, codes = pool.node_labels()
    with timer.stage("embed_labels"):
        graph = build_graph(cfg, labels)
    stats = graph.stats()
    log(stats.line())
    if stats.labels and stats.isolated_share > ISOLATED_WARNING:
        log(f"warning: {stats.isolated_share:.0%} of labels have no neighbour at cos >= "
            f"{stats.threshold:.3f}; "
            "propagation changes little. The threshold is model-relative: try --target-degree 5 "
            "or a lower --sim-threshold.")

    with timer.stage("graph"):
        p = graph.propagation(cfg.propagation, cfg.prop_weight)
    with timer.stage("vectors"):
        e = sample_matrix(pool.label_indptr, codes, pool.scores, graph.n_labels, cfg.norm)
        vectors = propagate(e, p)
    k = min(cfg.n, len(pool))
    if cfg.n > len(pool):
        log(f"-n {cfg.n} is more than the {len(pool)} selectable records: selecting all of them")
    phi = phi_of(cfg)
    with timer.stage("select"):
        result = _greedy(vectors, k, phi, cfg)

    with timer.stage("write"):
        write_selected(pool, result.order, paths["selected"])
        write_jsonl(paths["manifest"], _manifest_rows(pool, result))
    summary = _summary(cfg, pool, stats, result, phi, vectors.shape[1], timer, paths)
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _greedy(vectors, k: int, phi: Phi, cfg: SelectConfig) -> GreedyResult:
    bar = tqdm(total=k, desc="select", unit="sample", disable=not cfg.progress, file=sys.stderr)

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        return lazy_greedy(vectors, k, phi, cfg.gain, chunk=max(1000, k // 100), progress=progress)
    finally:
        bar.close()


def _manifest_rows(pool: AnnotatedPool, result: GreedyResult) -> Iterator[dict]:
    for rank, (pos, gain) in enumerate(zip(result.order, result.gains, strict=True), 1):
        yield {"rank": rank, "id": pool.ids[pos], "gain": float(gain), "score": float(pool.scores[pos]),
               "labels": pool.labels_of(pos), "line": int(pool.lines[pos])}


def _summary(cfg, pool, stats, result, phi, n_labels, timer, paths) -> dict[str, Any]:
    empty = information(phi, np.zeros(n_labels))
    info = information(phi, result.x)
    return {
        "mig_ray_version": __version__,
        "command": "select",
        "config": json.loads(cfg.model_dump_json()),
        "counts": {**pool.counts, "selected": len(result.order), "requested": cfg.n},
        "selected_all": cfg.n >= len(pool),
        "approximate": False,
        "graph": vars(stats),
        "information": {"selected": info, "empty": empty, "gain": info - empty},
        "greedy": {"evaluations_after_first_pass": result.evaluations,
                   "evaluations_per_round": result.evaluations / max(1, len(result.order))},
        "seconds": timer.seconds,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
