"""Pools built to tie: every engine applies the tie rule (window of 1e-9 below the round's best gain,
lowest input position wins) and so equals the windowed dense reference, built from the embeddings."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pytest
from reference import TIE, reference_order
from test_distributed import config, manifest_ids
from test_greedy_equivalence import engine_vectors
from test_sharded_core import run_local, split_shards

from mig_ray.core.greedy import ShardGreedy, lazy_greedy
from mig_ray.core.objective import Phi
from mig_ray.selection.run import run_select

KINDS = ["constant", "integer", "duplicated"]
MODES = list(itertools.product(["target", "source"], ["gradient", "exact"], ["pow", "exp"], [False, True]))


def tie_pool(seed: int, kind: str, n: int = 120, n_labels: int = 16):
    """Label sets of few sizes over a small vocabulary, scores that repeat: many gains equal in exact
    arithmetic (same label set and score; under `source` propagation, same label count and score)."""
    rng = np.random.default_rng(seed)
    vocab = [f"tag{j:02d}" for j in range(n_labels)]
    centres = rng.normal(size=(max(1, n_labels // 3), 6))
    emb = (centres[rng.integers(0, len(centres), n_labels)] + 0.35 * rng.normal(size=(n_labels, 6)))
    templates = [sorted({vocab[int(t)] for t in rng.integers(0, n_labels, rng.integers(1, 4))})
                 for _ in range(max(2, n // 10))]
    labels = []
    for _ in range(n):
        if rng.random() < 0.05:
            labels.append([])  # no label: gain 0, an exact tie with every other zero
        elif kind == "duplicated":
            labels.append(list(templates[int(rng.integers(0, len(templates)))]))
        else:
            picks = rng.choice(n_labels, int(rng.integers(1, 4)), replace=False)
            labels.append([vocab[int(t)] for t in picks])
    if kind == "integer":
        scores = rng.integers(1, 4, n).astype(float)
    elif kind == "duplicated":
        scores = rng.choice([1.0, 2.5], n)
    else:
        scores = np.full(n, 1.0)
    return vocab, emb.astype(np.float32), labels, scores


def tied_rounds(ehat: np.ndarray, order: np.ndarray, family: str, gain: str) -> int:
    """Rounds of the reference order in which more than one remaining sample was inside the window."""
    from reference import phi_grad, phi_value

    x, left, count = np.zeros(ehat.shape[1]), np.ones(len(ehat), dtype=bool), 0
    for i in order:
        if gain == "gradient":
            g = ehat @ phi_grad(family, x)
        else:
            g = (phi_value(family, x[None, :] + ehat) - phi_value(family, x)[None, :]).sum(axis=1)
        g = np.where(left, g, -np.inf)
        m = g.max()
        count += int(np.sum(g >= m - TIE * abs(m))) > 1
        left[i] = False
        x = x + ehat[i]
    return count


def both(seed, kind, propagation, gain, family, norm, k, threshold=0.7):
    vocab, emb, labels, scores = tie_pool(seed, kind)
    want, want_gains, nodes, ehat = reference_order(labels, scores, vocab, emb, k, threshold, propagation,
                                                    1.0, norm, family, gain)
    graph, vectors = engine_vectors(vocab, emb, labels, scores, threshold, propagation, 1.0, norm)
    assert graph.labels == nodes
    np.testing.assert_allclose(vectors.toarray(), ehat, rtol=1e-6, atol=1e-9)
    return want, want_gains, ehat, graph, vectors


@pytest.mark.parametrize(("propagation", "gain", "family", "norm"), MODES)
def test_lazy_greedy_applies_the_tie_rule(propagation, gain, family, norm):
    ties = 0
    for s, kind in enumerate(KINDS):
        k = 120 if s == 0 else 60
        want, want_gains, ehat, _, vectors = both(300 + 7 * s + len(propagation), kind, propagation, gain,
                                                   family, norm, k)
        got = lazy_greedy(vectors, k, Phi(family), gain)
        assert got.order.tolist() == want.tolist(), kind
        np.testing.assert_allclose(got.gains, want_gains, rtol=1e-6, atol=1e-12)
        ties += tied_rounds(ehat, want, family, gain)
    assert ties >= 10  # the pools do tie: the rule, not a strict maximum, decides these rounds


@pytest.mark.parametrize("n_shards", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", [0, 16])
def test_sharded_rounds_apply_the_tie_rule(n_shards, batch):
    rng = np.random.default_rng(n_shards * 10 + batch)
    for seed, (propagation, gain, family, norm) in enumerate(MODES[::3]):
        kind = KINDS[seed % 3]
        k = 120 if seed % 2 else 50
        want, want_gains, _, graph, vectors = both(500 + seed, kind, propagation, gain, family, norm, k)
        shards = split_shards(vectors, n_shards, Phi(family), gain, rng)
        got, log = run_local(shards, graph.n_labels, k, Phi(family), gain, batch)
        assert got.positions.tolist() == want.tolist(), (seed, kind)
        np.testing.assert_allclose(got.gains, want_gains, rtol=1e-6, atol=1e-12)
        if batch == 0:
            assert log.rounds == len(want)


@pytest.mark.parametrize("n_shards", [1, 3])
def test_identical_samples_select_in_input_order(n_shards):
    vocab = ["a", "b", "c"]
    emb = np.array([[1, 0, 0], [0.95, 0.3, 0], [0, 0, 1]], dtype=np.float32)
    labels = [["a", "b", "c"]] * 40
    scores = np.full(40, 2.0)
    for propagation, gain in itertools.product(["target", "source"], ["gradient", "exact"]):
        _, vectors = engine_vectors(vocab, emb, labels, scores, 0.9, propagation, 1.0, False)
        got = lazy_greedy(vectors, 40, Phi(), gain)
        assert got.order.tolist() == list(range(40))
        shards = split_shards(vectors, n_shards, Phi(), gain, np.random.default_rng(n_shards))
        sharded, _ = run_local(shards, 3, 40, Phi(), gain, 8)
        assert sharded.positions.tolist() == list(range(40))


@pytest.mark.parametrize(("shards", "batch", "kw"), [
    (3, 32, {"propagation": "source"}),
    (2, 0, {"propagation": "source", "phi": "exp", "norm": True}),
])
def test_ray_shards_apply_the_tie_rule(tmp_path, ray_address, shards, batch, kw):
    vocab, emb, labels, scores = tie_pool(40 + shards, "constant", n=90)
    keep = [i for i, ls in enumerate(labels) if ls]  # a record without labels is not selectable
    labels, scores = [labels[i] for i in keep], scores[keep]
    lines = [orjson.dumps({"id": f"r{i}", "tags": ls, "score": float(s)})
             for i, (ls, s) in enumerate(zip(labels, scores, strict=True))]
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"\n".join(lines) + b"\n")
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)
    k = 70
    want, _, _, _ = reference_order(labels, scores, vocab, emb, k, 0.7, kw.get("propagation", "target"), 1.0,
                                    kw.get("norm", False), kw.get("phi", "pow"), kw.get("gain", "gradient"))
    cfg = config(tmp_path, pool, tmp_path / "emb.npz", "ray", n=k, shards=shards, batch=batch,
                 ray_address=ray_address, **kw)
    run_select(cfg)
    assert manifest_ids(cfg) == [f"r{i}" for i in want]


def test_a_bound_inside_the_window_of_a_later_pick_ends_the_round():
    """Shard A = positions 0-2, shard B = 3-4, two proposals each: A keeps position 0 back, its bound
    1 - 1e-10 (relative gap 1e-10: a tie). After three certified picks B's position 4 (gain 1) is
    best among the candidates, but position 0 ties with it and comes first: the round must end there
    and the next round take position 0."""
    vocab, emb = ["p", "q", "r", "s"], np.eye(4, dtype=np.float32)
    labels = [["p"], ["q"], ["s"], ["r"], ["p"]]
    scores = np.array([1.0 - 1e-10, 5.0, 6.0, 10.0, 1.0])
    want, _, _, _ = reference_order(labels, scores, vocab, emb, 5, 0.9)
    assert want.tolist() == [3, 2, 1, 0, 4]
    graph, vectors = engine_vectors(vocab, emb, labels, scores, 0.9, "target", 1.0, False)
    assert lazy_greedy(vectors, 5, Phi()).order.tolist() == want.tolist()
    shards = [ShardGreedy(vectors[:3], Phi(), "gradient", np.arange(3)),
              ShardGreedy(vectors[3:], Phi(), "gradient", np.arange(3, 5))]
    got, log = run_local(shards, graph.n_labels, 5, Phi(), "gradient", 2)
    assert got.positions.tolist() == want.tolist()
    assert log.committed_per_round[0] == 3
