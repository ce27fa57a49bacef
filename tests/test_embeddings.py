"""Label embeddings: the background process and the cache give the in-process vectors, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import TULU3_TAGS

from mig_ray.embeddings import BackgroundEmbedder, LabelVectors, embed_labels
from mig_ray.errors import PoolError


def test_background_embedder_equals_in_process():
    tags = sorted(json.loads(TULU3_TAGS.read_text()))[::37]
    with BackgroundEmbedder(batch_size=16, progress=False) as bg:
        got = bg.embed(tags)
    want = embed_labels(tags, batch_size=16, progress=False)
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
    want = embed_labels(sorted(valid), batch_size=32, progress=False)
    rows = [sorted(valid).index(t) for t in pool_labels]
    with LabelVectors(batch_size=32, progress=False, valid_tags=valid, cache_dir=tmp_path) as first:
        got = first.embeddings(pool_labels)
    assert first.info["source"] == "model: valid tags" and first.info["embedded"] == len(valid)
    assert np.array_equal(got, want[rows])  # rows of the whole list, not a re-embedding of the subset
    with LabelVectors(batch_size=32, progress=False, valid_tags=valid, cache_dir=tmp_path) as again:
        assert again._embedder is None  # no model process at all
        assert np.array_equal(again.embeddings(pool_labels), got)
    assert again.info["source"] == "cache"
    # another batch size or tag list is another entry, not a stale hit
    with LabelVectors(batch_size=16, progress=False, valid_tags=valid, cache_dir=tmp_path) as other:
        assert other.info["source"] == "model: valid tags"
    with pytest.raises(PoolError, match="not valid tags"):
        LabelVectors(progress=False, valid_tags=valid, cache_dir=tmp_path, batch_size=32).embeddings(["zzz"])


def test_without_valid_tags_the_pool_labels_are_embedded(tmp_path):
    labels = ["coding", "math", "poetry"]
    with LabelVectors(batch_size=8, progress=False, cache_dir=tmp_path) as vecs:
        got = vecs.embeddings(labels)
    assert vecs.info == {"source": "model: pool labels", "embedded": 3}
    assert np.array_equal(got, embed_labels(labels, batch_size=8, progress=False))
    assert not any(tmp_path.iterdir())  # nothing cached: the key would be this pool's labels
