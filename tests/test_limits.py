"""Quotas and a token budget keep the equivalence contract: every engine (lazy in process, the
certified sharded rounds with 1, 2 or 3 shards) equals the naive constrained greedy of
tests/reference.py, which rescans every remaining sample each round and applies the same rule.

The reference takes the engine's propagated vectors as a dense float64 matrix: that the vectors
equal the reference's own graph and propagation is test_greedy_equivalence's check; here the same
rows let the choice between the cost-benefit and the plain greedy (higher E) be compared exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pools import random_pool
from reference import naive_budgeted, naive_greedy, naive_limited_greedy
from test_greedy_equivalence import engine_vectors
from test_sharded_core import run_local, split_shards

from mig_ray.core.certified import Commit
from mig_ray.core.greedy import ShardGreedy, lazy_greedy
from mig_ray.core.limits import Limits, RowLimits, best_under_budget
from mig_ray.core.objective import Phi, information

MODES = list(itertools.product(["target", "source"], ["gradient", "exact"]))


def limited_case(seed: int, integer_costs: bool):
    """A random pool with 2..7 groups, caps from 0 to past the group's size, and positive costs
    (integers 1..4 with many ties, or uniform floats)."""
    rng = np.random.default_rng(seed)
    vocab, emb, labels, scores = random_pool(seed, n=int(rng.integers(8, 80)))
    n = len(labels)
    n_groups = int(rng.integers(2, 8))
    groups = rng.integers(0, n_groups, n)
    sizes = np.bincount(groups, minlength=n_groups)
    caps = np.array([rng.integers(0, s + 2) if rng.random() < 0.8 else s + 5 for s in sizes])
    costs = rng.integers(1, 5, n).astype(float) if integer_costs else rng.uniform(0.1, 10.0, n)
    return rng, vocab, emb, labels, scores, groups, caps, costs


def sharded(vectors, n_labels, k, phi, mode, batch, n_shards, rows, limits, rng):
    base = split_shards(vectors, n_shards, phi, mode, rng)
    shards = [ShardGreedy(vectors[s.positions[0]:s.positions[-1] + 1], phi, mode, s.positions,
                          rows.take(s.positions), limits) for s in base]
    return run_local(shards, n_labels, k, phi, mode, batch, limits=limits)


def vectors_of(seed_pool, propagation):
    _, vocab, emb, labels, scores, *_ = seed_pool
    graph, vectors = engine_vectors(vocab, emb, labels, scores, 0.7, propagation, 1.0, False)
    return graph, vectors


@pytest.mark.parametrize(("propagation", "gain"), MODES)
@pytest.mark.parametrize("integer_costs", [False, True])
def test_quotas_and_budget_equal_the_naive_constrained_greedy(propagation, gain, integer_costs):
    binding = 0
    for seed in range(10):
        case = limited_case(1000 * integer_costs + 17 * seed + len(propagation) + len(gain), integer_costs)
        rng, _, _, labels, _, groups, caps, costs = case
        graph, vectors = vectors_of(case, propagation)
        ehat = vectors.toarray()
        n = len(labels)
        k = n if seed % 3 == 0 else int(rng.integers(1, n + 1))
        budget = np.inf if seed % 4 == 0 else float(rng.uniform(costs.min(), costs.sum()))
        family = "exp" if seed % 5 == 1 else "pow"
        phi = Phi(family)
        rows = RowLimits(groups, costs)
        for key in ("gain", "ratio"):
            limits = Limits(caps, budget, key)
            want, want_keys, _ = naive_limited_greedy(ehat, k, groups, caps, costs, budget, key, family, gain)
            binding += len(want) < k
            got = lazy_greedy(vectors, k, phi, gain, chunk=int(rng.integers(1, 6)), rows=rows, limits=limits)
            assert got.order.tolist() == want.tolist(), (seed, key, "lazy")
            np.testing.assert_allclose(got.gains, want_keys, rtol=1e-6, atol=1e-15)
            for n_shards in (1, 2, 3):
                batch = int(rng.choice([0, 1, 4, 64]))
                c, _ = sharded(vectors, graph.n_labels, k, phi, gain, batch, n_shards, rows, limits, rng)
                assert c.positions.tolist() == want.tolist(), (seed, key, n_shards, batch)
                np.testing.assert_allclose(c.gains, want_keys, rtol=1e-6, atol=1e-15)
    assert binding >= 5  # the limits do bind: fewer picks than k in these cases


def mass(c: Commit, n_labels: int) -> np.ndarray:
    x = np.zeros(n_labels)
    for i in range(len(c.positions)):
        lo, hi = c.ptr[i], c.ptr[i + 1]
        x[c.idx[lo:hi]] += c.val[lo:hi]
    return x


def budget_case(seed: int, propagation: str, gain: str) -> str:
    case = limited_case(5000 + 13 * seed + len(propagation) + len(gain), seed % 2 == 0)
    rng, _, _, labels, _, groups, caps, costs = case
    graph, vectors = vectors_of(case, propagation)
    k = len(labels)
    budget = float(rng.uniform(costs.min(), costs.sum() * 0.6))
    phi = Phi()
    want, _, which = naive_budgeted(vectors.toarray(), k, groups, caps, costs, budget, gain=gain)
    rows, limits = RowLimits(groups, costs), Limits(caps, budget)
    got, decided = best_under_budget(lambda lim: lazy_greedy(vectors, k, phi, gain, rows=rows, limits=lim),
                                     lambda r: information(phi, r.x), limits, float(np.sum(costs)))
    assert got.order.tolist() == want.tolist(), seed
    assert decided["greedy"] == {"ratio": "cost_benefit", "gain": "gain"}[which]
    for n_shards in (1, 2, 3):
        c, _ = best_under_budget(
            lambda lim, n_shards=n_shards: sharded(vectors, graph.n_labels, k, phi, gain, 8, n_shards, rows,
                                                   lim, rng)[0],
            lambda c: information(phi, mass(c, graph.n_labels)), limits, float(np.sum(costs)))
        assert c.positions.tolist() == want.tolist(), (seed, n_shards)
    return which


@pytest.mark.parametrize(("propagation", "gain"), MODES)
def test_the_better_of_two_greedies_under_a_budget_equals_the_reference(propagation, gain):
    kept = {budget_case(seed, propagation, gain) for seed in range(12)}
    assert kept == {"ratio", "gain"}  # the pools exercise both outcomes of the comparison


def test_a_group_capped_at_zero_is_never_picked_and_a_loose_budget_is_no_budget():
    case = limited_case(77, True)
    _, _, _, labels, _, groups, _, costs = case
    graph, vectors = vectors_of(case, "target")
    n, phi = len(labels), Phi()
    caps = np.full(groups.max() + 1, n)
    caps[groups[0]] = 0
    got = lazy_greedy(vectors, n, phi, rows=RowLimits(groups, costs), limits=Limits(caps))
    assert not np.any(groups[got.order] == groups[0])
    assert len(got.order) == int(np.sum(groups != groups[0]))
    plain, _ = naive_greedy(vectors.toarray(), n)
    loose = Limits(None, float(np.sum(costs)))
    kept, decided = best_under_budget(
        lambda lim: lazy_greedy(vectors, n, phi, rows=RowLimits.of(n, costs=costs), limits=lim),
        lambda r: information(phi, r.x), loose, float(np.sum(costs)))
    assert kept.order.tolist() == plain.tolist() and decided["greedy"] == "gain"
