"""Floors (the best `min` samples of a group first) keep the equivalence contract: the in-process
lazy greedy and the certified sharded rounds (1, 2, 3 shards, each phase on shards built for it and
resumed from the commits before) equal the naive reference of tests/reference.py, which runs the
floor phases and then the ordinary constrained greedy by full rescans."""

from __future__ import annotations

import numpy as np
import pytest
from reference import naive_budgeted, naive_limited_greedy
from test_limits import MODES, limited_case, mass, vectors_of
from test_sharded_core import run_local, split_shards

from mig_ray.core.certified import by_phases
from mig_ray.core.greedy import ShardGreedy, lazy_greedy, limited_greedy
from mig_ray.core.limits import Limits, RowLimits, best_under_budget, take_in_order
from mig_ray.core.objective import Phi, information


def floored_case(seed: int, integer_costs: bool):
    """limited_case plus a floor for some groups: 0 up to the cap (some above the group's size)."""
    case = limited_case(seed, integer_costs)
    rng, groups, caps = case[0], case[5], case[6]
    sizes = np.bincount(groups, minlength=len(caps))
    floors = np.array([rng.integers(0, min(c, s + 2) + 1) if rng.random() < 0.6 else 0
                       for c, s in zip(caps, sizes, strict=True)])
    floors = np.minimum(floors, caps)
    return case, floors


def sharded_phases(vectors, n_labels, k, phi, mode, batch, n_shards, rows, limits, rng):
    base = split_shards(vectors, n_shards, phi, mode, rng)
    cuts = [(s.positions[0], s.positions[-1] + 1) for s in base]

    def phase(p: Limits, prior, last: bool):
        shards = [ShardGreedy(vectors[lo:hi], phi, mode, np.arange(lo, hi), rows.take(np.arange(lo, hi)), p)
                  for lo, hi in cuts]
        return run_local(shards, n_labels, k, phi, mode, batch, resume=prior, limits=p)

    return by_phases(limits, phase)[0]


@pytest.mark.parametrize(("propagation", "gain"), MODES)
def test_floors_equal_the_naive_reference_in_every_engine(propagation, gain):
    floored = 0
    for seed in range(10):
        case, floors = floored_case(3000 + 19 * seed + len(propagation) + len(gain), seed % 2 == 0)
        rng, _, _, labels, _, groups, caps, costs = case
        graph, vectors = vectors_of(case, propagation)
        ehat = vectors.toarray()
        n = len(labels)
        k = n if seed % 3 == 0 else int(rng.integers(max(1, int(np.minimum(floors, np.bincount(
            groups, minlength=len(caps))).sum())), n + 1))
        budget = np.inf if seed % 4 == 0 else float(rng.uniform(costs.min(), costs.sum()))
        phi = Phi("exp" if seed % 5 == 1 else "pow")
        rows = RowLimits(groups, costs)
        for key in ("gain", "ratio"):
            limits = Limits(caps, budget, key, floors)
            want, want_keys, _ = naive_limited_greedy(ehat, k, groups, caps, costs, budget, key, phi.family,
                                                      gain, floors=floors)
            plain, _, _ = naive_limited_greedy(ehat, k, groups, caps, costs, budget, key, phi.family, gain)
            floored += want.tolist() != plain.tolist()
            got = lazy_greedy(vectors, k, phi, gain, chunk=int(rng.integers(1, 6)), rows=rows, limits=limits)
            assert got.order.tolist() == want.tolist(), (seed, key, "lazy")
            np.testing.assert_allclose(got.gains, want_keys, rtol=1e-6, atol=1e-15)
            for n_shards in (1, 2, 3):
                batch = int(rng.choice([0, 1, 4, 64]))
                c = sharded_phases(vectors, graph.n_labels, k, phi, gain, batch, n_shards, rows, limits, rng)
                assert c.positions.tolist() == want.tolist(), (seed, key, n_shards, batch)
    assert floored >= 5  # the floors change the order in these cases


def test_floors_under_the_better_of_two_greedies():
    phi = Phi()
    for seed in range(8):
        case, floors = floored_case(7000 + seed, seed % 2 == 1)
        rng, _, _, labels, _, groups, caps, costs = case
        graph, vectors = vectors_of(case, "target")
        k = len(labels)
        budget = float(rng.uniform(costs.min(), costs.sum() * 0.6))
        want, _, which = naive_budgeted(vectors.toarray(), k, groups, caps, costs, budget, floors=floors)
        rows, limits = RowLimits(groups, costs), Limits(caps, budget, floors=floors)
        got, decided = limited_greedy(vectors, k, phi, "gradient", rows, limits)
        assert got.order.tolist() == want.tolist(), seed
        assert decided["greedy"] == {"ratio": "cost_benefit", "gain": "gain"}[which]
        n_labels = graph.n_labels

        def run(lim, vectors=vectors, k=k, rows=rows, rng=rng, n_labels=n_labels):
            return sharded_phases(vectors, n_labels, k, phi, "gradient", 4, 2, rows, lim, rng)

        c, _ = best_under_budget(run, lambda c, n_labels=n_labels: information(phi, mass(c, n_labels)),
                                 limits, float(np.sum(costs)))
        assert c.positions.tolist() == want.tolist(), seed


def test_a_floor_comes_first_in_its_group_and_counts_against_cap_and_budget():
    case, _ = floored_case(11, True)
    _, _, _, labels, _, groups, caps, costs = case
    _, vectors = vectors_of(case, "target")
    n_groups = len(caps)
    caps = np.full(n_groups, len(labels))
    floors = np.zeros(n_groups, dtype=np.int64)
    last = int(groups.max())
    floors[last] = min(3, int(np.sum(groups == last)))
    got = lazy_greedy(vectors, len(labels), Phi(), rows=RowLimits(groups, costs),
                      limits=Limits(caps, np.inf, floors=floors))
    assert np.all(groups[got.order[:floors[last]]] == last)
    caps[last] = floors[last]  # the floor fills the cap: nothing more of the group afterwards
    got = lazy_greedy(vectors, len(labels), Phi(), rows=RowLimits(groups, costs),
                      limits=Limits(caps, np.inf, floors=floors))
    assert np.sum(groups[got.order] == last) == floors[last]
    with pytest.raises(ValueError, match="floor above"):
        Limits(caps, np.inf, floors=caps + 1)


def test_the_compare_filter_takes_floors_first_then_walks_the_order():
    groups = np.array([0, 1, 1, 0, 2, 1, 0, 2])
    costs = np.array([3.0, 1.0, 1.0, 2.0, 5.0, 1.0, 1.0, 1.0])
    order = np.array([4, 0, 3, 6, 1, 2, 5, 7])
    limits = Limits(np.array([2, 9, 9]), 9.0, floors=np.array([0, 2, 0]))
    taken, usage, short = take_in_order(order, RowLimits(groups, costs), limits, 6)
    # floor phase: group 1's first two in the order (1, 2); then the walk: 4 (cost 5, used 7),
    # 0 does not fit (3 > 2 left), 3 fits (9), then nothing fits the budget
    assert taken.tolist() == [1, 2, 4, 3] and usage.used == 9.0 and not short
