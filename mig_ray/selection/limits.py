"""The selection's quotas and budget, from the options and the pool's groups and costs: group codes,
caps, the checks that name a bad constraint, and the per-group account for the summary and report."""

from __future__ import annotations

import sys

import numpy as np

from mig_ray.core.limits import Limits, RowLimits
from mig_ray.core.options import ConstraintOptions, floor_counts, quota_caps
from mig_ray.errors import PoolError


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def has_limits(opts: ConstraintOptions) -> bool:
    return opts.groups is not None or opts.budget_tokens is not None


def group_codes(groups: list[str] | None, n: int) -> tuple[list[str], np.ndarray]:
    """Sorted distinct group names and each row's code (one unnamed group without groups)."""
    if groups is None:
        return [""], np.zeros(n, dtype=np.int64)
    names, codes = np.unique(np.array(groups, dtype=object).astype(str), return_inverse=True)
    return [str(x) for x in names], codes.astype(np.int64)


def build_limits(opts: ConstraintOptions, names: list[str], n: int | None, cheapest: float,
                 sizes: np.ndarray | None = None) -> Limits:
    """Caps and floors of the groups `names` (in code order, `sizes` records each) and the budget;
    the checks a user sees: a quota or floor for a group no record has, a floor above its group's
    size (warnings: the floor phase takes the whole group), a floor above its cap, floors summing to
    more than n, a budget below the cheapest sample or no record with a group (errors)."""
    if opts.groups is not None and not names:
        raise PoolError(f"groups: no selectable record has the group field {opts.groups!r} (the records "
                        "without one are in the rejects file)")
    for field in ("quotas", "floors"):
        for g in getattr(opts, field):
            if g != "default" and g not in names:
                warn(f"{field}: no record has group {g!r} (groups: {', '.join(names[:10])}"
                     f"{', ...' if len(names) > 10 else ''})")
    caps = np.array(quota_caps(opts.quotas, names, n), dtype=np.int64) if opts.groups is not None else None
    floors = None
    if opts.floors:
        floors = np.array(floor_counts(opts.floors, names, n), dtype=np.int64)
        for j in np.flatnonzero(floors > caps):
            raise PoolError(f"floors: group {names[j]!r} has a floor of {floors[j]} above its cap of "
                            f"{caps[j]} (quotas)")
        if sizes is not None:
            for j in np.flatnonzero(floors > sizes):
                warn(f"floors: group {names[j]!r} has a floor of {floors[j]} but only {sizes[j]} selectable "
                     "records: all of them are taken first")
        want = np.minimum(floors, sizes) if sizes is not None else floors
        if n is not None and want.sum() > n:
            raise PoolError(f"floors: they add up to {int(want.sum())} samples, more than n ({n})")
    budget = np.inf if opts.budget_tokens is None else float(opts.budget_tokens)
    if budget < cheapest:
        raise PoolError(f"budget_tokens: {opts.budget_tokens:g} is smaller than the cheapest selectable "
                        f"sample ({cheapest:g} {'tokens' if opts.cost == 'tokens' else opts.cost})")
    return Limits(caps, budget, floors=floors)


def local_limits(opts: ConstraintOptions, groups: list[str] | None, costs: np.ndarray | None,
                 n: int | None, size: int) -> tuple[RowLimits, Limits, list[str]]:
    """Row limits, limits and group names of an in-process pool of `size` records."""
    names, codes = group_codes(groups, size)
    cost = np.zeros(len(codes)) if costs is None else costs
    limits = build_limits(opts, names, n, float(cost.min(initial=np.inf)) if costs is not None else 0.0,
                          np.bincount(codes, minlength=len(names)))
    return RowLimits(codes, cost), limits, names


def account(names: list[str], limits: Limits, pool_codes: np.ndarray, pool_costs: np.ndarray,
            chosen_codes: np.ndarray, chosen_costs: np.ndarray, decided: dict) -> dict:
    """Per group: pool and selected counts and costs against the cap; the budget and what was used."""
    g = len(names)
    caps = limits.cap_array() if limits.caps is not None else None
    out = {"groups": {}, "budget": None if not limits.budgeted else limits.budget,
           "used": float(np.sum(chosen_costs)), "greedy": decided}
    pool_n, sel_n = np.bincount(pool_codes, minlength=g), np.bincount(chosen_codes, minlength=g)
    pool_c = np.bincount(pool_codes, weights=pool_costs, minlength=g)
    sel_c = np.bincount(chosen_codes, weights=chosen_costs, minlength=g)
    for j, name in enumerate(names):
        cap = None if caps is None or caps[j] >= 2**62 else int(caps[j])
        floor = None if limits.floors is None or not limits.floors[j] else int(limits.floors[j])
        out["groups"][name] = {"pool": int(pool_n[j]), "selected": int(sel_n[j]), "cap": cap, "floor": floor,
                               "pool_cost": float(pool_c[j]), "selected_cost": float(sel_c[j])}
    return out
