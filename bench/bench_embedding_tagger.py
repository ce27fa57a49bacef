"""Tagger throughput: MiniLM as before, MiniLM with the faster settings, and the static tagger.

The pool: conversations shaped like Tulu3's (1-3 user turns, as tulu3_shaped.py draws them) whose
turns are real user texts (the bundled demo pool, the 175 Alpaca seed tasks and the 10 real Tulu3
records in tests/data), each turn made distinct by a numbered suffix, so that embedding each
distinct turn once saves nothing here that a real pool would not also save.

Each tagger runs in process (no Ray, the ceiling) and through `annotate`, the job's tag stage, on
local Ray (Ray Data actors, cache writes included). Model load (and, for the static tagger, its
distillation when this machine has none cached) is timed apart, and so is the actors' start: the
stage's rate is given with and without it. With --job-records N the whole job runs once on a raw
(unannotated) pool of N such records with the static tagger, end to end.

    RAY_worker_niceness=0 .venv/bin/python bench/bench_embedding_tagger.py --records 5000 \
        --minilm-records 1000 --job-records 100000

MiniLM runs on --minilm-records (its rate is per record, so a smaller pool measures it in less
time on a shared machine). The machine's load averages at start and end are recorded: above the
core count, the CPUs were shared and the absolute numbers are low; compare ratios within one run.
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

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
NICENESS = "RAY_worker_niceness"  # Ray's own (lower-case) setting


def user_turns() -> list[str]:
    """Real user texts: the demo pool's, the Alpaca seed tasks' and the real Tulu3 records'."""
    from mig_ray.pools.layouts import normalise

    texts = []
    for path in (ROOT / "mig_ray" / "demo" / "demo_pool.jsonl", ROOT / "tests" / "data" /
                 "alpaca_seed_tasks_175.jsonl", ROOT / "tests" / "data" / "mig_example_tulu3_10.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the Tulu3 sample keeps one broken line on purpose
            texts += [m["content"] for m in normalise(rec)[1] if m["role"] == "user" and m["content"].strip()]
    return texts


def pool(records: int, seed: int = 0) -> list[dict]:
    """Rows (id, messages JSON) of `records` conversations; turn i of the pool ends in " #i"."""
    from mig_ray.pools.layouts import messages_json

    texts = user_turns()
    rng = np.random.default_rng(seed)
    turns = rng.choice([1, 1, 1, 2, 3], size=records)  # as tulu3_shaped.py
    picks = rng.integers(0, len(texts), size=int(turns.sum()))
    rows, k = [], 0
    for i, t in enumerate(turns):
        msgs = []
        for _ in range(t):
            msgs += [{"role": "user", "content": f"{texts[picks[k]]} #{k}"},
                     {"role": "assistant", "content": f"An answer to turn {k}."}]
            k += 1
        rows.append({"id": f"r{i:08d}", "messages": messages_json(msgs)})
    return rows


def in_process(name: str, build, rows: list[dict], batch: int) -> dict:
    import pyarrow as pa

    t0 = time.perf_counter()
    tagger = build()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    failed = 0
    for i in range(0, len(rows), batch):
        out = tagger(pa.Table.from_pylist(rows[i:i + batch]))
        failed += sum(s != "ok" for s in out.column("status").to_pylist())
    s = time.perf_counter() - t0
    assert failed == 0, f"{name}: {failed} failed"
    return {"run": f"{name}: in process, no Ray", "records": len(rows), "batch_size": batch,
            "model_load_s": round(load_s, 2), "seconds": round(s, 2),
            "records_per_s": round(len(rows) / s, 1)}


def through_annotate(name: str, cls, cfg, rows: list[dict], actors: int, cpus: int, batch: int,
                     load_s: float) -> dict:
    import ray

    from mig_ray.annotate.resources import ActorResources
    from mig_ray.annotate.runner import annotate

    ds = ray.data.from_items(rows, override_num_blocks=max(2, cpus * 2)).materialize()
    res = ActorResources(concurrency=actors, num_cpus=round(0.9 * cpus / actors, 2), batch_size=batch)
    cache = Path(tempfile.mkdtemp(prefix="bench-tagger-"))
    try:
        st = annotate(ds, cls, cfg, cache, res, progress=False)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert st.annotated == len(rows) and st.failed == 0, st
    net = max(st.seconds - load_s, 1e-9)
    return {"run": f"{name}: annotate() on local Ray, {actors} actor(s)", "records": len(rows),
            "actors": actors, "num_cpus_per_actor": res.num_cpus, "batch_size": batch,
            "seconds_with_model_load": st.seconds,
            "records_per_s_with_model_load": round(len(rows) / st.seconds, 1),
            "records_per_s_less_in_process_model_load": round(len(rows) / net, 1)}


def whole_job(n: int, cpus: int, tmp: Path) -> dict:
    """The job end to end on a raw pool of n records (static tagger, constant score, K = 1%)."""
    import yaml

    from mig_ray.job.jobfile import load_job
    from mig_ray.job.pipeline import run_job

    src = tmp / "raw.jsonl"
    with open(src, "wb") as f:
        for r in pool(n, seed=1):
            f.write(orjson.dumps({"id": r["id"], "messages": orjson.loads(r["messages"])}) + b"\n")
    job = {"name": "bench-static", "input": {"paths": [str(src)]},
           # 0.45 CPU an actor: actors holding 0.9 each left the job's read and write tasks waiting
           # on 2 CPUs (the stage stalled, actors idle)
           "annotate": {"tagger": {"kind": "static", "resources": {"concurrency": cpus, "num_cpus": 0.45,
                                                                    "batch_size": 2048}},
                        "scorer": {"kind": "constant"}},
           "graph": {"target_degree": 5}, "selection": {"n": max(1, n // 100)},
           "output": {"dir": str(tmp / "out")}, "progress": False}
    (tmp / "job.yaml").write_text(yaml.safe_dump(job))
    t0 = time.perf_counter()
    summary = run_job(load_job(tmp / "job.yaml"))
    total = time.perf_counter() - t0
    stages = {k: v["seconds"] for k, v in summary["stages"].items()}
    return {"run": f"job end to end, raw pool of {n:,} records, static tagger, {cpus} actors",
            "records": n, "seconds": round(total, 2), "stage_seconds": stages,
            "tag_stage_records_per_s": round(n / stages["tag"], 1) if stages.get("tag") else None,
            "selected": summary["counts"].get("selected")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--minilm-records", type=int, default=1000)
    ap.add_argument("--job-records", type=int, default=0, help="also run the whole job on this many")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / f"embedding-tagger-{date.today()}.json")
    args = ap.parse_args()

    import ray

    from mig_ray.annotate.embedding_tagger import EmbeddingTagger, EmbeddingTaggerConfig
    from mig_ray.annotate.static_tagger import StaticTagger, StaticTaggerConfig, static_model_path
    from mig_ray.runtime.session import ray_up

    load_start = [round(x, 2) for x in os.getloadavg()]
    rows = pool(args.records)
    small = rows[:args.minilm_records]
    static_cached = (static_model_path(StaticTaggerConfig()) / "config.json").is_file()
    variants = [
        ("MiniLM before (256 tokens, batches of 64)", EmbeddingTagger,
         EmbeddingTaggerConfig(num_threads=args.cpus, max_tokens=None, margin=None), small, 64),
        ("MiniLM after (128 tokens, batches of 256)", EmbeddingTagger,
         EmbeddingTaggerConfig(num_threads=args.cpus, max_tokens=128), small, 256),
        ("static", StaticTagger, StaticTaggerConfig(), rows, 2048),
    ]
    runs, loads = [], {}
    for name, cls, cfg, data, batch in variants:
        runs.append(in_process(name, lambda cls=cls, cfg=cfg: cls(cfg), data, batch))
        loads[name] = runs[-1]["model_load_s"]
        print(runs[-1], flush=True)

    ray_up(None, num_cpus=args.cpus)
    for name, cls, cfg, data, batch in variants:
        per_actor = cfg.model_copy(update={"num_threads": 1}) if cls is EmbeddingTagger else cfg
        runs.append(through_annotate(name, cls, per_actor, data, args.cpus, args.cpus, batch, loads[name]))
        print(runs[-1], flush=True)
    if args.job_records:
        with tempfile.TemporaryDirectory(prefix="bench-tagger-job-") as tmp:
            runs.append(whole_job(args.job_records, args.cpus, Path(tmp)))
            print(runs[-1], flush=True)
    ray.shutdown()

    by = {r["run"]: r for r in runs}
    before = by["MiniLM before (256 tokens, batches of 64): in process, no Ray"]["records_per_s"]
    after = by["MiniLM after (128 tokens, batches of 256): in process, no Ray"]["records_per_s"]
    static = by["static: in process, no Ray"]["records_per_s"]
    result = {
        "benchmark": "taggers: MiniLM before/after, static (model2vec from MiniLM), 4,531 Tulu3 tags",
        "date": str(date.today()), "records": args.records, "minilm_records": len(small),
        "static_model_was_cached": static_cached,
        "ratios_in_process": {"minilm_after_over_before": round(after / before, 2),
                              "static_over_minilm_before": round(static / before, 1)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": load_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "1/5/15-minute load averages: above the core count, the CPUs were shared"},
        "command": ("RAY_worker_niceness=0 " if os.environ.get(NICENESS) == "0" else "")
        + f"python bench/bench_embedding_tagger.py --records {args.records} --minilm-records "
          f"{args.minilm_records} --job-records {args.job_records} --cpus {args.cpus}",
        "runs": runs, "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ratios_in_process"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
