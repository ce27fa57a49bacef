"""LabelGraph against dense cosine computations, blockwise paths, propagation normalisation."""

from __future__ import annotations

import numpy as np
import pytest

import mig_ray.graph as graph_mod
from mig_ray.graph import LabelGraph, threshold_for_degree


def dense_w(unit: np.ndarray, t: float) -> np.ndarray:
    s = (unit.astype(np.float64) @ unit.T.astype(np.float64))
    w = np.where(s >= t, s, 0.0)
    np.fill_diagonal(w, np.diag(s))
    return w


def random_embeddings(seed: int, n: int, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 4), d))
    return (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def assert_w_matches_dense(g: LabelGraph, t: float) -> None:
    ref = dense_w(g.embeddings, t)
    got = g.W.toarray()
    s = g.embeddings.astype(np.float64) @ g.embeddings.T.astype(np.float64)
    clear = np.abs(s - t) > 1e-5  # away from the threshold float32 and float64 agree on the edge set
    np.testing.assert_array_equal(got[clear] != 0, ref[clear] != 0)
    np.testing.assert_allclose(got, np.where(got != 0, ref, 0.0), atol=1e-6)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)


@pytest.mark.parametrize("t", [0.3, 0.8, 0.95])
def test_w_is_thresholded_cosine_and_nodes_are_sorted(t):
    emb = random_embeddings(1, 60)
    labels = [f"label {i:03d}" for i in range(60)][::-1]  # given in reverse: nodes must come out sorted
    g = LabelGraph.build(labels, emb, threshold=t)
    assert g.labels == sorted(labels)
    assert_w_matches_dense(g, t)
    np.testing.assert_array_equal(g.W.toarray(), g.W.toarray().T)


@pytest.mark.parametrize("n", [150, 700])
@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_products_give_the_same_graph(monkeypatch, n, chunk):
    emb = random_embeddings(2, n)
    labels = [f"t{i}" for i in range(n)]
    whole = LabelGraph.build(labels, emb, threshold=0.7)
    monkeypatch.setattr(graph_mod, "CHUNK_ROWS", chunk)
    chunked = LabelGraph.build(labels, emb, threshold=0.7)
    for g in (whole, chunked):
        assert_w_matches_dense(g, 0.7)
        assert (g.W != g.W.T).nnz == 0  # each pair computed once and mirrored: exactly symmetric
    np.testing.assert_allclose(chunked.W.toarray(), whole.W.toarray(), atol=1e-6)
    assert threshold_for_degree(whole.embeddings, 4.0) == pytest.approx(
        graph_mod.threshold_for_degree(chunked.embeddings, 4.0), abs=1e-6)


@pytest.mark.parametrize("degree", [0.5, 3.0, 10.0])
def test_target_degree_gives_that_mean_degree(degree):
    emb = random_embeddings(3, 200, d=16)
    g = LabelGraph.build([f"t{i:03d}" for i in range(200)], emb, threshold=None, target_degree=degree)
    s = g.embeddings.astype(np.float64) @ g.embeddings.T.astype(np.float64)
    pairs = np.sort(s[np.triu_indices(200, 1)])[::-1]
    assert g.threshold == pytest.approx(pairs[int(round(degree * 100)) - 1], abs=1e-6)
    assert abs(g.stats().mean_degree - degree) <= 2 / 200 + 1e-9


@pytest.mark.parametrize("mode", ["target", "source"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_propagation_normalisation(mode, alpha):
    g = LabelGraph.build([f"t{i}" for i in range(40)], random_embeddings(4, 40), threshold=0.6)
    w = g.W.toarray()
    wp = np.diag(np.diag(w)) + alpha * (w - np.diag(np.diag(w)))
    p = g.propagation(mode, alpha).toarray()
    if mode == "target":
        np.testing.assert_allclose(p, wp / wp.sum(axis=0, keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(p.sum(axis=0), 1.0)
    else:
        np.testing.assert_allclose(p, wp / wp.sum(axis=1, keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
    if alpha == 0.0:
        np.testing.assert_allclose(p, np.eye(40), atol=1e-12)


def test_stats_save_load(tmp_path):
    emb = np.array([[1, 0], [0.99, 0.1], [0, 1]], dtype=np.float32)
    g = LabelGraph.build(["b", "a", "c"], emb, threshold=0.9)
    st = g.stats()
    assert (st.labels, st.edges, st.isolated) == (3, 1, 1)
    assert st.mean_degree == pytest.approx(2 / 3)
    g.save(tmp_path / "g.npz")
    h = LabelGraph.load(tmp_path / "g.npz")
    assert h.labels == ["a", "b", "c"] and h.threshold == g.threshold
    assert (h.W != g.W).nnz == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="distinct"):
        LabelGraph.build(["a", "a"], np.eye(2), threshold=0.5)
    with pytest.raises(ValueError, match="zeros"):
        LabelGraph.build(["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]), threshold=0.5)
    with pytest.raises(ValueError, match="propagation"):
        LabelGraph.build(["a"], np.ones((1, 2)), threshold=0.5).propagation("sideways")
    empty = LabelGraph.build([], np.zeros((0, 4)), threshold=0.5)
    assert empty.stats().labels == 0
