"""A synthetic pool shaped like the released Tulu3 annotated pool, for benchmarks.

N samples over the 4,531 real valid Tulu3 tags with Zipf popularity, 1 + Poisson(3) tags per
sample, one to three turns of DEITA-like quality and complexity scores. Texts are short stand-ins
(real Tulu3 dialogs are longer, so real files parse slower per record).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson

SHARED = Path(__file__).resolve().parents[2] / "shared"


def valid_tags() -> list[str]:
    return json.loads((SHARED / "valid_tags_tulu3.json").read_text())


def tulu3_shaped(n: int, seed: int = 0, zipf_s: float = 1.0):
    """Arrays: tags (list[str]), indptr, tag codes (into tags), quality/complexity per turn."""
    tags = valid_tags()
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, len(tags) + 1) ** zipf_s
    popularity = popularity[rng.permutation(len(tags))]
    popularity /= popularity.sum()
    counts = 1 + rng.poisson(3.0, n)
    codes = rng.choice(len(tags), size=int(counts.sum()), p=popularity).astype(np.int32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    turns = rng.choice([1, 1, 1, 2, 3], size=n)
    quality = np.clip(rng.normal(3.6, 0.9, size=(n, 3)), 1.0, 6.0)
    complexity = np.clip(rng.normal(2.6, 0.8, size=(n, 3)), 1.0, 6.0)
    return tags, indptr, codes, turns, quality, complexity


GROUP_SHARES = (0.30, 0.20, 0.15, 0.12, 0.09, 0.07, 0.04, 0.03)  # 8 sources, skewed like a real mix


def groups_and_tokens(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's source (one of 8, GROUP_SHARES) and token count (log-normal, median about 300
    per turn, like chat data; at least 8): the `source` and `ntok` fields of a grouped pool."""
    rng = np.random.default_rng(seed + 1)
    _, _, _, turns, _, _ = tulu3_shaped(n, seed)
    groups = rng.choice(len(GROUP_SHARES), size=n, p=np.array(GROUP_SHARES) / sum(GROUP_SHARES))
    tokens = np.maximum(8, np.round(rng.lognormal(np.log(300), 0.9, n) * turns)).astype(np.int64)
    return groups, tokens


def write_jsonl(path: Path, n: int, seed: int = 0, grouped: bool = False) -> None:
    """The pool as JSONL in the released layout; `grouped`: with `source` (a string, one of 8) and
    `ntok` fields from groups_and_tokens."""
    tags, indptr, codes, turns, quality, complexity = tulu3_shaped(n, seed)
    if grouped:
        groups, tokens = groups_and_tokens(n, seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for i in range(n):
            t = int(turns[i])
            rec = {
                "_id": f"s{i:08d}",
                "dialogs": [{"role": "user", "content": f"Question {i} about {tags[codes[indptr[i]]]}?"},
                            {"role": "assistant", "content": f"An answer to question {i}."}],
                "source": f"source-{groups[i]}" if grouped else ["synthetic-tulu3-shaped"],
                **({"ntok": int(tokens[i])} if grouped else {}),
                "annotation": {
                    "instag": {"content": [tags[c] for c in codes[indptr[i]:indptr[i + 1]]]},
                    "deita": {"quality_scores": quality[i, :t].tolist(),
                              "complexity_scores": complexity[i, :t].tolist()},
                },
            }
            f.write(orjson.dumps(rec) + b"\n")
    tmp.replace(path)


def scores(turns, quality, complexity) -> np.ndarray:
    mask = np.arange(3)[None, :] < turns[:, None]
    return (quality * complexity * mask).sum(axis=1) / turns
