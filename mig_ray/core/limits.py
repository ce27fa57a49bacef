"""What a selection may take besides its count: per-group caps (a partition matroid) and a budget on
the summed cost of the samples (a knapsack).

The greedy under limits (greedy.py, certified.py, and the naive reference in the tests) picks, each
round, among the remaining samples that still fit: their group's count is below its cap and their
cost is within what is left of the budget. The key is the gain (`key="gain"`) or the gain divided
by the cost (`key="ratio"`: the cost-benefit greedy of CELF); the tie rule applies to the key.
Both limits only tighten as samples are committed, so a sample that does not fit now never will,
and a stale key is still an upper bound (the cost is fixed, the gain never increases): lazy greedy
stays exact. Under a budget both greedies are run and the one of higher information kept
(`better_of`): the cost-benefit greedy alone has no constant-factor guarantee, the better of the two
has (1 - 1/e)/2 (Leskovec et al. 2007, CELF).

The used budget is always summed one cost at a time in commit order (greedy.add_costs), so every
engine decides "fits" on the same float.

Floors (a minimum count per group) run as phases before the ordinary greedy (`Limits.phases`): for
each group with a floor, in group-code order (the codes are the sorted group names), the same greedy
with every other group capped at 0 and this group at its floor, its gains conditioned on everything
picked so far; then the ordinary greedy under the real caps with all of that committed. Floor picks
count against the caps and the budget like any other. Each phase is a plain constrained selection,
so an engine gets floors by running the phases one after the other from the committed state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

NO_CAP = np.iinfo(np.int64).max
LimitKey = Literal["gain", "ratio"]
Result = TypeVar("Result")


@dataclass(frozen=True)
class Limits:
    """Caps per group code (None: no caps; one group), a budget on the summed cost, the key."""

    caps: np.ndarray | None = None
    budget: float = np.inf
    key: LimitKey = "gain"
    floors: np.ndarray | None = None  # per group code: the count its floor phase picks (0: none)

    def __post_init__(self) -> None:
        if self.caps is not None:
            caps = np.asarray(self.caps, dtype=np.int64)
            if caps.ndim != 1 or caps.size == 0 or caps.min() < 0:
                raise ValueError("caps must be a non-empty list of counts >= 0")
            object.__setattr__(self, "caps", caps)
        if self.floors is not None:
            floors = np.asarray(self.floors, dtype=np.int64)
            if self.caps is None or floors.shape != self.caps.shape or floors.min(initial=0) < 0:
                raise ValueError("floors need caps: one count >= 0 per group")
            if np.any(floors > self.caps):
                raise ValueError("a floor above its group's cap")
            object.__setattr__(self, "floors", floors if floors.any() else None)
        if not (self.budget > 0):
            raise ValueError(f"a budget must be > 0, got {self.budget}")
        if self.key not in ("gain", "ratio"):
            raise ValueError(f"key must be 'gain' or 'ratio', got {self.key!r}")

    @property
    def n_groups(self) -> int:
        return 1 if self.caps is None else len(self.caps)

    @property
    def budgeted(self) -> bool:
        return bool(np.isfinite(self.budget))

    def cap_array(self) -> np.ndarray:
        return np.array([NO_CAP], dtype=np.int64) if self.caps is None else self.caps.copy()

    def with_key(self, key: LimitKey) -> Limits:
        return Limits(self.caps, self.budget, key, self.floors)

    def phases(self) -> list[Limits]:
        """The limits of each phase, in order (see the module docstring): one floor phase per group
        with a floor (every other group capped at 0, this one at its floor), then the real caps.
        Without floors, one phase: these limits."""
        if self.floors is None:
            return [self]
        out = []
        for g in np.flatnonzero(self.floors):
            caps = np.zeros_like(self.caps)
            caps[g] = self.floors[g]
            out.append(Limits(caps, self.budget, self.key))
        return out + [Limits(self.caps, self.budget, self.key)]

    def floor_group(self, phase: Limits) -> int | None:
        """The group code a phase of `phases()` is the floor phase of (None: the ordinary one)."""
        if self.floors is None or phase.caps is None or np.array_equal(phase.caps, self.caps):
            return None
        return int(np.flatnonzero(phase.caps)[0]) if phase.caps.any() else None

    def check(self, rows: RowLimits) -> None:
        """Group codes inside the caps; costs finite, and > 0 where they divide or count."""
        if rows.groups.size and (rows.groups.min() < 0 or rows.groups.max() >= self.n_groups):
            raise ValueError(f"group codes must lie in [0, {self.n_groups})")
        if rows.costs.size and not np.all(np.isfinite(rows.costs)):
            raise ValueError("costs must be finite")
        if (self.budgeted or self.key == "ratio") and rows.costs.size and rows.costs.min() <= 0:
            raise ValueError("costs must be > 0 under a budget")


@dataclass
class RowLimits:
    """Each row's group code and cost (input order)."""

    groups: np.ndarray
    costs: np.ndarray

    def __post_init__(self) -> None:
        self.groups = np.asarray(self.groups, dtype=np.int64)
        self.costs = np.asarray(self.costs, dtype=np.float64)
        if self.groups.shape != self.costs.shape or self.groups.ndim != 1:
            raise ValueError("groups and costs must be 1-d and of one length")

    @staticmethod
    def none(n: int) -> RowLimits:
        """Every row in group 0 at cost 0: no limit applies."""
        return RowLimits(np.zeros(n, dtype=np.int64), np.zeros(n))

    @staticmethod
    def of(n: int, groups: np.ndarray | None = None, costs: np.ndarray | None = None) -> RowLimits:
        return RowLimits(np.zeros(n, dtype=np.int64) if groups is None else groups,
                         np.zeros(n) if costs is None else costs)

    def take(self, rows: np.ndarray) -> RowLimits:
        return RowLimits(self.groups[rows], self.costs[rows])


