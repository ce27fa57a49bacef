"""The engine's selection equals the naive dense float64 greedy, order and all: end to end from the
label embeddings, the reference building its own graph (tests/reference.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pools import random_pool
from reference import naive_greedy, phi_grad, reference_order

from mig_ray.core.graph import LabelGraph
from mig_ray.core.greedy import LazyGreedy, lazy_greedy
from mig_ray.core.objective import Phi, gains, label_mass
from mig_ray.core.vectors import propagate, sample_matrix

MODES = list(itertools.product(["target", "source"], ["gradient", "exact"], ["pow", "exp"], [False, True]))


def engine_vectors(vocab, emb, labels, scores, threshold, propagation, prop_weight, norm):
    used = sorted({lab for ls in labels for lab in ls})
    index = {lab: vocab.index(lab) for lab in used}
    graph = LabelGraph.build(used, emb[[index[u] for u in used]], threshold=threshold)
    node = graph.index()
    codes = np.array([node[lab] for ls in labels for lab in ls], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum([len(ls) for ls in labels])])
    e = sample_matrix(indptr, codes, scores, graph.n_labels, norm)
    return graph, propagate(e, graph.propagation(propagation, prop_weight))


@pytest.mark.parametrize(("propagation", "gain", "family", "norm"), MODES)
def test_lazy_greedy_matches_naive(propagation, gain, family, norm):
    for seed in range(12):
        vocab, emb, labels, scores = random_pool(seed * 31 + len(propagation))
        rng = np.random.default_rng(seed)
        threshold = float(rng.choice([0.5, 0.8, 0.95]))
        prop_weight = float(rng.choice([0.0, 0.5, 1.0]))
        phi = Phi(family, a=1e-6, b=float(rng.choice([0.5, 0.8])), alpha=float(rng.choice([0.1, 1.0])))
        graph, vectors = engine_vectors(vocab, emb, labels, scores, threshold, propagation, prop_weight, norm)
        n = len(labels)
        k = n if seed % 3 == 0 else int(rng.integers(1, n + 1))
        want, want_gains, nodes, ehat = reference_order(labels, scores, vocab, emb, k, threshold,
                                                        propagation, prop_weight, norm, family, gain,
                                                        phi.a, phi.b, phi.alpha)
        assert graph.labels == nodes
        # float32 cosines summed in another order: the vectors agree to float32 precision
        np.testing.assert_allclose(vectors.toarray(), ehat, rtol=1e-6, atol=1e-12)
        got = lazy_greedy(vectors, k, phi, gain)
        assert got.order.tolist() == want.tolist(), f"seed {seed}"
        np.testing.assert_allclose(got.gains, want_gains, rtol=1e-6, atol=1e-15)


def test_ties_go_to_lowest_position():
    # Five identical samples and two empty ones: naive greedy takes them in input order.
    vocab, emb = ["a", "b"], np.eye(2, dtype=np.float32)
    labels = [["a"], [], ["a"], ["a"], [], ["a"], ["a"]]
    scores = np.ones(len(labels))
    _, vectors = engine_vectors(vocab, emb, labels, scores, 0.9, "target", 1.0, False)
    got = lazy_greedy(vectors, len(labels), Phi())
    assert got.order.tolist() == [0, 2, 3, 5, 6, 1, 4]
    assert got.gains[-1] == 0.0 and got.gains[-2] == 0.0


def test_ties_between_rows_whose_first_gains_differ():
    # Row 1 starts above row 0, but once row 2 saturates label c (exp underflows to exactly 0)
    # both gain exactly 1.0: the tie goes to input position 0, not to the earlier rank.
    import scipy.sparse as sp

    dense = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1000.0]])
    phi = Phi("exp", alpha=1.0)
    want, _ = naive_greedy(dense, 3, family="exp")
    got = lazy_greedy(sp.csr_matrix(dense), 3, phi)
    assert want.tolist() == [2, 0, 1]
    assert got.order.tolist() == want.tolist()
    assert got.gains[1] == got.gains[2] == 1.0


def test_chunked_steps_equal_one_run():
    vocab, emb, labels, scores = random_pool(7, n=300, n_labels=40)
    _, vectors = engine_vectors(vocab, emb, labels, scores, 0.8, "target", 1.0, False)
    whole = lazy_greedy(vectors, 300, Phi())
    state = LazyGreedy(vectors, Phi())
    while state.step(17):
        pass
    assert state.result().order.tolist() == whole.order.tolist()
    # the mass after K picks is the sum of the picked vectors, and gains match the vectorised formula
    np.testing.assert_allclose(state.x, label_mass(vectors, whole.order), rtol=1e-12)
    x = label_mass(vectors, whole.order[:10])
    g = gains(Phi(), "gradient", x, vectors)
    assert whole.gains[10] == pytest.approx(g[whole.order[10]], rel=1e-12)


def test_larger_pool_with_many_reevaluations():
    vocab, emb, labels, scores = random_pool(11, n=1500, n_labels=60)
    _, vectors = engine_vectors(vocab, emb, labels, scores, 0.6, "target", 1.0, False)
    want, _, _, ehat = reference_order(labels, scores, vocab, emb, 400, 0.6)
    got = lazy_greedy(vectors, 400, Phi())
    assert got.order.tolist() == want.tolist()
    # Counted on the reference's gains: in round r every remaining sample whose gain in round r-1
    # beat round r's best holds a stale bound above it and must be re-evaluated before the pick;
    # a full rescan evaluates every remaining sample every round.
    x, left, prev, must, rescan = np.zeros(ehat.shape[1]), np.ones(len(ehat), dtype=bool), None, 0, 0
    for i in want:
        g = ehat @ phi_grad("pow", x)
        if prev is not None:
            must += int(np.sum(left & (prev > g[left].max())))
            rescan += int(left.sum())
        prev, left[i], x = g, False, x + ehat[i]
    assert must > 1000  # the pool does force re-evaluations, more than two per round
    assert must <= got.evaluations < rescan / 20


def test_empty_and_degenerate_pools():
    import scipy.sparse as sp

    empty = lazy_greedy(sp.csr_matrix((0, 3)), 5, Phi())
    assert empty.order.size == 0
    no_labels = lazy_greedy(sp.csr_matrix((4, 0)), 3, Phi())
    assert no_labels.order.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="non-negative"):
        lazy_greedy(sp.csr_matrix(np.array([[1.0, -1.0]])), 1, Phi())
