"""The driver of a sharded selection on Ray.

The driver reads nothing but what it must: shard actors read their own block of the pool and
report labels, counts and id hashes; the driver builds the one global label graph, puts P in the
object store once and then runs the certified rounds of mig_ray.core.certified against the actors.
A shard actor that dies is restarted by Ray and rebuilt from its block and the committed history;
the committed order is checkpointed so that a re-run of a killed driver resumes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mig_ray import metrics
from mig_ray.core.certified import Commit, RoundLog, by_phases, sharded_greedy
from mig_ray.core.graph import LabelGraph
from mig_ray.core.greedy import add_rows
from mig_ray.core.limits import Limits, best_under_budget
from mig_ray.core.objective import information
from mig_ray.core.stats import pool_stats
from mig_ray.errors import PoolError
from mig_ray.pools.annotated import Block, load_valid_tags, pool_format, split_blocks
from mig_ray.runtime.placement import cpu_shortfall, joins_a_cluster
from mig_ray.runtime.session import ray_up
from mig_ray.selection.checkpoint import Checkpoint, fingerprint
from mig_ray.selection.config import SelectConfig
from mig_ray.selection.limits import account, build_limits, has_limits, warn

LOCAL_SHARDS_PER_CORE = 8  # a local Ray runs one process per shard actor: beyond this, a cluster


@dataclass
class ShardPlan:
    block: Block
    drop_rows: np.ndarray
    offset: int = 0
    size: int = 0


class Shards:
    """The shard actors and what is needed to rebuild any of them after a restart.

    `level` is how far the actors have got: "created" (constructor only), "loaded" (block read,
    duplicates dropped) or "built" (vectors and heap, commits in `history` applied). A call that
    finds its actor dead, unreachable or restarted without state restores the actor to `level`
    and asks again, so a shard may fail in any phase of the selection.
    """

    ATTEMPTS = 5

    def __init__(self, actors: list, plans: list[ShardPlan]) -> None:
        self.actors, self.plans = actors, plans
        self.history: list[Commit] = []
        self.restore_args: tuple = ()
        self.level = "created"
        self.restarts = 0

    def call(self, method: str, *args: Any, replayed_by_restore: bool = False,
             retry: tuple[str, tuple] | None = None) -> list:
        """Call `method` with the same arguments on every actor in parallel."""
        return self.call_each(method, [args] * len(self.actors), replayed_by_restore, retry)

    def call_each(self, method: str, args: list[tuple], replayed_by_restore: bool = False,
                  retry: tuple[str, tuple] | None = None) -> list:
        """Call `method` on every actor in parallel, actor i with args[i]. A failed actor is restored
        and asked again; with `replayed_by_restore` (build) the restore already did the call's work,
        and its return value stands for the call's; with `retry` = (method, args) the restore did
        part of it (propose_after: the commit) and `retry` is what is left to ask."""
        import ray

        refs = [getattr(a, method).remote(*x) for a, x in zip(self.actors, args, strict=True)]
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except Exception as e:
                if not _shard_failure(e):
                    raise
                restored = self.restore(i)
                if replayed_by_restore:
                    out.append(restored)
                elif retry is not None:
                    out.append(self.call_one(i, retry[0], *retry[1]))
                else:
                    out.append(self.call_one(i, method, *args[i]))
        return out

    def call_one(self, i: int, method: str, *args: Any) -> Any:
        """Call `method` on actor i, restoring it (a few times at most) if it fails."""
        import ray

        for attempt in range(self.ATTEMPTS):
            try:
                return ray.get(getattr(self.actors[i], method).remote(*args))
            except Exception as e:
                if not _shard_failure(e) or attempt == self.ATTEMPTS - 1:
                    raise
                self.restore(i)
        raise AssertionError("unreachable")

    def restore(self, i: int) -> Any:
        """Bring actor i back to `level` (Ray restarts the process; this rebuilds its state)."""
        import ray

        self.restarts += 1
        plan = self.plans[i]
        if self.level == "built":
            nodes_ref, p_ref, phi, mode, norm, names, limits = self.restore_args
            history = ray.put(Commit.concat(self.history))
            method, args = "restore", (plan.block.first_line, plan.drop_rows, nodes_ref, p_ref, plan.offset,
                                       phi, mode, norm, names, limits, history)
        elif self.level == "loaded":
            method, args = "reload", (plan.block.first_line, plan.drop_rows)
        else:
            method, args = "count_lines", ()  # nothing to rebuild; wait until the actor answers
        # an actor whose node died is restarted only once Ray declares the node dead (its health
        # checks must fail first: tens of seconds with Ray's defaults), then placed where it fits
        deadline = time.monotonic() + 180
        while True:
            try:
                return ray.get(getattr(self.actors[i], method).remote(*args))
            except Exception as e:  # the actor may still be restarting
                if not _shard_failure(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _shard_failure(e: BaseException) -> bool:
    """Is `e` an actor that died, is unreachable, or came back from a restart without its state?"""
    from ray.exceptions import RayActorError, RayTaskError

    from mig_ray.selection.shard import ShardLost

    if isinstance(e, RayActorError):
        return True
    return isinstance(e, RayTaskError) and isinstance(e.as_instanceof_cause(), ShardLost)


def _duplicates(loads: list[dict], shards: Shards, where: str) -> list[list[tuple[int, str]]]:
    """Records whose id already appeared in an earlier block: (local row, reason) per shard."""
    sizes = [len(x["hashes"]) for x in loads]
    if sum(sizes) == 0:
        return [[] for _ in loads]
    hashes = np.concatenate([x["hashes"] for x in loads])
    shard_of = np.repeat(np.arange(len(loads)), sizes)
    row_of = np.concatenate([np.arange(s) for s in sizes])
    order = np.argsort(hashes, kind="stable")
    h = hashes[order]
    later = np.flatnonzero(h[1:] == h[:-1]) + 1
    drops: list[list[tuple[int, str]]] = [[] for _ in loads]
    if later.size == 0:
        return drops
    run_start = np.maximum.accumulate(np.where(np.concatenate([[True], h[1:] != h[:-1]]),
                                               np.arange(len(h)), 0))
    for j in later:
        first, dup = order[run_start[j]], order[j]
        s1, r1, s2, r2 = shard_of[first], row_of[first], shard_of[dup], row_of[dup]
        if s1 == s2:
            continue  # a hash collision inside one block: the block's reader already compared ids
        id1 = shards.call_one(s1, "ids", np.array([r1]))[0]
        id2 = shards.call_one(s2, "ids", np.array([r2]))[0]
        if id1 == id2:
            drops[s2].append((int(r2), f"duplicate id: {id1!r} (first at {where} {loads[s1]['lines'][r1]})"))
    return drops


def select_on_ray(cfg: SelectConfig, stage: Callable, embed: Callable[[list[str]], LabelGraph],
                  phi, checkpoint_path: Path, checkpoint_seconds: float = 5.0, batch: int = 4096,
                  on_round: Callable | None = None) -> dict[str, Any]:
    """Run the sharded selection; returns everything run_select needs to write outputs.

    `on_round(round, actors)` is a test hook: round 0 once the blocks are loaded, then after each
    committed round."""
    import ray

    from mig_ray.selection.shard import ShardActor

    cores = os.cpu_count() or 1
    local = not joins_a_cluster(cfg.ray_address)
    most = max(LOCAL_SHARDS_PER_CORE * cores, 16)
    if local and not ray.is_initialized() and cfg.shards > most:
        raise PoolError(f"--shards {cfg.shards}: a local Ray would start {cfg.shards} actor processes on "
                        f"this machine's {cores} cores; use at most {most} here, or a cluster "
                        "(--ray-address)")
    started = ray_up(cfg.ray_address, max(cores, cfg.shards + 1))
    actors = []
    try:
        with stage("read"):
            valid = load_valid_tags(cfg.valid_tags) if cfg.valid_tags else None
            spec = cfg.field_spec()
            blocks = split_blocks(cfg.pool, cfg.shards)
            if short := cpu_shortfall(len(blocks), cfg.shard_placement.num_cpus):
                msg = (f"--shards {cfg.shards}: {len(blocks)} shard actors of "
                       f"{cfg.shard_placement.num_cpus:g} CPUs need {short[0]:g} CPUs at once; this Ray "
                       f"has {short[1]:g}")
                if local:
                    raise PoolError(f"{msg}: use fewer shards")
                warn(f"{msg}; the shard actors wait until the cluster grows")
            remote = ray.remote(max_restarts=4, max_task_retries=0,
                                **cfg.shard_placement.actor_options())(ShardActor)
            actors = [remote.remote(str(cfg.pool.resolve()), b, spec, valid, cfg.strict) for b in blocks]
            plans = [ShardPlan(b, np.zeros(0, dtype=np.int64)) for b in blocks]
            shards = Shards(actors, plans)
            if pool_format(cfg.pool) == "jsonl":
                lines = shards.call("count_lines")
                firsts = 1 + np.concatenate([[0], np.cumsum(lines)[:-1]])
            else:
                firsts = [b.first_line for b in blocks]
            for plan, first in zip(plans, firsts, strict=True):
                plan.block = Block(plan.block.start, plan.block.end, int(first))
            try:
                loads = shards.call_each("load", [(p.block.first_line, not cfg.ids_unique) for p in plans])
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if isinstance(cause, PoolError):
                    raise PoolError(str(cause).split("\n")[-1].strip() or str(cause)) from None
                raise
            shards.level = "loaded"
            if on_round is not None:
                on_round(0, shards.actors)
            where = "line" if pool_format(cfg.pool) == "jsonl" else "row"
            drops = _duplicates(loads, shards, where)
            rejects = [row for x in loads for row in x["rejects"]]
            fixes = []
            for i, d in enumerate(drops):
                if d:
                    rows = np.array([r for r, _ in d], dtype=np.int64)
                    plans[i].drop_rows = rows
                    rows_out, fix = shards.call_one(i, "drop", rows, [reason for _, reason in d])
                    rejects += rows_out
                    fixes.append(fix)
            rejects.sort(key=lambda r: r[where])
            counts = _sum_counts([x["counts"] for x in loads] + fixes, sum(len(d) for d in drops))
            for plan, x, d in zip(plans, loads, drops, strict=True):
                plan.size = x["n"] - len(d)
            offsets = np.concatenate([[0], np.cumsum([p.size for p in plans])[:-1]])
            for plan, off in zip(plans, offsets, strict=True):
                plan.offset = int(off)
            labels = sorted(set().union(*shards.call("labels")))
        with stage("embed_labels"):
            graph = embed(labels)
        with stage("graph"):
            p = graph.propagation(cfg.propagation, cfg.prop_weight)
            nodes_ref, p_ref = ray.put(graph.labels), ray.put(p)
        names, limits, total_cost = [""], Limits(), 0.0
        if has_limits(cfg):
            infos = shards.call("limit_info")
            sizes: dict[str, int] = {}
            for info in infos:
                for name, count in info[0].items():
                    sizes[name] = sizes.get(name, 0) + count
            names = sorted(sizes) or [""]
            total_cost = sum(i[2] for i in infos)
            limits = build_limits(cfg, names, cfg.n, min((i[1] for i in infos), default=0.0),
                                  np.array([sizes.get(name, 0) for name in names]))
        built: list = [None]

        def build(lim: Limits) -> int:
            """Shards built for one phase's limits (a floor phase drops every other group's rows)."""
            shards.restore_args = (nodes_ref, p_ref, phi, cfg.gain, cfg.norm, names, lim)
            shards.level = "built"
            shards.history = []
            built[0] = lim
            return sum(shards.call_each("build", [(nodes_ref, p_ref, plan.offset, phi, cfg.gain, cfg.norm,
                                                   names, lim) for plan in plans], replayed_by_restore=True))

        binding = limits.budgeted and limits.budget < total_cost
        with stage("vectors"):
            nnz = build(limits.with_key("ratio" if binding else "gain").phases()[0])
        k = cfg.k(counts["selectable"])
        with stage("select"):
            def run(lim: Limits) -> tuple:
                ckpt = Checkpoint(checkpoint_path, fingerprint(cfg) + lim.key, checkpoint_seconds)
                resumed, seconds = [0], [0.0]  # the rounds' seconds, without the rebuilds between phases

                def phase(p: Limits, prior: Commit | None, last: bool) -> tuple[Commit, RoundLog]:
                    if not _same_limits(built[0], p):
                        build(p)
                    t0 = time.perf_counter()
                    committed, log, resumed[0] = _rounds(cfg, shards, p, phi, graph.n_labels, k, batch,
                                                         on_round, ckpt, prior, last)
                    seconds[0] += time.perf_counter() - t0
                    return committed, log

                committed, log = by_phases(lim, phase)
                return committed, log, resumed[0], seconds[0], ckpt

            def info(out: tuple) -> float:
                x = np.zeros(graph.n_labels)
                add_rows(x, out[0].ptr, out[0].idx, out[0].val)
                return information(phi, x)

            (committed, log, resumed, select_seconds, ckpt), decided = best_under_budget(run, info, limits,
                                                                                         total_cost)
        x = np.zeros(graph.n_labels)
        add_rows(x, committed.ptr, committed.idx, committed.val)
        owner = np.searchsorted(offsets, committed.positions, side="right") - 1
        records: list = [None] * len(committed.positions)
        manifest: list = [None] * len(committed.positions)
        for i in range(len(actors)):
            mine = np.flatnonzero(owner == i)
            if mine.size == 0:
                continue
            pos = committed.positions[mine]
            recs = shards.call_one(i, "records", pos) if cfg.records else [None] * len(pos)
            for j, rec, desc in zip(mine, recs, shards.call_one(i, "describe", pos), strict=True):
                records[j], manifest[j] = rec, desc
        constraints = None
        if has_limits(cfg):
            pool_codes, pool_costs = (np.concatenate(a) for a in zip(*shards.call("kept_limits", names),
                                                                     strict=True))
            constraints = account(names, limits, pool_codes, pool_costs, committed.groups, committed.costs,
                                  decided)
        return {"graph": graph, "counts": counts, "rejects": rejects, "positions": committed.positions,
                "gains": committed.gains, "x": x, "records": records, "manifest": manifest, "nnz": nnz,
                "rounds": _rounds_summary(log, select_seconds, len(actors), shards.restarts,
                                          resumed,
                                          shards.call("peak_rss_mb"), nnz),
                "checkpoint": ckpt, "committed": committed, "pool_stats": pool_stats(shards.call),
                "constraints": constraints}
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _same_limits(a: Limits | None, b: Limits) -> bool:
    """Were the shards built for limits `a` fit to run `b` (same key, budget and caps)?"""
    return a is not None and a.key == b.key and a.budget == b.budget and (
        (a.caps is None and b.caps is None) or
        (a.caps is not None and b.caps is not None and np.array_equal(a.caps, b.caps)))


def _rounds(cfg: SelectConfig, shards: Shards, limits: Limits, phi, n_labels: int, k: int, batch: int,
            on_round: Callable | None, ckpt: Checkpoint, prior: Commit | None = None,
            last: bool = True) -> tuple[Commit, RoundLog, int]:
    """The certified rounds of one phase against the built shards, from `prior` (the commits of the
    phases before: floors). The last phase (the only one without floors) resumes from `ckpt` when it
    extends `prior` and saves to it; floor phases do neither (they are short and recomputed, and
    must not overwrite a checkpoint that holds more)."""
    import ray

    resume = ckpt.load() if last else None
    extends = prior is None or (resume is not None and np.array_equal(
        resume.positions[:len(prior.positions)], prior.positions))
    if resume is not None and (len(resume.positions) > k or not extends):
        resume = None
    resumed = 0 if resume is None else len(resume.positions)
    if resume is None:
        resume = prior
    if resume is not None:
        shards.history.append(resume)

    # A round's commit travels with the next round's request (propose_after): one wave of
    # actor calls per round instead of two. The last commit need not reach the shards.
    pending: list = [None]

    def apply(c: Commit) -> None:
        if c is not resume:
            shards.history.append(c)
        pending[0] = ray.put(c)

    def after_round(r: int, c: Commit) -> None:
        metrics.round_committed(len(c.positions))
        if last:
            ckpt.maybe_save(shards.history)
        if on_round is not None:
            on_round(r, shards.actors)

    def propose(b: int):
        ref, pending[0] = pending[0], None
        if ref is None:
            return shards.call("propose", b)
        return shards.call("propose_after", ref, b, retry=("propose", (b,)))

    committed, log = sharded_greedy(propose, apply, n_labels, k, phi, cfg.gain, batch,
                                    resume=resume, on_round=after_round, limits=limits)
    return committed, log, resumed


def _sum_counts(counts: list[dict], cross_duplicates: int) -> dict:
    total = {k: sum(c.get(k, 0) for c in counts) for k in counts[0]} if counts else {}
    total["rejected"] = total.get("rejected", 0) + cross_duplicates
    total["selectable"] = total.get("selectable", 0) - cross_duplicates
    return total


def _rounds_summary(log: RoundLog, seconds: float, shards: int, restarts: int, resumed: int,
                    rss_mb: list[float], nnz: int) -> dict:
    return {**log.summary(), "shards": shards, "select_seconds": seconds, "shard_restarts": restarts,
            "resumed_from_checkpoint": resumed, "shard_peak_rss_mb": [round(r, 1) for r in rss_mb],
            "vector_nnz": nnz}