@dataclass
class Usage:
    """What the committed samples took: the count per group and the summed cost."""

    counts: np.ndarray
    used: float = 0.0

    @staticmethod
    def empty(limits: Limits) -> Usage:
        return Usage(np.zeros(limits.n_groups, dtype=np.int64), 0.0)


def take_in_order(order: np.ndarray, rows: RowLimits, limits: Limits, k: int,
                  usage: Usage | None = None) -> tuple[np.ndarray, Usage, bool]:
    """Walk a ranked order and take each sample whose group is below its cap and whose cost fits what
    is left of the budget, until k are taken: how `compare` puts any method's ranking under the
    selection's quotas and budget (floors first: each floor group's samples in the order's order,
    up to its floor, then the walk over everything). Returns the positions taken, in order, what
    they used (the cost summed one at a time in the order taken, as the greedy sums it), and
    whether some floor phase ended below its floor (a longer order could then change the result)."""
    order = np.asarray(order, dtype=np.int64)
    usage = usage or Usage.empty(limits)
    counts, used = usage.counts.copy(), usage.used
    taken: list[int] = []
    seen: set[int] = set()
    short = False
    for phase in limits.phases():
        caps = phase.cap_array()
        g_floor = limits.floor_group(phase)
        walk = order if g_floor is None else order[rows.groups[order] == g_floor]
        for i in walk.tolist():
            if len(taken) >= k:
                break
            g, c = int(rows.groups[i]), float(rows.costs[i])
            if i in seen or counts[g] >= caps[g] or not used + c <= limits.budget:
                continue
            taken.append(i)
            seen.add(i)
            counts[g] += 1
            used += c
        if g_floor is not None and counts[g_floor] < caps[g_floor]:
            short = True
    return np.array(taken, dtype=np.int64), Usage(counts, used), short


def any_fits(rows: RowLimits, limits: Limits, usage: Usage, left: np.ndarray) -> bool:
    """Does any row where `left` is True still fit (group below its cap, cost within the budget)?"""
    caps = limits.cap_array()
    return bool(np.any(left & (usage.counts[rows.groups] < caps[rows.groups])
                       & (usage.used + rows.costs <= limits.budget)))


def better_of(information_by_key: dict[str, float]) -> LimitKey:
    """The greedy to keep: cost-benefit ("ratio") unless the plain gain greedy has strictly higher
    information (every engine and the reference apply this same rule)."""
    return "gain" if information_by_key["gain"] > information_by_key["ratio"] else "ratio"


def best_under_budget(run: Callable[[Limits], Result], information: Callable[[Result], float],
                      limits: Limits, total_cost: float,
                      run_both: Callable[[list[Limits]], list[Result]] | None = None) -> tuple[Result, dict]:
    """Run an engine under `limits`: without a budget, or with one that cannot bind (at least the
    total cost of the pool), the plain gain greedy alone; otherwise the cost-benefit and the plain
    gain greedy, keeping the one of higher information (`better_of`). `run_both` runs the two
    greedies' limits (default: `run` on each in turn; in process: side by side in two threads, they
    share nothing). Returns the result kept and what was decided (for the summary)."""
    if not limits.budgeted or limits.budget >= total_cost:
        why = "no budget" if not limits.budgeted else "budget >= total cost of the pool: not binding"
        return run(limits.with_key("gain")), {"greedy": "gain", "why": why}
    keys = ("ratio", "gain")
    both = [limits.with_key(key) for key in keys]
    results = dict(zip(keys, run_both(both) if run_both is not None else [run(lim) for lim in both],
                       strict=True))
    info = {key: information(r) for key, r in results.items()}
    kept = better_of(info)
    return results[kept], {"greedy": "cost_benefit" if kept == "ratio" else "gain",
                           "why": "higher information of the two greedies under the budget",
                           "information": {"cost_benefit": info["ratio"], "gain": info["gain"]}}
