"""`car`: Clustering and Ranking (Ge et al. 2024): rank by quality, cluster for diversity.

As the paper's reference code (github.com/IronBeliever/CaR, Clustering/cluster.py) does it: the sample
embeddings are reduced by PCA to the components that keep `pca` of the variance (0.95), clustered by
k-means into k = int(sqrt(N / 2)) clusters, and the selection is the top n1 samples by score plus the
top n2 (1) of every cluster, a cluster's top counting even when it is already among the n1 (the
reference skips it rather than taking its next). The reference fixes n1 = 1,000 for Alpaca's 52K; here
the budget is K, so n1 defaults to K - clusters * n2 and places left over (a cluster's top already
taken) are filled in score order, so that every method returns K. Score order: score descending, then
input position; the per-cluster picks come after the n1, in score order.

k-means: scikit-learn's, from k-means++ centres (`initial_centres`) drawn with the compare seed from a
seeded subsample of at most `init_max` (20,000) samples (k-means++ on all 50K took 5.4 s single-threaded and
54 s with two threads on a loaded 2-core machine, most of car's time; on 1M with 707 clusters it would
dominate), then Lloyd (`KMeans`, the reference's algorithm, tol 1e-4, at most max_iter 300 iterations) up to
`full_max` (100,000) samples and `MiniBatchKMeans` above (`kmeans`: auto, full or minibatch).
bench/bench_compare.py has the seconds at 50K and 1M.
"""

from __future__ import annotations

import math

import numpy as np

from mig_ray.compare.pool import ComparePool
from mig_ray.compare.score import score_order

NAME = "car"
PAPER = ("Ge et al. 2024, Clustering and Ranking: Diversity-preserved Instruction Selection through "
         "Expert-aligned Quality Estimation (arXiv 2402.18191)")
SUMMARY = "top n1 by score, then the top n2 of each k-means cluster of the embeddings, filled in score order"
NEEDS = frozenset({"scores", "embeddings"})
OPTIONS = {"clusters": 0, "n1": -1, "n2": 1, "pca": 0.95, "kmeans": "auto", "full_max": 100_000,
           "tol": 1e-4, "max_iter": 300, "batch": 4096, "init_max": 20_000}
KMEANS = ("auto", "full", "minibatch")


def check_options(options: dict) -> None:
    if options["kmeans"] not in KMEANS:
        raise ValueError(f"car.kmeans must be one of {', '.join(KMEANS)}, got {options['kmeans']!r}")
    if not 0.0 <= options["pca"] <= 1.0:
        raise ValueError(f"car.pca must be in [0, 1] (the share of variance kept; 0 or 1: no PCA), "
                         f"got {options['pca']}")
    for key in ("clusters", "n2", "max_iter", "batch", "init_max"):
        if options[key] < (0 if key == "clusters" else 1):
            least = 0 if key == "clusters" else 1
            raise ValueError(f"car.{key} must be >= {least}, got {options[key]}")


def default_clusters(n: int) -> int:
    """The reference code's rule: int(sqrt(N / 2)), at least 1."""
    return max(1, int(math.sqrt(n / 2)))


def pca_reduce(x: np.ndarray, keep: float, rows: int = 65_536) -> np.ndarray:
    """x centred and projected on the fewest principal components whose variance share reaches `keep`
    (scikit-learn's rule for a fractional n_components); keep 0 or 1 returns x as it is. The float64
    covariance is summed over blocks of `rows` rows, so no float64 copy of x is made (at 1M x 384 the
    copies took 6 GB)."""
    x = np.asarray(x, dtype=np.float32)
    if keep <= 0.0 or keep >= 1.0:
        return x
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((x.shape[1], x.shape[1]))
    for lo in range(0, len(x), rows):
        b = x[lo:lo + rows].astype(np.float64) - mean
        cov += b.T @ b
    cov /= max(1, len(x) - 1)
    val, vec = np.linalg.eigh(cov)
    val, vec = val[::-1], vec[:, ::-1]
    ratio = np.cumsum(val) / val.sum() if val.sum() > 0 else np.ones(len(val))
    m = min(int(np.searchsorted(ratio, keep, side="right")) + 1, len(val))
    proj = np.ascontiguousarray(vec[:, :m], dtype=np.float32)
    out = np.empty((len(x), m), dtype=np.float32)
    shift = mean.astype(np.float32) @ proj
    for lo in range(0, len(x), rows):
        np.subtract(x[lo:lo + rows] @ proj, shift, out=out[lo:lo + rows])
    return out


