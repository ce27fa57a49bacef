"""`mig-ray compare` benchmark (issue 12).

1. The Tulu3-shaped 1M pool (bench/tulu3_shaped.py), K = 50K, methods mig,random,score,instag on label
   vectors only: the whole `mig-ray compare` command against `mig-ray select` on the same file and
   options (both with the valid-tag embeddings already cached). Target: compare within 2x of select.
2. A 50K-record Tulu3-shaped pool with 384-d sample embeddings (clustered by each sample's first
   tag), K = 5K, every method: seconds per method from compare.json.
3. Methods on arrays, each in its own process (seconds and peak memory, ru_maxrss, with the load
   average and the kernel's CPU pressure before and after): at 50K x 384 (K = 5K) and 1M x 384
   (K = 50K) the embedding methods (kcenter, car, qdit) and longest; at 50K also qdit's exact
   neighbours alone, brute force (knn-blas), pruned by groups (knn-pruned) and faiss-cpu's exact
   IndexFlatIP (knn-faiss, if faiss is installed). Targets: every method under 10 s at 50K; at 1M qdit
   and car under 10 minutes, kcenter under 15. `--threads 1` runs the cases on one thread (on a
   machine shared with other sessions two threads of BLAS were several times slower than one).

    python bench/bench_compare.py            # writes bench/results/compare-<date>.json
    python bench/bench_compare.py --skip-1m --methods-n 50000 1000000   # the method cases only
Pools and embeddings are written under bench/data/ (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def method_arrays(n: int, seed: int = 2, dim: int = 384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit embeddings [n, dim] float32, scores, response lengths), cached under bench/data as .npy:
    a centre per sample's first tag plus noise (as `sample_embeddings`), the Tulu3-shaped scores."""
    base = DATA / f"methods_{n}_seed{seed}"
    files = [base.with_name(base.name + f"_{what}.npy") for what in ("emb", "scores", "lengths")]
    if not all(f.exists() for f in files):
        tags, indptr, codes, turns, quality, complexity = tulu3_shaped(n, seed)
        rng = np.random.default_rng(seed + 1)
        centres = rng.normal(size=(len(tags), dim)).astype(np.float32)
        emb = np.empty((n, dim), dtype=np.float32)
        for lo in range(0, n, 100_000):  # in blocks: the noise of 1M x 384 at once is 3 GB of float64
            hi = min(lo + 100_000, n)
            emb[lo:hi] = centres[codes[indptr[lo:hi]]] + 0.3 * rng.standard_normal((hi - lo, dim), np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        t = np.arange(3)[None, :] < turns[:, None]
        scores = (quality * complexity * t).sum(axis=1) / turns
        lengths = rng.lognormal(6.5, 1.0, n).astype(np.int64)
        for f, a in zip(files, (emb, scores, lengths), strict=True):
            np.save(f, a)
    return tuple(np.load(f, mmap_mode="r") for f in files)


def one_method(method: str, n: int, k: int, seed: int, car_kmeans: str = "auto") -> dict:
    """Run one method on the cached arrays in this process; seconds and this process's peak memory."""
    from mig_ray.compare import car, kcenter, knn, longest, qdit

    emb, scores, lengths = method_arrays(n)
    t_load = time.perf_counter()
    emb, scores, lengths = np.ascontiguousarray(emb), np.asarray(scores), np.asarray(lengths)
    load = time.perf_counter() - t_load
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    extra: dict = {}
    if method == "longest":
        order = longest.longest_order(lengths, k)
    elif method == "kcenter":
        stats = {}
        order = kcenter.kcenter_order(emb, k, seed, stats=stats)
        updates = -(-(k - 1) // kcenter.BLOCK)
        extra = {**stats, "rows_multiplied_share": stats["rows_multiplied"] / (n * updates)}
    elif method == "car":
        z = car.pca_reduce(emb, car.OPTIONS["pca"])
        clusters = car.default_clusters(n)
        t_km = time.perf_counter()
        opts = car.OPTIONS
        labels, how, iters = car.fit_kmeans(z, clusters, seed, kmeans=car_kmeans,
                                            full_max=opts["full_max"], init_max=opts["init_max"])
        extra = {"clusters": clusters, "pca_dimensions": int(z.shape[1]), "pca_seconds": t_km - t,
                 "kmeans_seconds": time.perf_counter() - t_km, "kmeans": how, "kmeans_iterations": iters}
        order = car.car_order(scores, labels, k, max(0, k - clusters), 1)
    elif method == "qdit":
        t_nn = time.perf_counter()
        stats = {}
        g = qdit.coverage_graph(emb, qdit.OPTIONS["neighbours"], stats=stats)
        extra = {"neighbours_seconds": time.perf_counter() - t_nn, **stats,
                 "products_share": stats["products"] / n / n}
        order = qdit.greedy(g, scores, k, qdit.OPTIONS["alpha"])[0]
    elif method in ("knn-blas", "knn-pruned"):
        stats: dict = {}
        order = knn.neighbours(emb, qdit.OPTIONS["neighbours"], prune=method == "knn-pruned", stats=stats)[0]
        extra = {**stats, "products_share": stats["products"] / n / n}
    elif method == "knn-faiss":
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        order = index.search(emb, qdit.OPTIONS["neighbours"] + 1)[1]
        extra = {"faiss_threads": faiss.omp_get_max_threads()}
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t
    return {"method": method, "n": n, "k": k, "seconds": seconds, "load_seconds": load,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_rss_mib_before_method": rss0 / 1024, "picked": int(len(order)), **extra}


def warm() -> None:
    """Compile every kernel the method cases use (numba caches them), outside the timings."""
    from mig_ray.compare import kcenter, knn, qdit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kcenter.kcenter_order(x, 50, prune=True)
    kcenter.kcenter_order(x, 50, prune=False)
    knn.neighbours(x, 3, block=512)
    qdit.greedy(qdit.coverage_graph(x, 3), np.ones(3000), 50, 0.7)


def cpu_pressure() -> str:
    """The kernel's CPU pressure line (share of time some task waited for a CPU): other sessions' load
    that the load average of this container may not show."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "unavailable"


def bench_methods(n: int, k: int, methods: list[str], out: Path, threads: int = 0) -> dict:
    """Each method in its own process (numba caches warm first); results are written to `out` after
    each method, so a long run leaves what it finished. threads > 0: BLAS, OpenMP and numba threads."""
    method_arrays(n)
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    subprocess.run([sys.executable, __file__, "--warm"], check=True, capture_output=True, env=env)
    res: dict = {"n": n, "k": k, "dimensions": 384, "threads": threads or "default", "methods": {}}
    for m in methods:
        load, psi = os.getloadavg(), cpu_pressure()
        proc = subprocess.run([sys.executable, __file__, "--one", m, "--one-n", str(n), "--one-k", str(k)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            res["methods"][m] = {"error": proc.stderr[-2000:]}
        else:
            res["methods"][m] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "loadavg_before": load,
                                 "loadavg_after": os.getloadavg(), "cpu_pressure_before": psi,
                                 "cpu_pressure_after": cpu_pressure()}
        print(json.dumps({m: res["methods"][m]}), flush=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
    if "knn-blas" in res["methods"] and "seconds" in res["methods"].get("knn-faiss", {}):
        ours, faiss = res["methods"]["knn-blas"]["seconds"], res["methods"]["knn-faiss"]["seconds"]
        res["ratio_knn_blas_to_faiss"] = ours / faiss
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=50_000)
    ap.add_argument("--n2", type=int, default=50_000)
    ap.add_argument("--k2", type=int, default=5_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-1m", action="store_true", help="only the 50K pool with embeddings")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-embeddings", action="store_true", help="skip the 50K `compare` command")
    ap.add_argument("--methods-n", type=int, nargs="*", default=[50_000, 1_000_000],
                    help="pool sizes of the per-method cases (K = 5K at 50K, else 50K)")
    ap.add_argument("--methods", default="longest,car,kcenter,qdit,knn-blas,knn-pruned,knn-faiss")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--one-k", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--car-kmeans", default="auto", help="car's kmeans option in the per-method cases")
    ap.add_argument("--threads", type=int, default=0, help="threads of the per-method cases (0: default)")
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warm:
        warm()
        return
    if args.one:
        print(json.dumps(one_method(args.one, args.one_n, args.one_k, 0, args.car_kmeans)))
        return
    DATA.mkdir(exist_ok=True)
    result: dict = header()
    cache = Path(tempfile.mkdtemp(prefix="bench-compare-label-embeddings-"))
    common = ["--valid-tags", str(SHARED / "valid_tags_tulu3.json"), "--no-progress",
              "--embedding-cache-dir", str(cache)]
    try:
        if not args.skip_1m:
            result["tulu3_1m"] = bench_1m(args, common)
            print(json.dumps(result["tulu3_1m"], indent=1), flush=True)
        if not args.skip_embeddings:
            result["embeddings_50k"] = bench_embeddings(args, common)
            print(json.dumps(result["embeddings_50k"], indent=1), flush=True)
        for n in args.methods_n:
            methods = args.methods.split(",")
            if n > 200_000:  # faiss and our kNN alone at 1M repeat qdit's neighbour search: skipped
                methods = [m for m in methods if not m.startswith("knn-")]
            result[f"methods_{n}"] = bench_methods(n, 5_000 if n <= 50_000 else 50_000, methods,
                                                   DATA / f"methods_{n}.partial.json", args.threads)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    write_result(result, "compare", args.out)


if __name__ == "__main__":
    main()
