"""Label graph benchmark (issue 2: "100K labels must work"): LabelGraph.build at 4,531 / 20K / 100K
labels, peak memory, against the dense reference (the full L x L similarity matrix, then threshold)
where that fits in memory.

Each size runs in a fresh child process so that its peak RSS is its own. Embeddings are 384-d
(MiniLM's width): the 4,531 real Tulu3 tags embedded by the bundled model, and for 20K and 100K
synthetic clusters whose within-cluster cosines spread around 0.9, so the paper's threshold keeps
edges. Each size builds at T = 0.9 and with --target-degree 5, then the propagation matrix.

    python bench/bench_graph.py            # writes bench/results/graph-<date>.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import header, write_result  # noqa: E402

DIM = 384
DENSE_MAX_LABELS = 20_000  # 20K x 20K float32 is 1.5 GiB; 100K would be 37 GiB on a 24 GiB machine


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters of mean size 4; noise scales 0.2..0.6 put cosines around 0.9."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 4), DIM)).astype(np.float32)
    noise = rng.uniform(0.2, 0.6, size=(n, 1)).astype(np.float32)
    e = centres[rng.integers(0, len(centres), n)] + noise * rng.normal(size=(n, DIM)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def embeddings(n: int) -> tuple[list[str], np.ndarray]:
    if n == 4531:
        from bench_select import label_embeddings
        from tulu3_shaped import valid_tags

        tags = valid_tags()
        return tags, label_embeddings(tags)
    return [f"label {i:07d}" for i in range(n)], clustered(n)


def dense_reference(unit: np.ndarray, threshold: float):
    """The whole L x L product at once, thresholded: what the chunked build avoids holding."""
    import scipy.sparse as sp

    s = unit @ unit.T
    keep = s >= threshold
    np.fill_diagonal(keep, True)
    return sp.csr_matrix(np.where(keep, s, 0.0).astype(np.float64))


def child(n: int) -> dict:
    """One size in this process: build, target degree, propagation, dense reference if it fits."""
    from mig_ray.core.graph import LabelGraph

    labels, emb = embeddings(n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict = {"labels": n, "dim": DIM, "embeddings_mb": emb.nbytes / 2**20,
                 "rss_mb_after_embeddings": rss_before}
    t0 = time.perf_counter()
    g = LabelGraph.build(labels, emb, threshold=0.9)
    out["build_seconds_t0.9"] = time.perf_counter() - t0
    out["stats_t0.9"] = vars(g.stats())
    t0 = time.perf_counter()
    p = g.propagation("target", 1.0)
    out["propagation_seconds_t0.9"] = time.perf_counter() - t0
    out["p_nnz_t0.9"] = int(p.nnz)
    t0 = time.perf_counter()
    gd = LabelGraph.build(labels, emb, target_degree=5.0)
    out["build_seconds_target_degree_5"] = time.perf_counter() - t0
    out["stats_target_degree_5"] = vars(gd.stats())
    out["peak_rss_mb_chunked"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if n <= DENSE_MAX_LABELS:
        t0 = time.perf_counter()
        w = dense_reference(g.embeddings, 0.9)
        out["dense_seconds_t0.9"] = time.perf_counter() - t0
        out["dense_same_edges"] = bool(((w != 0) != (g.W != 0)).nnz == 0)
        out["dense_max_abs_diff"] = float(abs(w - g.W).max()) if w.nnz else 0.0
        out["speed_ratio_dense_over_chunked"] = out["dense_seconds_t0.9"] / out["build_seconds_t0.9"]
        out["peak_rss_mb_with_dense"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        out["dense"] = f"not run: the L x L float32 matrix alone is {4 * n * n / 2**30:.0f} GiB"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4531, 20_000, 100_000])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    result: dict = {**header(), "sizes": []}
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {n} failed:\n{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        result["sizes"].append(row)
    write_result(result, "graph", args.out)


if __name__ == "__main__":
    main()
