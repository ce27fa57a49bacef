"""LabelGraph against the reference's own dense graph (tests/reference.py, built from the raw
embeddings), blockwise paths, the edge rule near the threshold, propagation normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from reference import EDGE_ULPS, dense_graph, reference_graph, unit_rows

import mig_ray.core.graph as graph_mod
from mig_ray.core.graph import LabelGraph, threshold_for_degree


def random_embeddings(seed: int, n: int, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 4), d))
    return (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def assert_w_matches_reference(g: LabelGraph, labels: list[str], emb: np.ndarray, t: float) -> None:
    """W against the reference graph built from the raw embeddings: same sorted nodes, same edges
    (pairs near the threshold included; only pairs within EDGE_ULPS float32 ulps of T, where two
    float32 sums may round either way, are free), same values, the diagonal present."""
    nodes, ref = reference_graph([labels], labels, emb, t)
    assert g.labels == nodes
    unit = unit_rows(np.asarray(emb)[[labels.index(n) for n in nodes]])
    s32 = unit @ unit.T
    t32 = np.float32(t)
    free = np.abs(s32 - t32) <= EDGE_ULPS * np.spacing(t32)
    np.fill_diagonal(free, False)
    got = g.W.toarray()
    np.testing.assert_array_equal((got != 0)[~free], (ref != 0)[~free])
    np.testing.assert_allclose(got, np.where(got != 0, ref, 0.0), atol=1e-6)
    assert np.all(np.diag(got) != 0)
    np.testing.assert_allclose(np.diag(got), np.diag(ref), atol=1e-6)


@pytest.mark.parametrize("t", [0.3, 0.8, 0.95])
def test_w_is_thresholded_cosine_and_nodes_are_sorted(t):
    emb = random_embeddings(1, 60)
    labels = [f"label {i:03d}" for i in range(60)][::-1]  # given in reverse: nodes must come out sorted
    g = LabelGraph.build(labels, emb, threshold=t)
    assert g.labels == sorted(labels)
    assert_w_matches_reference(g, labels, emb, t)
    np.testing.assert_array_equal(g.W.toarray(), g.W.toarray().T)


@pytest.mark.parametrize("n", [150, 700])
@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_products_give_the_same_graph(monkeypatch, n, chunk):
    emb = random_embeddings(2, n)
    labels = [f"t{i}" for i in range(n)]
    whole = LabelGraph.build(labels, emb, threshold=0.7)
    whole_t = threshold_for_degree(whole.embeddings, 4.0)
    monkeypatch.setattr(graph_mod, "CHUNK_ROWS", chunk)
    chunked = LabelGraph.build(labels, emb, threshold=0.7)
    for g in (whole, chunked):
        assert_w_matches_reference(g, labels, emb, 0.7)
        assert (g.W != g.W.T).nnz == 0  # each pair computed once and mirrored: exactly symmetric
    np.testing.assert_allclose(chunked.W.toarray(), whole.W.toarray(), atol=1e-6)
    # The threshold for mean degree 4 is the (4n/2)-th largest pair cosine of a dense Gram matrix.
    unit = unit_rows(emb)
    pairs = np.sort((unit @ unit.T)[np.triu_indices(n, 1)])[::-1]
    want = float(pairs[2 * n - 1])
    assert whole_t == pytest.approx(want, abs=1e-6)
    assert threshold_for_degree(chunked.embeddings, 4.0) == pytest.approx(want, abs=1e-6)


def test_pairs_at_the_threshold_follow_the_float32_rule():
    """The rule written in tests/reference.py: the float32 cosine decides, compared with T rounded
    to float32. Pairs with the first label have exact float32 cosines (one non-zero product), placed
    on T itself, one float32 ulp either side, and 1e-6 and 1e-5 either side."""
    base = np.float32(0.8)
    steps = [0, 1, -1, 2, -2, 17, -17, 168, -168]  # float32 ulps at 0.8: 1 ulp = 6e-8, 168 ulps = 1e-5
    cos = [np.float32(base + k * np.spacing(base)) for k in steps]
    emb = np.array([[1.0, 0.0]] + [[c, np.sqrt(1.0 - np.float64(c) ** 2)] for c in cos], dtype=np.float32)
    labels = [f"l{i:02d}" for i in range(len(emb))]
    exact = unit_rows(emb)[1:, 0]  # the float32 cosines of the pairs (first label, label j)
    assert exact[0] == unit_rows(emb)[0] @ unit_rows(emb)[1]
    for t in (float(exact[0]), float(exact[0]) + 1e-9):  # the second is above in float64, equal in float32
        assert np.float32(t) == exact[0]
        g = LabelGraph.build(labels, emb, threshold=t)
        edge = g.W.toarray()[0, 1:] != 0
        np.testing.assert_array_equal(edge, exact >= exact[0])
        assert edge[0]  # a cosine equal to the threshold is an edge (>=, not >)
        assert (exact < exact[0]).sum() == 4 and (exact > exact[0]).sum() == 4
        assert_w_matches_reference(g, labels, emb, t)
        ref_edges = dense_graph(emb, t)[0, 1:] != 0
        np.testing.assert_array_equal(ref_edges, edge)


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


@pytest.mark.parametrize("degree", [25.0, 29.0, 1e300, float("inf")])
def test_a_degree_only_negative_cosines_reach_gives_threshold_0(degree):
    """30 random labels in 8 dimensions have negative cosines: a mean degree that would need them
    (up to every pair, or an infinite one) gives threshold 0 and a graph with no negative weight,
    which the information measure needs (a negative edge once ended in an internal error)."""
    emb = np.random.default_rng(3).normal(size=(30, 8))
    unit = unit_rows(emb)
    assert (unit @ unit.T).min() < -0.3
    assert threshold_for_degree(unit, degree) == 0.0
    g = LabelGraph.build([f"l{i:02d}" for i in range(30)], emb, target_degree=degree)
    assert g.threshold == 0.0 and g.W.data.min() >= 0
    assert g.W.nnz == np.count_nonzero(dense_graph(emb, 0.0))  # the labels' order is theirs: l00..l29
