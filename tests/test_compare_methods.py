"""The paper's own baselines in `compare` (longest, car, qdit), each against an independent
implementation written here on random pools, the one method interface (a module and a registry line
is all a new method needs), and the manifests' greedy_key / gain columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compare import THRESHOLD, config, manifest_rows, ref_kcenter, write_pool

from mig_ray.compare import car, kcenter, methods, qdit
from mig_ray.compare.longest import longest_order
from mig_ray.compare.run import CompareOptions, run_compare


def unit32(x: np.ndarray) -> np.ndarray:
    """What the pool holds: float32 rows scaled to unit length."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(rng: np.random.Generator, n: int, dim: int = 8, centres: int = 6) -> np.ndarray:
    c = rng.normal(size=(centres, dim))
    return unit32(c[rng.integers(0, centres, n)] + 0.15 * rng.normal(size=(n, dim)))


# --- independent implementations ---------------------------------------------------------------

def ref_longest(convs: list[list[dict]], k: int) -> list[int]:
    size = [sum(len(m["content"]) for m in c if m["role"] == "assistant") for c in convs]
    return sorted(range(len(convs)), key=lambda i: (-size[i], i))[:k]


def ref_pca(x: np.ndarray, keep: float) -> np.ndarray:
    xc = np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(axis=0)
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    share = np.cumsum(sv ** 2) / np.sum(sv ** 2)
    m = int(np.argmax(share > keep)) + 1 if keep < 1 else len(sv)
    return xc @ vt[:m].T


