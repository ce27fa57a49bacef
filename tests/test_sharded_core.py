"""The certified sharded rounds, with in-process shards: same order as the reference (its own graph
from the embeddings, tests/reference.py) for any split."""

from __future__ import annotations

import numpy as np
import pytest
from pools import random_pool
from reference import reference_order
from test_greedy_equivalence import engine_vectors

from mig_ray.core.certified import Commit, sharded_greedy
from mig_ray.core.greedy import ShardGreedy, lazy_greedy
from mig_ray.core.objective import Phi


def split_shards(vectors, n_shards, phi, mode, rng):
    n = vectors.shape[0]
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n_shards - 1, max(0, n - 1)), replace=False)) \
        if n > 1 else np.array([], dtype=int)
    bounds = np.concatenate([[0], cuts, [n]]).astype(int)
    return [ShardGreedy(vectors[lo:hi], phi, mode, np.arange(lo, hi)) for lo, hi in zip(bounds, bounds[1:],
                                                                                        strict=False)]


def run_local(shards, n_labels, k, phi, mode, batch, resume=None, limits=None):
    """The certified rounds over in-process shards (the Ray engine's rounds without Ray)."""
    def propose(b):
        return [s.propose(b) for s in shards]

    def apply(c: Commit):
        for s in shards:
            s.apply(c.positions, c.ptr, c.idx, c.val, c.groups, c.costs)

    return sharded_greedy(propose, apply, n_labels, k, phi, mode, batch, resume=resume, limits=limits)


@pytest.mark.parametrize("n_shards", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", [0, 1, 4, 64])
def test_sharded_rounds_equal_naive(n_shards, batch):
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        vocab, emb, labels, scores = random_pool(200 + seed, n=int(rng.integers(5, 90)))
        mode = "exact" if seed % 2 else "gradient"
        family = "exp" if seed % 3 == 0 else "pow"
        prop = "source" if seed % 4 == 1 else "target"
        graph, vectors = engine_vectors(vocab, emb, labels, scores, 0.7, prop, 1.0, seed % 2 == 0)
        k = len(labels) if seed % 3 == 1 else int(rng.integers(1, len(labels) + 1))
        want, want_gains, nodes, _ = reference_order(labels, scores, vocab, emb, k, 0.7, prop, 1.0,
                                                     seed % 2 == 0, family, mode)
        assert graph.labels == nodes
        shards = split_shards(vectors, n_shards, Phi(family), mode, rng)
        got, log = run_local(shards, graph.n_labels, k, Phi(family), mode, batch)
        assert got.positions.tolist() == want.tolist(), f"seed {seed}"
        np.testing.assert_allclose(got.gains, want_gains, rtol=1e-6, atol=1e-15)
        if batch == 0:
            assert log.rounds == len(want)


def test_batches_cut_rounds_and_resume_gives_same_order():
    vocab, emb, labels, scores = random_pool(9, n=3000, n_labels=80)
    graph, vectors = engine_vectors(vocab, emb, labels, scores, 0.7, "target", 1.0, False)
    whole = lazy_greedy(vectors, 1000, Phi())
    rng = np.random.default_rng(0)
    got, log = run_local(split_shards(vectors, 3, Phi(), "gradient", rng), graph.n_labels, 1000, Phi(),
                         "gradient", 256)
    assert got.positions.tolist() == whole.order.tolist()
    assert log.rounds <= 1000 / 20, log.summary()
    # resume from a prefix of the commits on fresh shards: identical continuation
    prefix = Commit(got.positions[:333], got.gains[:333], got.ptr[:334], got.idx[:got.ptr[333]],
                    got.val[:got.ptr[333]])
    again, _ = run_local(split_shards(vectors, 2, Phi(), "gradient", rng), graph.n_labels, 1000, Phi(),
                         "gradient", 64, resume=prefix)
    assert again.positions.tolist() == whole.order.tolist()
