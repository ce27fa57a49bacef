"""Tagging throughput: VLLMTagger in Ray Data actors versus bare `vllm.LLM`, same prompts, same run.

Both paths generate the same token prompts with the same constrained sampling parameters. Bare
vLLM gets all prompts in one `generate` call (its best case); the Ray path reads the records,
repartitions them into blocks and runs `map_batches(VLLMTagger, ...)`, with all of Ray Data's
block transfer, batching and conversion included. Engine load is excluded from both steady-state
rates (each actor stamps when its engine is ready); the Ray end-to-end time, load included, is
reported too.

    python bench/bench_tagger.py [--records 1600] [--omp-threads 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import code_version  # noqa: E402

ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
TOPICS = ["a Python function", "the French revolution", "a vegetarian recipe", "linear algebra",
          "a haiku", "a cover letter", "JavaScript closures", "the water cycle", "tax forms", "chess"]


def records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        msgs = [{"role": "user", "content": f"Question {i}: please help me with {t}, step by step."},
                {"role": "assistant", "content": "Sure."}]
        out.append({"id": f"b{i:06d}", "messages": json.dumps(msgs)})
    return out


def threads() -> dict:
    """Torch threads and CPU affinity of this process (Ray sets OMP_NUM_THREADS from num_cpus)."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "affinity": sorted(os.sched_getaffinity(0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1600)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=400)
    ap.add_argument("--num-cpus", type=float, default=2.0, help="logical CPUs of the tagger actor")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--omp-threads", type=int, default=1,
                    help="OMP_NUM_THREADS for both paths (on a loaded 2-core box 1 is much faster)")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny random Llama)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"
                                         / f"tagger-{dt.date.today().isoformat()}.json"))
    args = ap.parse_args()
    env = dict(ENV)
    if args.omp_threads is not None:
        env["OMP_NUM_THREADS"] = str(args.omp_threads)
    os.environ.update(env)

    if args.model is None:
        # Built in a child process: torch work in this process before vLLM starts (OpenMP pool
        # created unbound) made the bare engine 2-3x slower than a fresh process in our runs.
        model = str(Path(tempfile.mkdtemp(prefix="bench_tagger_")) / "tiny_llama")
        script = Path(__file__).resolve().parents[1] / "tests" / "tiny_llama.py"
        subprocess.run([sys.executable, str(script), model], check=True, capture_output=True)
    else:
        model = args.model

    from mig_ray.annotate.vllm_tagger import VLLMTagger

    cfg = {"model": model, "dtype": "float32", "enforce_eager": True, "max_model_len": 1024,
           "output_schema": "tags", "max_tags": 3, "max_tag_chars": 12, "max_tokens": args.max_tokens,
           "env": env}
    recs = records(args.records)

    # Bare vLLM: the same engine settings, prompts and sampling parameters, one generate call.
    t0 = time.perf_counter()
    bare = VLLMTagger(cfg)
    load_bare = time.perf_counter() - t0
    bare_threads = threads()
    prompt_ids = [bare.prompt_ids(r["messages"]) for r in recs]
    bare._generate(prompt_ids[:8], bare.params)  # warm-up, as the Ray actor's first batch is not

    def run_bare(tagger: VLLMTagger) -> tuple[float, list]:
        t = time.perf_counter()
        o = tagger._generate(prompt_ids, tagger.params)
        return time.perf_counter() - t, o

    bare_before, outs = run_bare(bare)
    bare_tokens = sum(len(bare.tokenizer.encode(text, add_special_tokens=False)) for text, _ in outs)
    bare_len_stops = sum(1 for _, f in outs if f == "length")

    import ray

    ray.init(num_cpus=max(4, int(args.num_cpus) + 2), include_dashboard=False, log_to_driver=False)

    class StampedTagger(VLLMTagger):
        """VLLMTagger that stamps when its engine is ready and warms up like the bare run."""

        def __init__(self, config: dict) -> None:
            super().__init__(config)
            self._generate([self.prompt_ids(r["messages"]) for r in records(8)], self.params)
            self.ready = time.time()
            self.threads = json.dumps(threads())

        def __call__(self, batch):
            out = super().__call__(batch)
            out["ready"] = [self.ready] * len(out["id"])
            out["threads"] = [self.threads] * len(out["id"])
            return out

    t0 = time.time()
    ds = ray.data.from_items(recs).repartition(args.blocks)
    rows = ds.map_batches(StampedTagger, fn_constructor_kwargs={"config": cfg}, concurrency=1,
                          num_cpus=args.num_cpus, batch_size=args.batch_size).take_all()
    t_end = time.time()
    ray.shutdown()
    # bare again after the Ray run: the machine is shared, so bracket the Ray run in time
    bare_after, _ = run_bare(bare)
    del bare
    gc.collect()
    bare_s = (bare_before + bare_after) / 2
    ready = min(r["ready"] for r in rows)
    ray_s = t_end - ready
    ok = sum(r["status"] == "ok" for r in rows)
    assert sorted(r["id"] for r in rows) == [r["id"] for r in recs]

    res = {
        "date": dt.date.today().isoformat(), "code": code_version(),
        "what": "VLLMTagger via ray.data map_batches (1 actor) vs bare vllm.LLM.generate, same prompts",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "model": "tiny random Llama (tests/tiny_llama.py: hidden 128, 2 layers, vocab 512), float32"
                 if args.model is None else args.model,
        "config": {k: v for k, v in cfg.items() if k != "model"},
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "records": args.records, "blocks": args.blocks, "batch_size": args.batch_size,
        "actor_num_cpus": args.num_cpus,
        "bare": {"load_s": round(load_bare, 2), "generate_s": round(bare_s, 3),
                 "generate_s_before_after_ray": [round(bare_before, 3), round(bare_after, 3)],
                 "records_per_s": round(args.records / bare_s, 2),
                 "output_tokens": bare_tokens, "length_stops": bare_len_stops, **bare_threads},
        "ray": {"steady_s": round(ray_s, 3), "records_per_s": round(args.records / ray_s, 2),
                "end_to_end_s_incl_load": round(t_end - t0, 2), "ok": ok,
                "failed": len(rows) - ok, "model_calls": int(sum(r["calls"] for r in rows)),
                **json.loads(rows[0]["threads"])},
    }
    res["ratio_ray_over_bare"] = round(res["ray"]["records_per_s"] / res["bare"]["records_per_s"], 3)
    res["target_ratio"] = 0.8
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
