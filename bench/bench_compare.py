"""`mig-ray compare` benchmark (issue 12).

1. The Tulu3-shaped 1M pool (bench/tulu3_shaped.py), K = 50K, methods mig,random,score,instag on label
   vectors only: the whole `mig-ray compare` command against `mig-ray select` on the same file and
   options (both with the valid-tag embeddings already cached). Target: compare within 2x of select.
2. A 50K-record Tulu3-shaped pool with 384-d sample embeddings (clustered by each sample's first
   tag), K = 5K, all six methods: seconds per method from compare.json.

    python bench/bench_compare.py            # writes bench/results/compare-<date>.json
Pools and embeddings are written under bench/data/ (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import header, write_result  # noqa: E402
from tulu3_shaped import SHARED, tulu3_shaped, write_jsonl  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def command(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mig_ray", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: mig-ray {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def ids_of(manifest: Path) -> list[str]:
    return [json.loads(line)["id"] for line in manifest.open()]


def sample_embeddings(path: Path, n: int, seed: int, dim: int = 384) -> None:
    """Unit vectors: a centre per sample's first tag plus noise (cosine about 0.92 between two samples
    of one tag), so deita's 0.9 threshold rejects near-duplicates."""
    tags, indptr, codes, *_ = tulu3_shaped(n, seed)
    rng = np.random.default_rng(seed + 1)
    centres = rng.normal(size=(len(tags), dim)).astype(np.float32)
    emb = centres[codes[indptr[:-1]]] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    np.savez(path, ids=np.array([f"s{i:08d}" for i in range(n)]), embeddings=emb)


def bench_1m(args: argparse.Namespace, common: list[str]) -> dict:
    pool = DATA / f"tulu3_shaped_{args.n}.jsonl"
    if not pool.exists():
        write_jsonl(pool, args.n)
    sel_out = DATA / "compare_select" / "selected.jsonl"
    cmp_out = DATA / "compare_out"
    methods = "mig,random,score,instag"
    cold = command(["select", str(pool), "-n", str(args.k), "-o", str(sel_out), *common])
    walls: dict[str, list[float]] = {"select": [], "compare": []}
    for _ in range(args.reps):  # alternated, so that a slow spell of the machine hits both
        walls["select"].append(command(["select", str(pool), "-n", str(args.k), "-o", str(sel_out), *common]))
        walls["compare"].append(command(["compare", str(pool), "-n", str(args.k), "-o", str(cmp_out),
                                         "--methods", methods, *common]))
    data = json.loads((cmp_out / "compare.json").read_text())
    same = ids_of(cmp_out / "mig.manifest.jsonl") == ids_of(sel_out.with_name("selected.manifest.jsonl"))
    return {
        "n": args.n, "k": args.k, "methods": methods, "pool_bytes": pool.stat().st_size,
        "select_wall_seconds_cold": cold, "wall_seconds": walls,
        "ratio_compare_to_select": min(walls["compare"]) / min(walls["select"]),
        "ratio_per_rep": [c / s for c, s in zip(walls["compare"], walls["select"], strict=True)],
        "target_ratio": 2.0, "mig_same_as_select": same,
        "method_seconds": {m: v["seconds"] for m, v in data["methods"].items()},
        "compare_seconds_in_process": data["seconds_total"],
        "metrics": {m: v["metrics"] for m, v in data["methods"].items()},
    }


def bench_embeddings(args: argparse.Namespace, common: list[str]) -> dict:
    pool = DATA / f"tulu3_shaped_{args.n2}_seed2.jsonl"
    if not pool.exists():
        write_jsonl(pool, args.n2, seed=2)
    emb = DATA / f"sample_embeddings_{args.n2}_seed2_noise0.3.npz"
    if not emb.exists():
        sample_embeddings(emb, args.n2, 2)
    out = DATA / "compare_out_embeddings"
    wall = command(["compare", str(pool), "-n", str(args.k2), "-o", str(out), "--sample-embeddings", str(emb),
                    *common])
    data = json.loads((out / "compare.json").read_text())
    return {
        "n": args.n2, "k": args.k2, "dimensions": data["sample_embeddings"]["dimensions"],
        "wall_seconds": wall, "method_seconds": {m: v["seconds"] for m, v in data["methods"].items()},
        "skipped": data["skipped"], "load_embeddings_seconds": data["sample_embeddings"]["seconds"],
        "metrics": {m: v["metrics"] for m, v in data["methods"].items()},
        "note": "deita: blocked matrix products + a compiled in-block loop; kcenter: compiled lazy "
                "max-heap (no per-pair Python loop)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--n2", type=int, default=50_000)
    ap.add_argument("--k2", type=int, default=5_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-1m", action="store_true", help="only the 50K pool with embeddings")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    result: dict = header()
    cache = Path(tempfile.mkdtemp(prefix="bench-compare-label-embeddings-"))
    common = ["--valid-tags", str(SHARED / "valid_tags_tulu3.json"), "--no-progress",
              "--embedding-cache-dir", str(cache)]
    try:
        if not args.skip_1m:
            result["tulu3_1m"] = bench_1m(args, common)
            print(json.dumps(result["tulu3_1m"], indent=1), flush=True)
        result["embeddings_50k"] = bench_embeddings(args, common)
        print(json.dumps(result["embeddings_50k"], indent=1), flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    write_result(result, "compare", args.out)


if __name__ == "__main__":
    main()
