"""Sharded selection benchmark (issue 3): the Tulu3-shaped 1M pool on local Ray with shard actors.

Runs `mig-ray select` as a function twice in one process: in-process engine, then sharded on a
local Ray cluster (2 shard actors by default), on the same 1M-line JSONL pool with precomputed
label embeddings, and compares the selection phase (labels known -> order returned; for Ray: Ray
up and shards loaded -> order returned), the order, rounds and bytes moved.

    python bench/bench_sharded.py            # writes bench/results/sharded-<date>.json

Then, per threshold, a rounds model: the same certified rounds with in-process shards (2, 8, 32
shards; batches 64, 256, 1024) for the rounds, samples per round and driver cost that
docs/scaling.md extrapolates from.

Each similarity threshold is one configuration: 0.9 (the paper's; with MiniLM almost every tag is
isolated) and 0.6 (mean degree about 6, so a propagated vector carries about 25 labels).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_select import DATA, label_embeddings, pool_arrays  # noqa: E402
from provenance import header  # noqa: E402
from tulu3_shaped import SHARED, valid_tags, write_jsonl  # noqa: E402

from mig_ray.core.certified import Commit, sharded_greedy  # noqa: E402
from mig_ray.core.graph import LabelGraph  # noqa: E402
from mig_ray.core.greedy import ShardGreedy, lazy_greedy  # noqa: E402
from mig_ray.core.objective import Phi  # noqa: E402
from mig_ray.core.vectors import propagate, sample_matrix  # noqa: E402
from mig_ray.selection.config import SelectConfig  # noqa: E402
from mig_ray.selection.run import run_select  # noqa: E402

PHASE = ("embed_labels", "graph", "vectors", "select")


def ids_of(manifest: Path) -> list[str]:
    return [json.loads(x)["id"] for x in manifest.open()]


def run_local(base: dict) -> dict:
    t = time.perf_counter()
    local = run_select(SelectConfig(**base, out=DATA / "local" / "sel.jsonl"))
    row = {"seconds": local["seconds"], "selection_phase_seconds": sum(local["seconds"][s] for s in PHASE),
           "wall_seconds": time.perf_counter() - t, "graph": local["graph"],
           "evaluations_per_round": local["greedy"]["evaluations_per_round"],
           "peak_rss_mb": local["peak_rss_mb"], "loadavg": os.getloadavg()}
    print(json.dumps(row), flush=True)
    return row


def run_sharded(base: dict, n_shards: int, batch: int, ids_local: list[str]) -> dict:
    out = DATA / f"ray_b{batch}" / "sel.jsonl"
    t = time.perf_counter()
    s = run_select(SelectConfig(**base, out=out, shards=n_shards, batch=batch))
    wall = time.perf_counter() - t
    g = s["greedy"]
    row = {"batch": batch, "seconds": s["seconds"], "wall_seconds": wall,
           "selection_phase_seconds": sum(s["seconds"][st] for st in PHASE),
           "rounds": g["rounds"], "samples_per_round": g["samples_per_round"],
           "candidates_per_round": g["candidates_per_round"], "select_seconds": g["select_seconds"],
           "seconds_per_round": g["seconds_per_round"],
           "seconds_propose_per_round": g["seconds_propose_per_round"],
           "seconds_driver_per_round": g["seconds_driver_per_round"],
           "seconds_apply_per_round": g["seconds_apply_per_round"],
           "bytes_proposed": g["bytes_proposed"], "bytes_broadcast": g["bytes_broadcast"],
           "bytes_per_round": (g["bytes_proposed"] + g["bytes_broadcast"]) / max(1, g["rounds"]),
           "vector_nnz": g["vector_nnz"], "shard_peak_rss_mb": g["shard_peak_rss_mb"],
           "driver_peak_rss_mb": s["peak_rss_mb"],
           "same_order_as_local": ids_of(out.with_name("sel.manifest.jsonl")) == ids_local,
           "identical_output_bytes": out.read_bytes() == (DATA / "local" / "sel.jsonl").read_bytes(),
           "loadavg": os.getloadavg()}
    print(json.dumps(row), flush=True)
    return row


def run_config(args: argparse.Namespace, pool: Path, emb: Path, threshold: float) -> dict:
    """The in-process engine, then the sharded one at each batch size, on one graph; `repeat` times
    interleaved, because the machine is shared and one measurement can be off by 2x."""
    base = {"pool": pool, "n": args.k, "valid_tags": SHARED / "valid_tags_tulu3.json",
            "label_embeddings": emb, "sim_threshold": threshold, "progress": False}
    locals_, sharded = [], {b: [] for b in args.batches}
    for _ in range(args.repeat):
        locals_.append(run_local(base))
        ids_local = ids_of(DATA / "local" / "sel.manifest.jsonl")
        for batch in args.batches:
            sharded[batch].append(run_sharded(base, args.shards, batch, ids_local))
    local_phase = float(np.median([r["selection_phase_seconds"] for r in locals_]))
    result: dict = {"sim_threshold": threshold, "local_runs": locals_,
                    "local_selection_phase_seconds_median": local_phase, "sharded": []}
    for batch, runs in sharded.items():
        phase = float(np.median([r["selection_phase_seconds"] for r in runs]))
        row = {"batch": batch, "selection_phase_seconds_median": phase, "ratio_to_local": phase / local_phase,
               "target_ratio": 2.0,
               "ratio_to_local_per_repeat": [r["selection_phase_seconds"] / lo["selection_phase_seconds"]
                                             for r, lo in zip(runs, locals_, strict=True)],
               "rounds": runs[0]["rounds"], "target_rounds": args.k / 100,
               "samples_per_round": runs[0]["samples_per_round"],
               "seconds_per_round_median": float(np.median([r["seconds_per_round"] for r in runs])),
               "bytes_per_round": runs[0]["bytes_per_round"],
               "same_order_as_local": all(r["same_order_as_local"] for r in runs),
               "identical_output_bytes": all(r["identical_output_bytes"] for r in runs), "runs": runs}
        row["meets_targets"] = (row["rounds"] <= args.k / 100 and phase <= 2.0 * local_phase
                                and row["same_order_as_local"])
        result["sharded"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    return result


def rounds_model(args: argparse.Namespace, emb: np.ndarray, threshold: float) -> list[dict]:
    """The certified rounds with in-process shards (no Ray) for more shards than this machine runs:
    rounds and samples per round for S shards and batch B, and the driver's seconds per round for a
    union of S*B candidates (the part of a round that does not shrink with more nodes)."""
    tags, indptr, codes, s = pool_arrays(args.n)
    used = np.unique(codes)
    names = sorted(range(len(used)), key=lambda i: tags[used[i]])
    node_of = np.empty(len(tags), dtype=np.int64)
    node_of[used[names]] = np.arange(len(used))
    graph = LabelGraph.build([tags[u] for u in used], emb[used], threshold=threshold)
    e = sample_matrix(indptr, node_of[codes], s, graph.n_labels)
    vectors = propagate(e, graph.propagation("target", 1.0))
    want = lazy_greedy(vectors, args.k, Phi()).order
    rows = []
    for n_shards in args.sim_shards:
        cuts = np.linspace(0, vectors.shape[0], n_shards + 1).astype(np.int64)
        for batch in args.sim_batches:
            shards = [ShardGreedy(vectors[lo:hi], Phi(), "gradient", np.arange(lo, hi))
                      for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]
            spent = {"propose": 0.0, "apply": 0.0}

            def propose(b: int, shards: list = shards, spent: dict = spent) -> list:
                t = time.perf_counter()
                out = [sh.propose(b) for sh in shards]
                spent["propose"] += time.perf_counter() - t
                return out

            def apply(c: Commit, shards: list = shards, spent: dict = spent) -> None:
                t = time.perf_counter()
                for sh in shards:
                    sh.apply(c.positions, c.ptr, c.idx, c.val, c.groups, c.costs)
                spent["apply"] += time.perf_counter() - t

            got, log = sharded_greedy(propose, apply, graph.n_labels, args.k, Phi(), "gradient", batch)
            summ = log.summary()
            n = max(1, log.rounds)
            rows.append({"shards": n_shards, "batch": batch, "rounds": log.rounds,
                         "samples_per_round": summ["samples_per_round"],
                         "candidates_per_round": summ["candidates_per_round"],
                         "certified_share": (summ["samples_per_round"]
                                             / max(1.0, summ["candidates_per_round"])),
                         "seconds_driver_per_round": summ["seconds_driver_per_round"],
                         "seconds_propose_per_shard_round": spent["propose"] / n / n_shards,
                         "seconds_apply_per_shard_round": spent["apply"] / n / n_shards,
                         "bytes_proposed_per_round": log.bytes_proposed / n,
                         "bytes_broadcast_per_shard_round": log.bytes_broadcast / n / n_shards,
                         "same_order_as_local": got.positions.tolist() == want.tolist()})
            print(json.dumps({"sim_threshold": threshold, **rows[-1]}), flush=True)
    return rows


def memory_probe(args: argparse.Namespace, pool: Path, emb_path: Path) -> dict:
    """RSS of one shard actor holding block 1 of `shards`: idle, after its block is read, after its
    vectors are built at each threshold (docs/scaling.md's memory per shard)."""
    import ray

    from mig_ray.pools.annotated import load_valid_tags, split_blocks
    from mig_ray.pools.fields import FieldSpec
    from mig_ray.runtime.session import ray_up
    from mig_ray.selection.shard import ShardActor

    class Probe(ShardActor):
        def rss_now_mb(self) -> float:
            with open("/proc/self/status") as f:
                return next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS"))

    ray_up(None, num_cpus=4)
    block = split_blocks(pool, args.shards)[0]
    actor = ray.remote(num_cpus=1)(Probe).remote(str(pool), block, FieldSpec(None, None, None),
                                                 load_valid_tags(SHARED / "valid_tags_tulu3.json"), False)
    try:
        out: dict = {"shards": args.shards, "idle_rss_mb": ray.get(actor.rss_now_mb.remote())}
        ray.get(actor.load.remote(1))
        out["rows"] = ray.get(actor.count_lines.remote())
        out["after_read_rss_mb"] = ray.get(actor.rss_now_mb.remote())
        labels = sorted(ray.get(actor.labels.remote()))
        with np.load(emb_path) as z:
            row = {str(n): i for i, n in enumerate(z["labels"])}
            emb = z["embeddings"][[row[name] for name in labels]]
        for threshold in args.thresholds:  # each build replaces the previous one
            graph = LabelGraph.build(labels, emb, threshold=threshold)
            prop = ray.put(graph.propagation("target", 1.0))
            nnz = ray.get(actor.build.remote(ray.put(graph.labels), prop, 0, Phi(), "gradient", False))
            out[f"after_build_{threshold}"] = {"vector_nnz": nnz,
                                               "rss_mb": ray.get(actor.rss_now_mb.remote()),
                                               "peak_rss_mb": ray.get(actor.peak_rss_mb.remote())}
        print(json.dumps(out), flush=True)
        return out
    finally:
        ray.kill(actor)
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 512, 2048])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.6])
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats; medians are compared")
    ap.add_argument("--sim-shards", type=int, nargs="*", default=[2, 8, 32],
                    help="in-process rounds model: shard counts (none: skip)")
    ap.add_argument("--sim-batches", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--memory-probe", action="store_true",
                    help="only measure one shard actor's memory -> bench/results/sharded-memory-<date>.json")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    pool = DATA / f"tulu3_shaped_{args.n}.jsonl"
    if not pool.exists():
        write_jsonl(pool, args.n)
    tag_emb = label_embeddings(valid_tags())
    emb = DATA / "tulu3_tags_minilm.npz"
    if args.memory_probe:
        date = dt.date.today().isoformat()
        res = {"date": date, "command": " ".join(["python", *sys.argv]), "n": args.n,
               **memory_probe(args, pool, emb)}
        out = args.out or Path(__file__).resolve().parent / "results" / f"sharded-memory-{date}.json"
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {out}")
        return
    result: dict = {**header(), "n": args.n, "k": args.k,
                    "shards": args.shards, "command": " ".join(["python", *sys.argv]),
                    "note": "2-core machine shared with other developers working concurrently (see the load "
                            "averages): timings are noisy. Selection phase = embed_labels + graph + vectors "
                            "+ select; for Ray it starts with Ray up and the shards loaded (stage 'read' "
                            "holds Ray start, actor start and the block reads) and ends with the order "
                            "returned.",
                    "loadavg_start": os.getloadavg(), "configs": []}
    for threshold in args.thresholds:
        result["configs"].append(run_config(args, pool, emb, threshold))
        if args.sim_shards:
            result["configs"][-1]["rounds_model"] = rounds_model(args, tag_emb, threshold)
    result["loadavg_end"] = os.getloadavg()
    out = args.out or Path(__file__).resolve().parent / "results" / f"sharded-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray)
                              else str(o)) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
