"""Label embeddings: the background process and the cache give the in-process vectors, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import TULU3_TAGS

from mig_ray.embeddings import BackgroundEmbedder, LabelVectors
from mig_ray.errors import PoolError


def fresh_embed_labels(labels: list[str], batch_size: int, tmp_path) -> np.ndarray:
    """`embed_labels` (the in-process path) run in a fresh Python process: this test process may
    have run other tests' models and libraries first, and one full-suite run gave vectors that
    differed from the child's in the last bits (cause not found); a fresh process compares like
    with like, bit for bit."""
    import subprocess
    import sys

    src, out = tmp_path / "labels.json", tmp_path / "want.npy"
    src.write_text(json.dumps(labels))
    code = ("import json, sys, numpy as np\nfrom mig_ray.embeddings import embed_labels\n"
            f"np.save({str(out)!r}, embed_labels(json.load(open({str(src)!r})), batch_size={batch_size}, "
            "progress=False))\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600)
    return np.load(out)


def test_background_embedder_equals_in_process(tmp_path):
    tags = sorted(json.loads(TULU3_TAGS.read_text()))[::37]
    with BackgroundEmbedder(batch_size=16, progress=False) as bg:
        got = bg.embed(tags)
    want = fresh_embed_labels(tags, 16, tmp_path)
    assert got.dtype == np.float32 and got.shape == (len(tags), 384)
    assert np.array_equal(got, want)


def test_background_embedder_reports_a_broken_model_and_leaves_no_process(tmp_path):
    bg = BackgroundEmbedder(str(tmp_path), progress=False)
    with pytest.raises(PoolError, match=str(tmp_path)):
        bg.embed(["a", "b"])
    assert bg._proc.returncode is not None


def test_leaving_before_embedding_kills_the_child():
    with BackgroundEmbedder(progress=False) as bg:
        pass
    assert bg._proc.returncode is not None


def test_valid_tags_are_embedded_whole_then_served_from_the_cache(tmp_path):
    valid = set(sorted(json.loads(TULU3_TAGS.read_text()))[::25])
    pool_labels = sorted(valid)[3::7]
    want = fresh_embed_labels(sorted(valid), 32, tmp_path)
    rows = [sorted(valid).index(t) for t in pool_labels]
    cache = tmp_path / "cache"
    with LabelVectors(batch_size=32, progress=False, valid_tags=valid, cache_dir=cache) as first:
        got = first.embeddings(pool_labels)
    assert first.info["source"] == "model: valid tags" and first.info["embedded"] == len(valid)
    assert np.array_equal(got, want[rows])  # rows of the whole list, not a re-embedding of the subset
    with LabelVectors(batch_size=32, progress=False, valid_tags=valid, cache_dir=cache) as again:
        assert again._embedder is None  # no model process at all
        assert np.array_equal(again.embeddings(pool_labels), got)
    assert again.info["source"] == "cache"
    # another batch size or tag list is another entry, not a stale hit
    with LabelVectors(batch_size=16, progress=False, valid_tags=valid, cache_dir=cache) as other:
        assert other.info["source"] == "model: valid tags"
    with pytest.raises(PoolError, match="not valid tags"):
        LabelVectors(progress=False, valid_tags=valid, cache_dir=cache, batch_size=32).embeddings(["zzz"])


def test_without_valid_tags_the_pool_labels_are_embedded_then_served_from_the_cache(tmp_path):
    labels = ["coding", "math", "poetry"]
    cache = tmp_path / "cache"
    with LabelVectors(batch_size=8, progress=False, cache_dir=cache) as vecs:
        got = vecs.embeddings(labels)
    assert vecs.info["source"] == "model: pool labels" and vecs.info["embedded"] == 3
    assert np.array_equal(got, fresh_embed_labels(labels, 8, tmp_path))
    with LabelVectors(batch_size=8, progress=False, cache_dir=cache) as again:
        assert np.array_equal(again.embeddings(labels), got)
        assert again._embedder._proc.returncode is not None  # the model's child was killed, unused
    assert again.info["source"] == "cache: pool labels" and again.info["embedded"] == 0
    # the same labels in another order are another entry, never a stale hit (the key is the
    # list; the batch size's part in it is the valid-tag test's)
    with LabelVectors(batch_size=8, progress=False, cache_dir=cache) as vecs:
        vecs.embeddings(labels[::-1])
    assert vecs.info["source"] == "model: pool labels"
    with LabelVectors(batch_size=8, progress=False, cache_dir=cache, use_cache=False) as off:
        off.embeddings(labels)
    assert off.info == {"source": "model: pool labels", "embedded": 3}
    assert len(list(cache.glob("pool-*.npy"))) == 2


def test_only_the_most_recently_used_pool_label_lists_are_kept(tmp_path):
    import os

    from mig_ray.embeddings import prune_pool_lists

    for i in range(6):
        np.save(tmp_path / f"pool-{i}.npy", np.zeros((1, 2), np.float32))
        os.utime(tmp_path / f"pool-{i}.npy", ns=(i * 10**9, (i if i != 1 else 9) * 10**9))
    np.save(tmp_path / "valid.npy", np.zeros((1, 2), np.float32))  # a valid-tag list: never pruned
    prune_pool_lists(tmp_path, keep=3)
    kept = sorted(f.name for f in tmp_path.iterdir())
    assert kept == ["pool-1.npy", "pool-4.npy", "pool-5.npy", "valid.npy"]
