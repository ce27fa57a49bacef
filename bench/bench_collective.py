"""Per-round communication (issue 3, point 2): plain actor calls vs ray.util.collective (gloo).

One round of the sharded selection needs (a) an all-reduce of the argmax (best gain, ties to the
lowest global position) and (b) a broadcast of the committed sample's sparse vector (a few KB) so
every shard updates its label mass x. This measures one such round, with no selection work,
across 2 and 4 actors on local Ray:

- `actor_calls`: the driver asks every actor for its best (gain, position, payload) with
  `ray.get`, reduces, and sends the winner's payload to every actor with `ray.get` (what
  mig_ray.selection.engine does: two RPC waves per round);
- `collective_gloo`: the actors run the rounds among themselves (SPMD) with
  `ray.util.collective` on the GLOO backend (torch.distributed gloo in Ray 2.60): two
  `allreduce` (MAX of gain, then MIN of position among the maxima; the position says which rank
  owns it) and one `broadcast` of a fixed-size buffer from that rank.

    python bench/bench_collective.py        # writes bench/results/collective-<date>.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
import traceback
from pathlib import Path

import numpy as np

from mig_ray.runtime.session import ray_up

GROUP = "mig_bench"


class Peer:
    """A stand-in shard: random gains, a sparse payload of `nnz` labels, a dense x to update."""

    def __init__(self, rank: int, world: int, nnz: int, n_labels: int) -> None:
        self.rank, self.world, self.nnz = rank, world, nnz
        self.rng = np.random.default_rng(rank)
        self.x = np.zeros(n_labels)
        self.n_labels = n_labels

    def _best(self) -> tuple[float, int]:
        """Positions are owned by blocks, as in the engine: the top bits say which rank holds it."""
        return float(self.rng.random()), (self.rank << 40) | int(self.rng.integers(0, 1 << 40))

    def _payload(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(self.rng.choice(self.n_labels, self.nnz, replace=False)).astype(np.int64)
        return idx, self.rng.random(self.nnz)

    def propose(self) -> tuple[float, int, np.ndarray, np.ndarray]:
        """Actor-call round, first wave: best candidate with its vector (it may win)."""
        g, p = self._best()
        idx, val = self._payload()
        return g, p, idx, val

    def apply(self, idx: np.ndarray, val: np.ndarray) -> None:
        """Actor-call round, second wave: add the committed vector to x."""
        np.add.at(self.x, idx, val)

    def join(self, group: str) -> bool:
        from ray.util import collective

        collective.init_collective_group(self.world, self.rank, backend="gloo", group_name=group)
        return True

    def rounds(self, n: int, group: str) -> list[float]:
        """Collective rounds among the actors; returns seconds per round as this rank saw them."""
        from ray.util import collective

        buf = np.zeros(1 + 2 * self.nnz)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            g, p = self._best()
            best = np.array([g])
            collective.allreduce(best, group_name=group, op=collective.types.ReduceOp.MAX)
            pos = np.array([float(p) if g == best[0] else np.inf])
            collective.allreduce(pos, group_name=group, op=collective.types.ReduceOp.MIN)
            owner = int(pos[0]) >> 40
            if owner == self.rank:
                idx, val = self._payload()
                buf[0] = self.nnz
                buf[1:1 + self.nnz] = idx
                buf[1 + self.nnz:] = val
            collective.broadcast(buf, src_rank=owner, group_name=group)
            k = int(buf[0])
            np.add.at(self.x, buf[1:1 + k].astype(np.int64), buf[1 + self.nnz:1 + self.nnz + k])
            out.append(time.perf_counter() - t)
        return out


def stats(seconds: list[float]) -> dict:
    us = np.asarray(seconds) * 1e6
    return {"rounds": len(us), "median_us": float(np.median(us)), "mean_us": float(us.mean()),
            "p10_us": float(np.percentile(us, 10)), "p90_us": float(np.percentile(us, 90))}


def actor_calls(actors: list, n: int) -> list[float]:
    import ray

    out = []
    for _ in range(n):
        t = time.perf_counter()
        props = ray.get([a.propose.remote() for a in actors])
        g, p, idx, val = min(props, key=lambda q: (-q[0], q[1]))
        ray.get([a.apply.remote(idx, val) for a in actors])
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--nnz", type=int, default=256, help="payload labels (int64 + float64: 16 B each)")
    ap.add_argument("--n-labels", type=int, default=4531)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import ray
    import torch

    ray_up(None, num_cpus=8)
    from ray.util import collective

    result: dict = {
        "date": dt.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "ray": ray.__version__, "torch": torch.__version__, "gloo_available": collective.gloo_available(),
        "node_ip": ray.util.get_node_ip_address(),
        "payload_bytes_actor_calls": args.nnz * 16, "payload_bytes_collective": (1 + 2 * args.nnz) * 8,
        "rounds": args.rounds, "warmup": args.warmup,
        "note": "2-core machine shared with other developers working concurrently: timings are noisy. "
                "actor_calls is timed at the driver; collective_gloo per rank inside the actors "
                "(the driver is not involved in its rounds); 'slowest_rank' takes the max over ranks "
                "of each round.",
        "runs": [],
    }
    remote = ray.remote(num_cpus=0.25)(Peer)
    for world in args.actors:
        row: dict = {"actors": world}
        actors = [remote.remote(r, world, args.nnz, args.n_labels) for r in range(world)]
        try:
            actor_calls(actors, args.warmup)
            row["actor_calls"] = stats(actor_calls(actors, args.rounds))
        finally:
            for a in actors:
                ray.kill(a)
        actors = [remote.remote(r, world, args.nnz, args.n_labels) for r in range(world)]
        group = f"{GROUP}_{world}"
        try:
            ray.get([a.join.remote(group) for a in actors], timeout=120)
            ray.get([a.rounds.remote(args.warmup, group) for a in actors], timeout=300)
            per_rank = ray.get([a.rounds.remote(args.rounds, group) for a in actors], timeout=600)
            row["collective_gloo"] = stats(np.max(np.array(per_rank), axis=0).tolist())
            row["collective_gloo"]["rank0"] = stats(per_rank[0])
        except Exception as e:  # record exactly why gloo did not work here
            row["collective_gloo"] = {"error": f"{type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc(limit=5)}
        finally:
            for a in actors:
                ray.kill(a)
        if "median_us" in row["collective_gloo"]:
            row["faster"] = ("collective_gloo" if row["collective_gloo"]["median_us"]
                             < row["actor_calls"]["median_us"] else "actor_calls")
            row["speedup_collective"] = row["actor_calls"]["median_us"] / row["collective_gloo"]["median_us"]
        result["runs"].append(row)
        print(json.dumps(row, default=str), flush=True)
    out = args.out or Path(__file__).resolve().parent / "results" / f"collective-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    ray.shutdown()


if __name__ == "__main__":
    main()
