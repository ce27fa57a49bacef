"""The selection checkpoint: the committed order (with vectors) in one .npz that carries the
fingerprint of what the selection depends on. Both engines write it (the sharded one on Ray, the
in-process one of `shards: 1`) under the same name and resume from it only when the fingerprint
matches, so a killed `select` on a big pool restarts where it stopped, not from zero."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from mig_ray.core.certified import Commit
from mig_ray.quarantine import one_line, quarantine
from mig_ray.selection.config import SelectConfig
from mig_ray.storage import Location, write_atomic

RESULT_KEYS = ("n", "valid_tags", "embedding_model", "label_embeddings", "sim_threshold", "target_degree",
               "prop_weight", "propagation", "phi", "phi_a", "phi_b", "phi_alpha", "norm", "gain",
               "labels_field", "score_field", "id_field", "groups", "quotas", "floors", "budget_tokens",
               "cost", "tokenizer")


def fingerprint(cfg: SelectConfig) -> str:
    """What the selection depends on: options that change the result, the pool file's identity and
    the content of the valid-tag and label-embedding files (a copy elsewhere, or the same file
    rewritten with the same content, keeps a checkpoint valid; an edit in place does not).
    Shard count and batch size do not change the result, so a checkpoint survives them."""
    files = sorted(cfg.pool.glob("part-*.parquet")) if cfg.pool.is_dir() else [cfg.pool]  # a job's parts
    key = {k: str(getattr(cfg, k)) for k in RESULT_KEYS} | {"pool": str(cfg.pool.resolve()), "files": [
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]}
    for k in ("valid_tags", "label_embeddings"):
        path = getattr(cfg, k)
        key[k] = None if path is None else content_digest(Path(path))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def content_digest(path: Path) -> str:
    """sha256 of a file's content; of an .npz, of its arrays (np.savez stamps the zip entries with
    the time of writing, so equal arrays written twice differ in bytes)."""
    h = hashlib.sha256()
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for name in sorted(z.files):
                a = np.ascontiguousarray(z[name])
                h.update(json.dumps([name, a.dtype.str, a.shape]).encode())
                h.update(a.tobytes())
        return h.hexdigest()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Checkpoint:
    """The committed order (with vectors) in one .npz, written atomically every few seconds."""

    def __init__(self, path: Location, fp: str, every_seconds: float) -> None:
        self.path, self.fp, self.every = path, fp, every_seconds
        self.last = time.monotonic()

    def load(self) -> Commit | None:
        if not self.path.exists():
            return None
        try:
            with np.load(io.BytesIO(self.path.read_bytes()), allow_pickle=False) as z:
                if str(z["fingerprint"]) != self.fp:
                    return None
                return Commit(z["positions"], z["gains"], z["ptr"], z["idx"], z["val"], z["groups"],
                              z["costs"])  # what the committed samples took of quotas and budget
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # cut short: start over
            quarantine(self.path, self.path.parent, one_line(e), "the selection starts from the beginning")
            return None

    def maybe_save(self, commits: list[Commit], force: bool = False) -> None:
        if not force and time.monotonic() - self.last < self.every:
            return
        c = Commit.concat(commits)
        buf = io.BytesIO()
        np.savez(buf, fingerprint=self.fp, positions=c.positions, gains=c.gains, ptr=c.ptr, idx=c.idx,
                 val=c.val, groups=c.groups, costs=c.costs)
        write_atomic(self.path, buf.getvalue())
        self.last = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
