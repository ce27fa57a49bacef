"""Tag normalisation and mapping of free tags onto a valid-tag vocabulary.

Free-form taggers say "Python programming", "python  Programming " and "python programmings" for
one intent; the label graph must see one node. Normalisation is deterministic and cheap (case,
whitespace, surrounding punctuation, simple plurals, duplicates). With a vocabulary (e.g. the 4,531
released Tulu3 tags, which are lower-case and singular) a tag that is not in it after normalisation
is mapped to the most similar vocabulary tag by embedding cosine, or dropped when nothing is close
enough: a wrong node costs more than a missing one.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from mig_ray.errors import PoolError
from mig_ray.pools.annotated import read_tag_list

_WS = re.compile(r"\s+")
_STRIP = " \t\n\r\"'`.,;:!?()[]{}<>*-_/\\|"
# Words whose trailing "s" is not a plural marker (mathematics, business, focus, analysis, news...).
_KEEP_ENDINGS = ("ss", "us", "is", "ics", "ness", "ous", "news", "series", "species", "'s", ".js")
_KEEP_WORDS = frozenset({"aws", "gas", "bias", "yes", "this", "its", "has", "was", "does", "always",
                         "perhaps", "towards", "whereas", "plus", "minus", "alias", "canvas", "chaos",
                         "ethos", "pathos", "atlas", "lens", "kubernetes", "pandas", "sales", "windows",
                         "ios", "macos", "jenkins", "redis", "express", "means", "lyrics", "arts"})


def clean_tag(tag: str) -> str:
    """Unicode NFKC, lower case, single spaces, no surrounding quotes or punctuation."""
    t = unicodedata.normalize("NFKC", str(tag)).lower()
    t = _WS.sub(" ", t).strip(_STRIP)
    return _WS.sub(" ", t).strip()


def singular_word(word: str) -> str:
    """Undo a simple English plural ("strategies" -> "strategy", "boxes" -> "box", "tags" -> "tag").

    Conservative on purpose: words that merely end in s (analysis, mathematics, business) stay.
    """
    if len(word) <= 3 or word in _KEEP_WORDS or not word.isascii() or word[-1] != "s":
        return word
    if word.endswith(_KEEP_ENDINGS):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zzes", "sses")):
        return word[:-2]
    return word[:-1]


def singular_tag(tag: str) -> str:
    """Singularise every word of a cleaned tag (the released InsTag vocabulary is singular throughout)."""
    return " ".join(singular_word(w) for w in tag.split(" "))


def normalize_tag(tag: str) -> str:
    """The canonical form of one free tag: cleaned and singular; "" when nothing is left."""
    return singular_tag(clean_tag(tag))


def normalize_tags(tags: Iterable[str], max_tags: int | None = None) -> list[str]:
    """Normalised tags without empties and duplicates, in first-seen order, at most max_tags."""
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        t = normalize_tag(tag)
        if t and t not in seen:
            seen.add(t)
            out.append(t)
            if max_tags is not None and len(out) >= max_tags:
                break
    return out


def load_vocabulary(path: str | Path) -> list[str]:
    """A valid-tag file as a tagger vocabulary: its tags as written, in file order, one per cleaned
    form (the first spelling wins) and none that cleans to nothing.

    Taggers answer with these spellings, so their labels pass the exact valid-tag filter of the
    selection, which reads the same file with `read_tag_list`.
    """
    try:
        items = read_tag_list(path)
    except PoolError as e:
        raise ValueError(str(e)) from e
    vocab: dict[str, str] = {}
    for item in items:
        key = clean_tag(item)
        if key:
            vocab.setdefault(key, item)
    if not vocab:
        raise ValueError(f"{path}: no tags")
    return list(vocab.values())


Encoder = Callable[[list[str]], np.ndarray]


def sentence_encoder(model: str | None = None, device: str | None = None) -> Encoder:
    """A unit-normalising sentence-transformers encoder, loaded once (bundled offline model by default)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from mig_ray.embeddings import resolve_model

    st = SentenceTransformer(resolve_model(model), device=device or "cpu", trust_remote_code=False)

    def encode(texts: list[str]) -> np.ndarray:
        emb = st.encode(texts, batch_size=256, show_progress_bar=False, normalize_embeddings=True,
                        convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)

    return encode


class VocabularyMapper:
    """Maps free tags onto a fixed vocabulary: exact, then singular, then nearest by cosine >= threshold.

    The vocabulary is embedded once; each distinct unknown tag is embedded once and its answer
    cached, so a tagger actor pays the embedding cost per new tag, not per record.
    """

    def __init__(self, vocabulary: Sequence[str], threshold: float = 0.8, model: str | None = None,
                 encoder: Encoder | None = None) -> None:
        self.vocabulary = list(vocabulary)  # answers are these spellings: the valid-tag file's own
        self._cleaned = [clean_tag(v) for v in self.vocabulary]  # what is matched and embedded
        self.threshold = float(threshold)
        self._index: dict[str, str] = {}
        self._singular: dict[str, str] = {}
        for v, c in zip(self.vocabulary, self._cleaned, strict=True):
            self._index.setdefault(c, v)
            self._singular.setdefault(singular_tag(c), v)
        self._encoder = encoder
        self._model = model
        self._emb: np.ndarray | None = None
        self._cache: dict[str, str | None] = {}

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = sentence_encoder(self._model)
        return self._encoder(texts)

    def _vocab_embeddings(self) -> np.ndarray:
        if self._emb is None:
            self._emb = self._encode(self._cleaned)
        return self._emb

    def lookup(self, tag: str) -> str | None:
        """Exact or singular match of one tag, without embeddings; None when neither matches."""
        c = clean_tag(tag)
        hit = self._index.get(c)
        return hit if hit is not None else self._singular.get(singular_tag(c))

    def map_many(self, tag_lists: Sequence[Sequence[str]], max_tags: int | None = None,
                 embed: bool = True) -> list[list[str]]:
        """Map each list (one record's tags); unknown tags of all lists are embedded in one batch.

        With embed=False only exact and singular matches count (no model is loaded).
        """
        unknown: list[str] = []
        for tags in tag_lists if embed else ():
            for tag in tags:
                c = clean_tag(tag)
                if c and c not in self._cache and self.lookup(c) is None and c not in unknown:
                    unknown.append(c)
        if unknown:
            q = self._encode(unknown)
            sims = q @ self._vocab_embeddings().T
            best = sims.argmax(axis=1)
            for j, c in enumerate(unknown):
                s = float(sims[j, best[j]])
                self._cache[c] = self.vocabulary[int(best[j])] if s >= self.threshold else None
        out: list[list[str]] = []
        for tags in tag_lists:
            mapped: list[str] = []
            for tag in tags:
                c = clean_tag(tag)
                if not c:
                    continue
                m = self.lookup(c)
                if m is None and embed:
                    m = self._cache.get(c)
                if m is not None and m not in mapped:
                    mapped.append(m)
                    if max_tags is not None and len(mapped) >= max_tags:
                        break
            out.append(mapped)
        return out

    def map(self, tags: Sequence[str], max_tags: int | None = None) -> list[str]:
        """Map one record's tags; unmatched tags are dropped, duplicates removed, order kept."""
        return self.map_many([tags], max_tags)[0]