def ref_lloyd(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Textbook Lloyd from the given centres until no label changes."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64).copy()
    labels = None
    for _ in range(1000):
        d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        new = d.argmin(axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            if (labels == j).any():
                c[j] = x[labels == j].mean(axis=0)
    return labels


def ref_car(scores, labels, k: int, n1: int, n2: int) -> list[int]:
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = ranked[:n1]
    seen: dict[int, int] = {}
    tops = []
    for i in ranked:  # every cluster's best n2, counted even when already among the n1
        seen[labels[i]] = seen.get(labels[i], 0) + 1
        if seen[labels[i]] <= n2 and i not in out:
            tops.append(i)
    out = out + tops
    out = out + [i for i in ranked if i not in out]
    return out[:k]


def ref_qdit(u: np.ndarray, scores, k: int, alpha: float) -> list[int]:
    """Naive greedy on the DENSE facility location: every candidate rescanned every round."""
    u = np.asarray(u, dtype=np.float64)
    sim = np.maximum(u @ u.T, 0.0)
    np.fill_diagonal(sim, 1.0)
    q = np.asarray(scores, dtype=np.float64) / max(scores)
    cur = np.zeros(len(u))
    out: list[int] = []
    for _ in range(min(k, len(u))):
        best, pick = -np.inf, -1
        for a in range(len(u)):
            if a in out:
                continue
            g = alpha * np.maximum(sim[:, a] - cur, 0.0).sum() + (1 - alpha) * q[a]
            if g > best:
                best, pick = g, a
        out.append(pick)
        cur = np.maximum(cur, sim[:, pick])
    return out


# --- the methods on their own --------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=0, max_size=60), st.integers(0, 70))
def test_longest_is_sort_by_length_then_position(lengths, k):
    convs = [[{"role": "user", "content": "q" * (n % 7)}, {"role": "assistant", "content": "a" * n}]
             for n in lengths]
    assert longest_order(np.array(lengths, dtype=np.int64), k).tolist() == ref_longest(convs, k)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(1, 9), st.integers(0, 90), st.integers(0, 90), st.integers(1, 3),
       st.integers(0, 2**31 - 1))
def test_car_order_matches_direct(n, n_clusters, k, n1, n2, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(1, 5, n).astype(float)  # coarse: ties everywhere
    labels = rng.integers(0, n_clusters, n)
    assert car.car_order(scores, labels, k, n1, n2).tolist() == ref_car(scores.tolist(), labels.tolist(), k,
                                                                        min(n1, n), n2)


@pytest.mark.parametrize("seed", [1, 5, 9])
@pytest.mark.parametrize("pca", [0.0, 0.9])
def test_car_kmeans_is_lloyd_from_the_same_centres(seed, pca):
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    u = blobs(rng, 150)
    z = ref_pca(u, pca) if pca else u.astype(np.float64)
    assert car.pca_reduce(u, pca).shape == z.shape
    init = kmeans_plusplus(z.astype(np.float32), 6, random_state=seed)[0]
    want = ref_lloyd(z, init)
    got = car.cluster_labels(car.pca_reduce(u, pca), 6, seed, "full", tol=0.0)
    # the same partition (cluster numbers are the initial centres' order in both)
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("rows", [7, 64, 65_536])
def test_car_pca_in_row_blocks_is_the_direct_pca(rows):
    rng = np.random.default_rng(rows)
    u = blobs(rng, 150, dim=10)
    want = ref_pca(u, 0.9)
    got = car.pca_reduce(u, 0.9, rows=rows)
    assert got.shape == want.shape
    # components are defined up to sign: the projected points' Gram matrix is not
    assert np.allclose(got.astype(np.float64) @ got.T.astype(np.float64), want @ want.T, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 6])
def test_car_kmeans_pp_draws_from_a_seeded_subsample(seed):
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    u = blobs(rng, 300)
    z = u.astype(np.float64)
    sub = np.sort(np.random.default_rng(seed).choice(300, 80, replace=False))
    want = ref_lloyd(z, kmeans_plusplus(z[sub].astype(np.float32), 6, random_state=seed)[0])
    got = car.cluster_labels(u, 6, seed, "full", tol=0.0, init_max=80)
    assert got.tolist() == want.tolist()
    # at init_max >= N every sample is drawn from, as before
    whole = ref_lloyd(z, kmeans_plusplus(u, 6, random_state=seed)[0])
    assert car.cluster_labels(u, 6, seed, "full", tol=0.0, init_max=300).tolist() == whole.tolist()


def test_car_default_rule_and_seeds():
    rng = np.random.default_rng(3)
    u = blobs(rng, 200)
    scores = rng.uniform(1, 10, 200)
    assert car.default_clusters(200) == 10 and car.default_clusters(1) == 1
    from mig_ray.compare.pool import ComparePool

    pool = ComparePool([str(i) for i in range(200)], scores, None, None, None, None, embeddings=u)
    a, b = car.select(pool, 40, seed=4), car.select(pool, 40, seed=4)
    assert a.tolist() == b.tolist()
    labels = car.cluster_labels(car.pca_reduce(u, 0.95), 10, 4)
    assert a.tolist() == ref_car(scores.tolist(), labels.tolist(), 40, 40 - 10, 1)
    mini = car.select(pool, 40, seed=4, kmeans="minibatch")
    assert mini.tolist() == car.select(pool, 40, seed=4, kmeans="minibatch").tolist()


@pytest.mark.parametrize("seed", [0, 2, 7, 11])
def test_qdit_with_all_neighbours_is_the_dense_greedy(seed):
    rng = np.random.default_rng(seed)
    n = 40 + seed
    u = unit32(rng.normal(size=(n, 6)))
    scores = rng.uniform(0.5, 8.0, n)
    alpha = [0.7, 0.3, 0.9, 0.5][seed % 4]
    got, gains = qdit.qdit_order(u, scores, 15, alpha, n_neighbours=n)
    assert got.tolist() == ref_qdit(u, scores, 15, alpha)
    assert np.all(np.diff(gains) <= 1e-12)  # submodular: the gains taken never grow


def test_qdit_neighbours_are_exact_and_sparsify():
    from mig_ray.compare.knn import neighbours

    rng = np.random.default_rng(4)
    u = unit32(rng.normal(size=(300, 12)))
    idx, sims = neighbours(u, 7, block=64)  # several blocks, both triangles
    full = u.astype(np.float64) @ u.astype(np.float64).T
    np.fill_diagonal(full, -np.inf)
    want = np.argsort(-full, axis=1, kind="stable")[:, :7]
    assert [sorted(r) for r in idx.tolist()] == [sorted(r) for r in want.tolist()]
    assert np.allclose(sims, np.take_along_axis(full, idx, axis=1), atol=1e-12)
    # sparsified: a different order from the dense one on the same pool, and still seeded-free
    scores = rng.uniform(1, 5, 300)
    a = qdit.qdit_order(u, scores, 30, 0.7, 3)[0]
    assert a.tolist() == qdit.qdit_order(u, scores, 30, 0.7, 3)[0].tolist()


def clustered(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    """Unit vectors in clusters of very different sizes (Zipf-like, many of one to three samples) plus
    lone points: the shape the groups must cope with (rare clusters, a cluster larger than a block)."""
    sizes = np.maximum(1, (n * 0.4 / np.arange(1, 200) ** 1.1).astype(int))
    sizes = sizes[np.cumsum(sizes) <= n * 0.9]
    c = rng.normal(size=(len(sizes), dim))
    pts = np.concatenate([c[i] + 0.25 * rng.normal(size=(s, dim)) for i, s in enumerate(sizes)])
    pts = np.concatenate([pts, rng.normal(size=(n - len(pts), dim))])
    return unit32(pts[rng.permutation(n)])


def ref_neighbours(u: np.ndarray, k: int) -> list[list[int]]:
    full = u.astype(np.float64) @ u.astype(np.float64).T
    np.fill_diagonal(full, -np.inf)
    return [sorted(r) for r in np.argsort(-full, axis=1, kind="stable")[:, :k].tolist()]


def test_groups_cover_every_sample_once_within_their_radius():
    from mig_ray.compare.balls import make_groups
    from mig_ray.compare.kcenter import farthest_first

    rng = np.random.default_rng(8)
    u = clustered(rng, 900)
    g = make_groups(u, farthest_first, seed=3, sample=150, max_pivots=60, rounds=3)
    assert sorted(g.perm.tolist()) == list(range(900)) and g.starts[0] == 0 and g.starts[-1] == 900
    for gi in range(len(g)):
        members = u[g.perm[g.starts[gi]:g.starts[gi + 1]]].astype(np.float64)
        assert len(members) > 0
        assert np.allclose(g.centres[gi], members.mean(axis=0))
        assert np.linalg.norm(members - g.centres[gi], axis=1).max() <= g.radius[gi]
        assert np.linalg.norm(members, axis=1).max() <= g.max_norm[gi]


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_pruned_neighbours_are_exact(seed):
    from mig_ray.compare.balls import make_groups
    from mig_ray.compare.kcenter import farthest_first
    from mig_ray.compare.knn import neighbours

    rng = np.random.default_rng(seed)
    u = clustered(rng, 1200)
    want = ref_neighbours(u, 6)
    for groups in (None, make_groups(u, farthest_first, seed, sample=200, max_pivots=80, rounds=3),
                   make_groups(u, farthest_first, seed, sample=100, max_pivots=4, rounds=1)):
        stats: dict = {}
        idx, sims = neighbours(u, 6, block=64, prune=True, groups=groups, stats=stats)
        assert stats["groups"] > 1
        assert [sorted(r) for r in idx.tolist()] == want
        assert np.allclose(sims, np.einsum("ij,ikj->ik", u.astype(np.float64), u[idx].astype(np.float64)),
                           atol=1e-12)
    assert [sorted(r) for r in neighbours(u, 6, block=64, prune=False)[0].tolist()] == want


@pytest.mark.parametrize("seed", [3, 4])
def test_kcenter_blocked_matches_direct(seed):
    rng = np.random.default_rng(seed)
    u = unit32(rng.normal(size=(120, 5)))
    for block in (1, 3, 256):
        assert kcenter.kcenter_order(u, 50, seed, block=block).tolist() == ref_kcenter(u, 50, seed)


@pytest.mark.parametrize("seed", [3, 9])
def test_kcenter_pruned_matches_direct_and_skips(seed):
    rng = np.random.default_rng(seed)
    u = clustered(rng, 700)
    u[rng.integers(0, 700, 40)] = u[rng.integers(0, 700, 40)]  # exact duplicates: ties
    want = ref_kcenter(u, 150, seed)
    for block in (1, 7, 256):
        plain, pruned = {}, {}
        assert kcenter.kcenter_order(u, 150, seed, block=block, prune=False, stats=plain).tolist() == want
        assert kcenter.kcenter_order(u, 150, seed, block=block, prune=True, stats=pruned).tolist() == want
        if block < 150:  # one update (the first centre's, all distances unknown) has nothing to skip
            assert pruned["groups"] > 1 and pruned["rows_multiplied"] < plain["rows_multiplied"]


# --- through `compare` ---------------------------------------------------------------------------

def varied_pool(tmp_path: Path, seed: int, n: int):
    """write_pool's records with conversations of varied lengths: two assistant turns, a user turn
    whose length does not follow the responses'; and unit sample embeddings without duplicates."""
    pool, lemb, vocab, lemb_arr, labels, scores, _ = write_pool(tmp_path, seed, n, 14)
    rng = np.random.default_rng(seed + 7)
    u = blobs(rng, n)
    convs = []
    lines = []
    for i, line in enumerate(pool.read_bytes().splitlines()):
        rec = orjson.loads(line)
        conv = [{"role": "user", "content": "u" * int(rng.integers(0, 400))},
                {"role": "assistant", "content": "a" * int(rng.integers(0, 60))},
                {"role": "user", "content": "more"},
                {"role": "assistant", "content": "b" * int(rng.integers(0, 60))}]
        rec["messages"] = conv
        rec["emb"] = u[i].tolist()
        convs.append(conv)
        lines.append(orjson.dumps(rec))
    pool.write_bytes(b"\n".join(lines) + b"\n")
    return pool, lemb, labels, scores, u, convs


def positions(path: Path) -> list[int]:
    return [int(r["id"][1:]) for r in manifest_rows(path)]


@pytest.mark.parametrize("seed", [2, 13])
def test_compare_runs_the_papers_baselines(tmp_path, seed):
    n, k = 90, 30
    pool, lemb, labels, scores, u, convs = varied_pool(tmp_path, seed, n)
    opts = CompareOptions(methods=("longest", "car", "qdit", "mig"), seed=seed, embeddings_field="emb",
                          method_options={"car": {"pca": 0, "clusters": 5, "kmeans": "full", "tol": 0.0},
                                          "qdit": {"neighbours": n, "alpha": 0.6}})
    res = run_compare(config(tmp_path, pool, lemb, k), tmp_path / "cmp", opts)
    got = {name: positions(Path(m["manifest"])) for name, m in res["methods"].items()}
    assert got["longest"] == ref_longest(convs, k)
    assert got["qdit"] == ref_qdit(unit32(u), scores, k, 0.6)
    from sklearn.cluster import kmeans_plusplus

    z = unit32(u)
    want_labels = ref_lloyd(z, kmeans_plusplus(z, 5, random_state=seed)[0])
    assert got["car"] == ref_car(scores.tolist(), want_labels.tolist(), k, k - 5, 1)
    again = run_compare(config(tmp_path, pool, lemb, k), tmp_path / "again", opts)
    assert {name: positions(Path(m["manifest"])) for name, m in again["methods"].items()} == got
    for name in ("longest", "car", "qdit"):
        m = res["methods"][name]
        assert m["paper"] == methods.METHODS[name].PAPER and m["summary"] == methods.METHODS[name].SUMMARY
        assert res["about"][name]["paper"] == m["paper"]
    assert res["methods"]["qdit"]["options"] == {"alpha": 0.6, "neighbours": n}
    assert res["methods"]["car"]["options"]["n2"] == 1


def test_compare_skips_embedding_methods_without_embeddings(tmp_path):
    pool, lemb, labels, scores, u, convs = varied_pool(tmp_path, 1, 50)
    res = run_compare(config(tmp_path, pool, lemb, 10), tmp_path / "cmp",
                      CompareOptions(methods=("car", "qdit", "longest")))
    assert set(res["skipped"]) == {"car", "qdit"} and list(res["methods"]) == ["longest"]
    assert set(res["about"]) == {"car", "qdit", "longest"}


def test_method_options_are_checked():
    with pytest.raises(ValueError, match="qdit: unknown option 'beta'"):
        methods.method_options({"qdit": {"beta": 1}})
    with pytest.raises(ValueError, match=r"qdit.neighbours: '2.5' is not a int"):
        methods.method_options({"qdit": {"neighbours": "2.5"}})
    with pytest.raises(ValueError, match=r"qdit.alpha must be in \[0, 1\]"):
        methods.method_options({"qdit": {"alpha": 1.5}})
    with pytest.raises(ValueError, match="unknown method 'best'"):
        methods.method_options({"best": {"x": 1}})
    assert methods.parse_method_options(["qdit.alpha=0.5", "car.n2 = 2"]) == {"qdit": {"alpha": "0.5"},
                                                                            "car": {"n2": "2"}}
    with pytest.raises(ValueError, match="is not NAME.KEY=VALUE"):
        methods.parse_method_options(["qdit=0.5"])
    assert methods.method_options({"qdit": {"alpha": "0.5"}})["qdit"]["alpha"] == 0.5


def test_a_new_method_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    """A module registered in METHODS (and nothing else) runs in compare, lands in compare.json with its
    paper and options, and gets a row (with its paper) in the report."""
    import types

    from mig_ray.report.build import write_report

    mod = types.ModuleType("reverse")
    mod.NAME, mod.PAPER, mod.SUMMARY = "reverse", "Nobody 2030, Backwards Is Best", "the last k positions"
    mod.NEEDS, mod.OPTIONS = frozenset(), {"skip": 0}
    mod.select = lambda pool, k, seed=0, skip=0: np.arange(len(pool))[::-1][skip:skip + k]
    monkeypatch.setitem(methods.METHODS, "reverse", mod)
    pool, lemb, labels, scores, u, convs = varied_pool(tmp_path, 3, 40)
    res = run_compare(config(tmp_path, pool, lemb, 10), tmp_path / "cmp",
                      CompareOptions(methods=("score", "reverse"), method_options={"reverse": {"skip": "2"}}))
    assert positions(Path(res["methods"]["reverse"]["manifest"])) == list(range(37, 27, -1))
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert data["methods"]["reverse"]["paper"] == "Nobody 2030, Backwards Is Best"
    assert data["methods"]["reverse"]["options"] == {"skip": 2}
    html = write_report(tmp_path / "cmp")["html"].read_text()
    assert '<tr data-method="reverse"><th>reverse' in html and "Nobody 2030, Backwards Is Best" in html


def test_manifest_columns_have_one_meaning(tmp_path):
    """greedy_key is what MIG's greedy ranks by, gain the increase of E(D): in select's manifest and in
    every compare manifest, for both gain modes."""
    from reference import dense_graph, phi_value, propagated

    from mig_ray.selection.run import run_select

    pool, lemb, vocab, lemb_arr, labels, scores, _ = write_pool(tmp_path, 23, 80, 12)
    nodes = sorted({t for ls in labels for t in ls})
    w = dense_graph(lemb_arr[[vocab.index(t) for t in nodes]], THRESHOLD)
    ehat = propagated(labels, scores, nodes, w)
    for mode in ("gradient", "exact"):
        cfg = config(tmp_path, pool, lemb, 20, gain=mode).model_copy(
            update={"out": tmp_path / mode / "sel" / "selected.jsonl"})
        summary = run_select(cfg)
        sel = manifest_rows(tmp_path / mode / "sel" / "selected.manifest.jsonl")
        res = run_compare(cfg, tmp_path / mode / "cmp", CompareOptions(methods=("mig", "score")))
        for rows in (sel, *(manifest_rows(Path(m["manifest"])) for m in res["methods"].values())):
            x = np.zeros(len(nodes))
            for r in rows:
                e = ehat[int(r["id"][1:])]
                want_gain = float(phi_value("pow", x + e).sum() - phi_value("pow", x).sum())
                grad = 0.8 * (x + 1e-6) ** (0.8 - 1.0)
                want_key = want_gain if mode == "exact" else float(grad @ e)
                assert r["gain"] == pytest.approx(want_gain, rel=1e-9, abs=1e-12)
                assert r["greedy_key"] == pytest.approx(want_key, rel=1e-9, abs=1e-12)
                x += e
        assert sum(r["gain"] for r in sel) == pytest.approx(summary["information"]["gain"], rel=1e-9)
        mig_rows = manifest_rows(Path(res["methods"]["mig"]["manifest"]))
        assert [r["greedy_key"] for r in mig_rows] == pytest.approx([r["greedy_key"] for r in sel], rel=1e-12)
