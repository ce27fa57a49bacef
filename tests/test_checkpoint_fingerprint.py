"""The selection checkpoint's fingerprint: by content for the valid-tag and label-embedding files,
so a copy or an identical rewrite keeps a checkpoint and an edit in place voids it; and the job's
stage reset that keeps it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from mig_ray.job.stages import MARKER, StageDir
from mig_ray.selection.config import SelectConfig
from mig_ray.selection.engine import fingerprint


def _cfg(tmp_path, **kw) -> SelectConfig:
    pool = tmp_path / "pool.jsonl"
    if not pool.exists():
        pool.write_text('{"id": "a", "tags": ["x"], "score": 1.0}\n')
    return SelectConfig(pool=pool, n=1, out=tmp_path / "o" / "sel.jsonl", labels_field="tags",
                        score_field="score", **kw)


def test_label_embeddings_are_keyed_by_their_arrays_not_path_or_bytes(tmp_path):
    rng = np.random.default_rng(0)
    labels, emb = np.array(["x", "y"]), rng.normal(size=(2, 4)).astype(np.float32)
    a, b = tmp_path / "a.npz", tmp_path / "elsewhere" / "b.npz"
    b.parent.mkdir()
    np.savez(a, labels=labels, embeddings=emb)
    fp_a = fingerprint(_cfg(tmp_path, label_embeddings=a))
    np.savez(b, labels=labels, embeddings=emb.copy())  # the same arrays, another file and time
    assert fingerprint(_cfg(tmp_path, label_embeddings=b)) == fp_a
    bumped = emb.copy()
    bumped[1, 2] = np.nextafter(bumped[1, 2], np.float32(np.inf))  # one ulp in one value
    os.utime(a, ns=(1, 1))
    np.savez(a, labels=labels, embeddings=bumped)  # same path, changed in place
    assert fingerprint(_cfg(tmp_path, label_embeddings=a)) != fp_a
    np.savez(a, labels=np.array(["x", "z"]), embeddings=emb)
    assert fingerprint(_cfg(tmp_path, label_embeddings=a)) != fp_a


def test_valid_tags_are_keyed_by_content(tmp_path):
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps(["x", "y"]))
    fp = fingerprint(_cfg(tmp_path, valid_tags=tags))
    copy = tmp_path / "copy.json"
    shutil.copy(tags, copy)
    assert fingerprint(_cfg(tmp_path, valid_tags=copy)) == fp
    st = tags.stat()
    tags.write_text(json.dumps(["x", "w"]))  # same size, same mtime: only the content differs
    os.utime(tags, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(_cfg(tmp_path, valid_tags=tags)) != fp
    assert fingerprint(_cfg(tmp_path)) != fp


def test_stage_reset_keeps_only_the_named_files_and_drops_the_marker(tmp_path):
    stage = StageDir(tmp_path, "select")
    path = stage.reset()
    (path / "selected.checkpoint.npz").write_bytes(b"ckpt")
    (path / "selected.jsonl").write_bytes(b"partial")
    (path / "sub").mkdir()
    (path / "sub" / "x").write_bytes(b"x")
    stage.finish("fp", {})
    stage.reset(keep=("selected.checkpoint.npz",))
    assert sorted(p.name for p in path.iterdir()) == ["selected.checkpoint.npz"]
    assert (path / "selected.checkpoint.npz").read_bytes() == b"ckpt"
    assert not (path / MARKER).exists() and stage.done("fp") is None
    stage.reset()
    assert list(path.iterdir()) == []
