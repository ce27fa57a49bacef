"""Quarantine for bad records: every rejected record is written with where it came from and why."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from mig_ray.errors import PoolError


class Rejects:
    """Writes `<stem>.rejects.jsonl`; in strict mode the first bad record raises PoolError instead."""

    def __init__(self, path: str | Path | None, strict: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.strict = strict
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self.rows: list[dict] = []  # kept in memory when there is no path (shard actors ship them back)
        # strict mode raises at the first bad record, so it never writes a rejects file
        self._fh = open(self.path, "wb") if self.path is not None and not strict else None  # noqa: SIM115

    def add(self, file: str, line: int, reason: str, raw: Any, where: str = "line") -> None:
        if self.strict:
            self.close()
            raise PoolError(f"{file}:{line}: {reason}" if where == "line" else f"{file} row {line}: {reason}")
        self.count += 1
        self.reasons[reason.split(":")[0]] += 1
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        rec = {"file": file, where: line, "reason": reason, "raw": raw}
        if self._fh is not None:
            self._fh.write(orjson.dumps(rec, default=str) + b"\n")
        else:
            self.rows.append(rec)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Rejects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
