"""Random annotated pools for tests: clustered label embeddings (so edges exist), ties on purpose."""

from __future__ import annotations

import numpy as np


def random_pool(seed: int, n: int | None = None, n_labels: int | None = None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(1, 70))
    L = n_labels or int(rng.integers(1, 16))
    vocab = [f"tag{j:02d}" for j in range(L)]
    centres = rng.normal(size=(max(1, L // 3), 6))
    emb = centres[rng.integers(0, len(centres), L)] + 0.35 * rng.normal(size=(L, 6))
    discrete = rng.random() < 0.5  # few distinct scores -> many exact ties
    labels, scores = [], []
    for _ in range(n):
        if labels and rng.random() < 0.15:  # an exact duplicate of an earlier sample
            j = int(rng.integers(0, len(labels)))
            labels.append(list(labels[j]))
            scores.append(scores[j])
            continue
        m = int(rng.integers(0, 5))  # 0 labels: an empty sample, gain 0
        picks = [vocab[int(t)] for t in rng.integers(0, L, m)]  # repeats allowed, count once
        labels.append(picks)
        scores.append(float(rng.integers(1, 4)) if discrete else float(rng.uniform(0.5, 20.0)))
    return vocab, emb.astype(np.float32), labels, np.array(scores)
