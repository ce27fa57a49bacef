"""Where a job's files live: a local path, or an object store URI (`s3://bucket/key`, any scheme
pyarrow's filesystems speak) that every node of a cluster can reach.

`location(x)` gives a `pathlib.Path` for local paths and a `RemotePath` for URIs; `RemotePath` has
the small part of pathlib the job uses, so stage code is written once for both. What pathlib
cannot do for a URI (open, atomic replace, Parquet, copies, rmtree) goes through the functions
here. Atomicity: locally a file is written under a temporary name and renamed; on an object store
an object appears whole when its upload completes, so it is written under its final name.

Credentials and endpoint come from the environment, as for every AWS client
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL); Ray's workers inherit
the environment of the process that started the node.
"""

from __future__ import annotations

import fnmatch
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_uri(value: object) -> bool:
    """Whether a path names an object store (`scheme://...`) rather than the local disk."""
    text = str(value)
    return "://" in text and not text.startswith("file://")


@lru_cache(maxsize=16)
def _filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")
    return fs


@dataclass(frozen=True)
class Stat:
    st_size: int
    st_mtime_ns: int


class RemotePath:
    """A file or folder on an object store, addressed as `scheme://bucket/key`. Folders are key
    prefixes: they exist when something lies under them, and need no creation."""

    __slots__ = ("_uri",)

    def __init__(self, uri: str | RemotePath) -> None:
        text = str(uri)
        scheme, sep, rest = text.partition("://")
        if not sep or not rest.strip("/"):
            raise ValueError(f"{text!r}: not an object store URI (scheme://bucket/key)")
        parts = [p for p in rest.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"{text!r}: '.' and '..' are not allowed in an object store URI")
        self._uri = f"{scheme}://{'/'.join(parts)}"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A pydantic field typed RemotePath takes a URI string and dumps as one."""
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            lambda v: v if isinstance(v, RemotePath) else RemotePath(v),
            serialization=core_schema.plain_serializer_function_ser_schema(str))

    # -- pure path operations -------------------------------------------------------------------
    def __str__(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"RemotePath({self._uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other._uri == self._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    def __lt__(self, other: RemotePath) -> bool:
        return self._uri < other._uri

    def __truediv__(self, name: str | Path) -> RemotePath:
        return RemotePath(f"{self._uri}/{name}")

    @property
    def scheme(self) -> str:
        return self._uri.partition("://")[0]

    @property
    def key(self) -> str:
        """`bucket/key`: the path pyarrow's filesystem takes."""
        return self._uri.partition("://")[2]

    @property
    def fs(self) -> pafs.FileSystem:
        return _filesystem(self.scheme, self.key.split("/")[0])

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parents(self) -> list[RemotePath]:
        out, p = [], self
        while "/" in p.key:
            p = p.parent
            out.append(p)
        return out

    @property
    def parent(self) -> RemotePath:
        head = self.key.rsplit("/", 1)[0]
        return RemotePath(f"{self.scheme}://{head}")

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> RemotePath:
        return self.with_name(self.stem + suffix)

    def expanduser(self) -> RemotePath:
        return self

    def resolve(self) -> RemotePath:
        return self

    def absolute(self) -> RemotePath:
        return self

    # -- the store --------------------------------------------------------------------------------
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.key)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> Stat:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return Stat(info.size or 0, info.mtime_ns or 0)

    def iterdir(self) -> Iterator[RemotePath]:
        if not self.is_dir():
            return iter(())
        infos = self.fs.get_file_info(pafs.FileSelector(self.key, allow_not_found=True))
        return iter(sorted(RemotePath(f"{self.scheme}://{i.path}") for i in infos))

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """Direct children whose name matches (no `**`, no `/` in the pattern)."""
        if "/" in pattern:
            raise ValueError(f"{pattern!r}: only one level of glob on an object store")
        return iter([p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)])

    def rglob(self, pattern: str) -> Iterator[RemotePath]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.key, recursive=True, allow_not_found=True))
        return iter(sorted(RemotePath(f"{self.scheme}://{i.path}") for i in infos
                           if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.base_name, pattern)))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Prefixes need no creation; a file in the way is an error as on a disk."""
        if self.is_file():
            raise FileExistsError(17, "File exists", str(self))

    def unlink(self, missing_ok: bool = False) -> None:
        if not self.is_file():
            if missing_ok:
                return
            raise FileNotFoundError(2, "No such file or directory", str(self))
        self.fs.delete_file(self.key)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.key) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        with self.fs.open_output_stream(self.key) as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))


Location = Path | RemotePath


def location(value: str | Path | RemotePath) -> Location:
    """A local `Path` (user's `~` expanded, made absolute: Ray tasks run in other folders) or a
    `RemotePath` for a URI."""
    if isinstance(value, RemotePath | Path):
        return value
    return RemotePath(value) if is_uri(value) else user_path(value).absolute()


def user_path(value: str | Path | RemotePath) -> Location:
    """The path with a leading `~` or `~user` expanded; an unknown user's `~name` stays as it is
    (pathlib's expanduser raises RuntimeError there, os.path's does not). A URI stays a URI."""
    if isinstance(value, RemotePath):
        return value
    return Path(os.path.expanduser(value))


def open_read(path: Location) -> IO[bytes]:
    """A binary, seekable, buffered reader (iterating it yields lines)."""
    if isinstance(path, RemotePath):
        return io.BufferedReader(path.fs.open_input_file(path.key), 1 << 20)
    return open(path, "rb")


def open_write(path: Location) -> IO[bytes]:
    """A binary writer. Locally the caller renames a temporary file into place; remotely the
    object appears when the writer closes."""
    if isinstance(path, RemotePath):
        return path.fs.open_output_stream(path.key)
    return open(path, "wb")


def write_atomic(path: Location, data: bytes | memoryview | str) -> None:
    """The file with these bytes, never a half-written one under its name."""
    raw = data.encode() if isinstance(data, str) else data
    if isinstance(path, RemotePath):
        path.write_bytes(raw)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def write_parquet_atomic(table: pa.Table, path: Location, **kwargs: Any) -> None:
    if isinstance(path, RemotePath):
        pq.write_table(table, path.key, filesystem=path.fs, **kwargs)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, **kwargs)
    os.replace(tmp, path)


def read_parquet(path: Location, columns: list[str] | None = None) -> pa.Table:
    if isinstance(path, RemotePath):
        return pq.read_table(path.key, filesystem=path.fs, columns=columns)
    return pq.read_table(path, columns=columns)


def parquet_file(path: Location) -> pq.ParquetFile:
    return pq.ParquetFile(path.fs.open_input_file(path.key)) if isinstance(path, RemotePath) \
        else pq.ParquetFile(path)


def rmtree(path: Location) -> None:
    """Remove a folder and everything under it; nothing there is fine."""
    if isinstance(path, RemotePath):
        if path.is_dir():
            path.fs.delete_dir(path.key)
        elif path.is_file():
            path.fs.delete_file(path.key)
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def copy_file(src: Location, dst: Location) -> None:
    """Copy one file, atomically at the destination."""
    if isinstance(dst, Path) and isinstance(src, Path):
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return
    if isinstance(dst, Path):
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        with open_read(src) as r, open(tmp, "wb") as w:
            shutil.copyfileobj(r, w, 1 << 20)
        os.replace(tmp, dst)
        return
    with open_read(src) as r, open_write(dst) as w:
        while chunk := r.read(1 << 20):
            w.write(chunk)


def concat_files(sources: list[Location], dst: Location) -> None:
    """dst = the sources' bytes one after another, written atomically."""
    if isinstance(dst, Path):
        dst.parent.mkdir(parents=True, exist_ok=True)
    target = dst.with_name(f".{dst.name}.{os.getpid()}.tmp") if isinstance(dst, Path) else dst
    with open_write(target) as w:
        for src in sources:
            with open_read(src) as r:
                while chunk := r.read(1 << 20):
                    w.write(chunk)
    if isinstance(dst, Path):
        os.replace(target, dst)
