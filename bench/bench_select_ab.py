"""A/B of bench_select's selection phase (N = 1M, L = 4,531, K = 50K) between two checkouts.

On a machine shared with other work, one run of each side says little: this runs the two sides
as alternating processes (A, B, A, B, ...), each timing the selection phase several times, and
reports every time, the minimum per side and the ratio of minimums, with the evaluations per round
and a digest of each order (threshold 0.9, as bench_select; and 0.6, where propagation is real).

    python bench/bench_select_ab.py --base /path/to/base/checkout --pairs 3 --out bench/results/X.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import header, write_result  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.9, 0.9, 0.9, 0.6, 0.6)


def child(root: Path) -> None:
    """One side's process: prints one JSON line with a timing per threshold run."""
    sys.path[:0] = [str(root), str(root / "bench")]
    import bench_select as b

    import mig_ray

    assert Path(mig_ray.__file__).resolve().is_relative_to(root.resolve()), mig_ray.__file__
    tags, indptr, codes, s = b.pool_arrays(1_000_000)
    emb = b.label_embeddings(tags)
    from mig_ray.core.greedy import lazy_greedy
    from mig_ray.core.objective import Phi

    runs = []
    for t in THRESHOLDS:
        res, vectors, secs, _ = b.selection_phase(tags, emb, indptr, codes, s, 50_000, t)
        c0 = time.process_time()  # the greedy again, in CPU seconds: less swayed by other processes
        again = lazy_greedy(vectors, 50_000, Phi())
        cpu = time.process_time() - c0
        assert again.order.tolist() == res.order.tolist()
        runs.append({"threshold": t, **secs, "greedy_cpu_seconds": cpu,
                     "evaluations_per_round": res.evaluations / 50_000,
                     "order_sha256": hashlib.sha256(res.order.tobytes()).hexdigest()[:16]})
    print(json.dumps(runs), flush=True)


def side(root: Path) -> list[dict]:
    env = os.environ | {"PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, __file__, "--child", str(root)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def git_head(root: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="checkout of the base commit (A)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if args.base is None:
        ap.error("--base is required")
    result = header()
    sides = {"A": args.base.resolve(), "B": HERE}
    runs: dict[str, list] = {"A": [], "B": []}
    for _ in range(args.pairs):
        for name, root in sides.items():
            runs[name].append(side(root))
            print(name, json.dumps(runs[name][-1]), flush=True)
    summary = {}
    for t in sorted(set(THRESHOLDS)):
        row = {}
        for name in sides:
            timed = [r for proc in runs[name] for r in proc if r["threshold"] == t]
            row[name] = {"min_greedy_seconds": min(r["greedy"] for r in timed),
                         "min_greedy_cpu_seconds": min(r.get("greedy_cpu_seconds", np.inf) for r in timed),
                         "min_total_seconds": min(r["total"] for r in timed),
                         "evaluations_per_round": sorted({r["evaluations_per_round"] for r in timed}),
                         "orders": sorted({r["order_sha256"] for r in timed})}
        row["ratio_min_greedy_B_over_A"] = row["B"]["min_greedy_seconds"] / row["A"]["min_greedy_seconds"]
        row["ratio_min_greedy_cpu_B_over_A"] = (row["B"]["min_greedy_cpu_seconds"]
                                                / row["A"]["min_greedy_cpu_seconds"])
        row["ratio_min_total_B_over_A"] = row["B"]["min_total_seconds"] / row["A"]["min_total_seconds"]
        summary[str(t)] = row
    result["ab"] = {"A": {"root": str(sides["A"]), "commit": git_head(sides["A"])},
                    "B": {"root": str(sides["B"]), "commit": git_head(sides["B"])},
                    "pairs": args.pairs, "note": "A and B alternate as separate processes; compare minimums",
                    "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    write_result(result, "select-ab", args.out)


if __name__ == "__main__":
    main()
