"""Stage bookkeeping: completion markers keyed by a fingerprint, atomic outputs, time and memory.

A stage is done when OUTDIR/<stage>/_DONE.json exists and holds the fingerprint of its inputs and
settings; the marker is written last, so a stage killed half-way is simply run again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from mig_ray.storage import Location, rmtree, write_atomic

MARKER = "_DONE.json"


@dataclass
class StageResult:
    """What a stage reports: counts for the summary table, and details kept in its marker (what a
    later stage or the summary reads when this stage is skipped on a re-run)."""

    counts: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)

    def to_marker(self) -> dict[str, Any]:
        return {"counts": self.counts, **self.details}

    @classmethod
    def from_marker(cls, stats: dict[str, Any]) -> StageResult:
        return cls(dict(stats.get("counts", {})), {k: v for k, v in stats.items() if k != "counts"})


def fingerprint(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON: what a stage's output depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_identity(path: Location) -> list:
    """Path, size and mtime of a file, or of every file under a directory (sorted)."""
    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


@dataclass
class StageDir:
    root: Location
    name: str

    @property
    def path(self) -> Location:
        return self.root / self.name

    def done(self, fp: str) -> dict | None:
        """The marker's stats when the stage completed with this fingerprint, else None."""
        marker = self.path / MARKER
        if not marker.exists():
            return None
        try:
            data = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data.get("stats", {}) if data.get("fingerprint") == fp else None

    def reset(self, keep: tuple[str, ...] = ()) -> Location:
        """Empty the stage folder before a (re-)run so that nothing of a killed run is mixed in,
        except the files named in `keep` (a checkpoint that carries its own fingerprint)."""
        if self.path.is_dir():
            (self.path / MARKER).unlink(missing_ok=True)  # first: a crash below leaves no stale marker
            for entry in self.path.iterdir():
                if entry.name in keep and entry.is_file():
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    rmtree(entry)
                else:
                    entry.unlink()
        elif self.path.exists():
            self.path.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def finish(self, fp: str, stats: dict) -> None:
        write_atomic(self.path / MARKER, json.dumps({"fingerprint": fp, "stats": stats}, indent=2,
                                                    default=str))


class MemorySampler:
    """Peak resident memory of this process and its children (Ray's local workers) while a stage runs."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            with suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.every)

    def __enter__(self) -> MemorySampler:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class StageLog:
    """Seconds, peak memory and whether each stage ran or was skipped; the summary table."""

    rows: dict[str, dict] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        row: dict = {"status": "ran"}
        t = time.perf_counter()
        with MemorySampler() as mem:
            yield row
        row["seconds"] = round(time.perf_counter() - t, 3)
        row["peak_memory_mb"] = round(mem.peak / 2**20, 1)
        self.rows[name] = row

    def table(self) -> str:
        lines = [f"{'stage':<10} {'status':<8} {'seconds':>9} {'peak MB':>9}  counts"]
        for name, row in self.rows.items():
            counts = row.get("source") or ", ".join(f"{k} {v}" for k, v in row.get("counts", {}).items())
            lines.append(f"{name:<10} {row['status']:<8} {row['seconds']:>9.2f} {row['peak_memory_mb']:>9.0f}"
                         f"  {counts}")
        return "\n".join(lines)