def init_sample(n: int, seed: int, init_max: int) -> np.ndarray:
    """The positions k-means++ draws from: all n, or a sorted uniform subsample of init_max of them
    (numpy's default_rng(seed).choice without replacement)."""
    if n <= init_max:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, init_max, replace=False)).astype(np.int64)


def initial_centres(z: np.ndarray, clusters: int, seed: int, init_max: int = 20_000) -> np.ndarray:
    """k-means++ centres (scikit-learn's kmeans_plusplus, seeded) drawn from the rows `init_sample`
    names. BLAS on one thread: each step's products are a few rows against the sample, too small for
    threads to pay (on a loaded 2-core machine two threads took 22-43 s at 50K where one took 2 s)."""
    from sklearn.cluster import kmeans_plusplus
    from threadpoolctl import threadpool_limits

    sub = init_sample(len(z), seed, init_max)
    pick = z if len(sub) == len(z) else z[sub]
    with threadpool_limits(limits=1, user_api="blas"):
        return kmeans_plusplus(pick, min(clusters, len(pick)), random_state=seed)[0]


def fit_kmeans(z: np.ndarray, clusters: int, seed: int, kmeans: str = "auto", full_max: int = 100_000,
               tol: float = 1e-4, max_iter: int = 300, batch: int = 4096,
               init_max: int = 20_000) -> tuple[np.ndarray, str, int]:
    """(cluster of each row, "full" or "minibatch", iterations run): k-means from `initial_centres`."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    init = initial_centres(z, min(clusters, len(z)), seed, init_max)
    full = kmeans == "full" or (kmeans == "auto" and len(z) <= full_max)
    if full:
        km = KMeans(len(init), init=init, n_init=1, tol=tol, max_iter=max_iter, random_state=seed)
    else:
        km = MiniBatchKMeans(len(init), init=init, n_init=1, tol=tol, max_iter=max_iter, batch_size=batch,
                             random_state=seed)
    km.fit(z)
    return km.labels_.astype(np.int64), "full" if full else "minibatch", int(km.n_iter_)


def cluster_labels(z: np.ndarray, clusters: int, seed: int, kmeans: str = "auto", full_max: int = 100_000,
                   tol: float = 1e-4, max_iter: int = 300, batch: int = 4096,
                   init_max: int = 20_000) -> np.ndarray:
    """k-means cluster of each row (`fit_kmeans`)."""
    return fit_kmeans(z, clusters, seed, kmeans, full_max, tol, max_iter, batch, init_max)[0]


def car_order(scores: np.ndarray, labels: np.ndarray, k: int, n1: int, n2: int) -> np.ndarray:
    """Top n1 by score, then each cluster's top n2 not yet taken (in score order), then the rest by
    score, cut at k."""
    ranked = score_order(scores)
    n = len(ranked)
    k = min(k, n)
    lab = np.asarray(labels, dtype=np.int64)[ranked]
    by_cluster = np.argsort(lab, kind="stable")  # within a cluster, still in score order
    starts = np.searchsorted(lab[by_cluster], lab[by_cluster], side="left")
    within = np.empty(n, dtype=np.int64)
    within[by_cluster] = np.arange(n) - starts  # each sample's rank inside its cluster
    n1 = max(0, min(n1, n))
    first = np.zeros(n, dtype=bool)
    first[:n1] = True
    quota = (within < n2) & ~first
    rest = ~first & ~quota
    return np.concatenate([ranked[first], ranked[quota], ranked[rest]])[:k].astype(np.int64)


def select(pool: ComparePool, k: int, seed: int = 0, clusters: int = 0, n1: int = -1, n2: int = 1,
           pca: float = 0.95, kmeans: str = "auto", full_max: int = 100_000, tol: float = 1e-4,
           max_iter: int = 300, batch: int = 4096, init_max: int = 20_000) -> np.ndarray:
    n = len(pool)
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    clusters = min(clusters or default_clusters(n), n)
    labels = cluster_labels(pca_reduce(pool.embeddings, pca), clusters, seed, kmeans, full_max, tol, max_iter,
                            batch, init_max)
    if n1 < 0:
        n1 = max(0, min(k, n) - clusters * n2)
    return car_order(pool.scores, labels, k, n1, n2)
