"""The job at cluster scale (issue 10): `mig-ray run` against `mig-ray select` on the same pools.

For each size (1M and 3M Tulu3-shaped records by default) the same JSONL file goes through
  - the job: `tagger: from-data`, `scorer: field`, `graph.label_embeddings` given, `selection.n`,
    `selection.shards: 2`, every stage run (a fresh output folder);
  - `mig-ray select` in process, and `mig-ray select --shards 2`, with the same label embeddings.
Each is a fresh `python -m mig_ray` process with its own local Ray; sampled every 20 ms: the peak
RSS of that process alone (the driver) and of its whole process tree (the driver, Ray's servers,
its workers and actors). Also wall seconds, the job's seconds per stage, and whether the three
selections are the same ids in the same order.

    python bench/bench_job_scale.py      # writes bench/results/job-scale-<date>.json

Targets on the 2-core machine: driver peak RSS grows by at most 50 bytes per record between the
sizes; the job's wall within 2.5x of in-process `mig-ray select` on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_select import DATA, label_embeddings, run_measured  # noqa: E402
from provenance import header, write_result  # noqa: E402
from tulu3_shaped import valid_tags, write_jsonl  # noqa: E402


def measured(argv: list[str], keep_stderr: bool = False) -> dict:
    """Run `python -m mig_ray ARGV`; its wall seconds, its own peak RSS and its tree's (and its
    stderr lines with `keep_stderr`)."""
    env = {**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"}
    wall, own, tree, err = run_measured([sys.executable, "-m", "mig_ray", *argv], env)
    out = {"wall_seconds": round(wall, 2), "driver_peak_rss_mb": round(own, 1),
           "tree_peak_rss_mb": round(tree, 1)}
    if keep_stderr:
        out["stderr"] = err
    return out


def ids_of(manifest: Path) -> list[str]:
    return [json.loads(x)["id"] for x in manifest.open()]


RAY_LINE = re.compile(r"ray: started in (\d+\.\d+) s, shut down in (\d+\.\d+) s")


def run_size(n: int, k: int, shards: int, emb: Path, dedup: bool = False,
             target_degree: float | None = None) -> dict:
    pool = DATA / f"tulu3_shaped_{n}.jsonl"
    if not pool.exists():
        write_jsonl(pool, n)
    work = DATA / f"job-scale-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    job = {"name": f"scale-{n}", "input": {"paths": [str(pool)]},
           "annotate": {"tagger": {"kind": "from-data"}, "scorer": {"kind": "field"}},
           "graph": {"label_embeddings": str(emb),
                     **({"target_degree": target_degree} if target_degree else {})},
           "selection": {"n": k, "shards": shards},
           # off unless asked: the job against `select` on the same records (dedup drops some)
           "dedup": {"enabled": dedup},
           "output": {"dir": str(work / "out")}, "progress": False}
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    row: dict = {"records": n, "pool_bytes": pool.stat().st_size}
    row["job"] = measured(["run", str(work / "job.yaml"), "--no-progress"], keep_stderr=True)
    ray_line = [m.groups() for line in row["job"].pop("stderr") if (m := RAY_LINE.search(line))]
    if ray_line:  # Ray's fixed costs in this run (its start is inside the first stage's seconds)
        row["job"]["ray_start_seconds"], row["job"]["ray_shutdown_seconds"] = map(float, ray_line[-1])
    summary = json.loads((work / "out" / "summary.json").read_text())
    row["job"]["stage_seconds"] = {s: r["seconds"] for s, r in summary["stages"].items()}
    row["job"]["stage_peak_tree_mb"] = {s: r["peak_memory_mb"] for s, r in summary["stages"].items()}
    row["job"]["counts"] = summary["counts"]
    common = ["-n", str(k), "--label-embeddings", str(emb), "--no-progress",
              *(["--target-degree", str(target_degree)] if target_degree else [])]
    row["select_in_process"] = measured(["select", str(pool), "-o", str(work / "local.jsonl"), *common])
    row["select_shards"] = measured(["select", str(pool), "-o", str(work / "sharded.jsonl"), *common,
                                     "--shards", str(shards)])
    job_ids = ids_of(work / "out" / "selected.manifest.jsonl")
    local_ids = ids_of(work / "local.manifest.jsonl")
    sharded_ids = ids_of(work / "sharded.manifest.jsonl")
    row["same_ids_and_order"] = {"job_vs_select": job_ids == local_ids, "selected": len(job_ids),
                                 "select_shards_vs_select": sharded_ids == local_ids}
    wall = row["job"]["wall_seconds"] / row["select_in_process"]["wall_seconds"]
    row["job_over_select_wall"] = round(wall, 2)
    row["issue24_target_job_over_select"] = 1.6 if n <= 1_000_000 else 1.25
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--dedup", action="store_true", help="run the job's dedup stage too (its ids then "
                    "differ from select's where it drops duplicates)")
    ap.add_argument("--target-degree", type=float, default=None, help="the graph rule of the job and of "
                    "select (default: threshold 0.9, as the runs before issue 24)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    result = {**header(), "benchmark": "job-scale", "k": args.k, "shards": args.shards, "dedup": args.dedup,
              "target_degree": args.target_degree}
    tags = valid_tags()
    emb = DATA / "tulu3_tags_minilm.npz"
    label_embeddings(tags)  # written to emb once, then reused
    rows = [run_size(n, args.k, args.shards, emb, args.dedup, args.target_degree) for n in args.sizes]
    result["runs"] = rows
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per = {key: round((b[key]["driver_peak_rss_mb"] - a[key]["driver_peak_rss_mb"]) * 2**20
                          / (b["records"] - a["records"]), 1)
               for key in ("job", "select_in_process", "select_shards")}
        result["driver_bytes_per_record_growth"] = per
        result["targets"] = {
            "driver_growth_le_50_bytes_per_record": per["job"] <= 50,
            "job_within_2_5x_of_select": all(r["job_over_select_wall"] <= 2.5 for r in rows),
            "ids_identical": all(all(v for v in r["same_ids_and_order"].values() if isinstance(v, bool))
                                 for r in rows)}
    cores = os.cpu_count() or 1
    result["stage_core_microseconds_per_record"] = [
        {"records": r["records"], **{s: round(t * cores / r["records"] * 1e6, 3)
                                     for s, t in r["job"]["stage_seconds"].items()}} for r in rows]
    write_result(result, "job-scale", args.out)


if __name__ == "__main__":
    main()
