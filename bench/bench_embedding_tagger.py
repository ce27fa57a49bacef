"""Embedding tagger throughput: records/second through Ray actors on this machine's CPUs.

The 175 real self-instruct seed tasks (shared/data) repeated to --records, each copy with its own
id. Three runs on the same records: the tagger called in-process (no Ray, the ceiling), one Ray
actor with all threads, and one actor per core with one thread each; the actor runs go through
`annotate` (cache writes included) into a fresh cache. Model load is counted (nightly runs pay it).

    .venv/bin/python bench/bench_embedding_tagger.py --records 2000

On a machine shared with other work, RAY_worker_niceness=0 keeps Ray's workers at the driver's
priority (Ray starts them at niceness 15, so any busy process starves the actors).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NICENESS = "RAY_worker_niceness"  # Ray's own (lower-case) setting


def pool(records: int) -> list[dict]:
    from mig_ray.pools.layouts import messages_json, normalise

    path = ROOT.parent / "shared" / "data" / "alpaca_seed_tasks_175.jsonl"
    seeds = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    msgs = [messages_json(normalise(r)[1]) for r in seeds]
    n = len(seeds)
    return [{"id": f"{seeds[i % n]['id']}#{i}", "messages": msgs[i % n]} for i in range(records)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / f"embedding-tagger-{date.today()}.json")
    args = ap.parse_args()

    import numpy as np
    import pyarrow as pa
    import ray

    from mig_ray.annotate.embedding_tagger import EmbeddingTagger, EmbeddingTaggerConfig
    from mig_ray.annotate.resources import ActorResources
    from mig_ray.annotate.runner import annotate
    from mig_ray.runtime.session import ray_up

    rows = pool(args.records)
    runs = []
    load_start = [round(x, 2) for x in os.getloadavg()]

    t0 = time.perf_counter()
    tagger = EmbeddingTagger(EmbeddingTaggerConfig(num_threads=args.cpus))  # warms the vocabulary cache
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(rows), args.batch_size):
        tagger(pa.Table.from_pylist(rows[i:i + args.batch_size]))
    s = time.perf_counter() - t0
    runs.append({"run": "in-process, no Ray", "threads": args.cpus, "model_load_s": round(load_s, 2),
                 "seconds": round(s, 2), "records_per_s": round(len(rows) / s, 1)})
    print(runs[-1], flush=True)
    del tagger

    ray_up(None, num_cpus=args.cpus)
    ds = ray.data.from_items(rows, override_num_blocks=max(2, args.cpus * 2)).materialize()
    for actors in sorted({1, args.cpus}):
        threads = max(1, args.cpus // actors)
        cfg = EmbeddingTaggerConfig(num_threads=threads)
        res = ActorResources(concurrency=actors, num_cpus=round(0.9 * args.cpus / actors, 2),
                             batch_size=args.batch_size)
        cache = Path(tempfile.mkdtemp(prefix="bench-embtag-"))
        try:
            st = annotate(ds, EmbeddingTagger, cfg, cache, res, progress=False)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        assert st.annotated == len(rows) and st.failed == 0, st
        runs.append({"run": f"annotate(): {actors} Ray actor(s) x {threads} thread(s)", "actors": actors,
                     "threads_per_actor": threads, "num_cpus_per_actor": res.num_cpus,
                     "seconds_with_model_load": st.seconds,
                     "records_per_s_with_model_load": round(len(rows) / st.seconds, 1)})
        print(runs[-1], flush=True)
    ray.shutdown()

    result = {
        "benchmark": "embedding tagger (all-MiniLM-L6-v2, 4,531 Tulu3 tags, top 5 by MMR)",
        "date": str(date.today()), "records": len(rows), "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": load_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "1/5/15-minute load averages: above the core count, the CPUs were shared"},
        "command": ("RAY_worker_niceness=0 " if os.environ.get(NICENESS) == "0" else "")
        + f"python bench/bench_embedding_tagger.py --records {args.records} --cpus {args.cpus}",
        "runs": runs, "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
