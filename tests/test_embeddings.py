"""Label embeddings: the background embedder process gives the in-process vectors, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mig_ray.embeddings import BackgroundEmbedder, embed_labels
from mig_ray.pools.rejects import PoolError


def test_background_embedder_equals_in_process(shared):
    tags = sorted(json.loads((shared / "valid_tags_tulu3.json").read_text()))[::37]
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
