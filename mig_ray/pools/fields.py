"""Field access on records: dotted paths, the released annotated layout, ids and label/score checks."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from mig_ray.errors import BadRecord

RELEASED_LABELS = "annotation.instag.content"
RELEASED_SCORE = "annotation.deita"
_MISSING = object()


def short_repr(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def split_path(path: str) -> tuple[str | int, ...]:
    """'a.b.0.c' -> ('a', 'b', 0, 'c'); integer parts index lists."""
    if not path or any(p.strip() == "" for p in path.split(".")) or len(path) > 1000:
        raise ValueError(f"bad dotted field path {path[:100]!r}: parts separated by single dots, none "
                         "empty (e.g. meta.tags or turns.0.score)")
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def checked_path(path: str | None) -> str | None:
    """`path` unchanged when None or well formed; else split_path's ValueError (for validators:
    `select`'s options and the job file's fields fail at load, not in the read)."""
    if path is not None:
        split_path(path)
    return path


def get_path(rec: Any, parts: tuple[str | int, ...]) -> Any:
    cur = rec
    for p in parts:
        if isinstance(p, int) and isinstance(cur, list):
            if p >= len(cur):
                return _MISSING
            cur = cur[p]
        elif isinstance(cur, dict):
            cur = cur.get(p, _MISSING)
            if cur is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return cur


def _number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def check_score(s: float, name: str) -> float:
    if not math.isfinite(s):
        raise BadRecord(f"score not finite: {name} = {s}")
    if s < 0:
        raise BadRecord(f"score negative: {name} = {s}")
    return float(s)


def released_score(rec: dict) -> float:
    """mean over turns of quality x complexity, from annotation.deita."""
    deita = get_path(rec, ("annotation", "deita"))
    if deita is _MISSING or deita is None:
        raise BadRecord("missing score: annotation.deita")
    if not isinstance(deita, dict):
        raise BadRecord("score not numeric: annotation.deita is not an object")
    q = deita.get("quality_scores")
    c = deita.get("complexity_scores")
    if not isinstance(q, list) or not isinstance(c, list):
        raise BadRecord("missing score: annotation.deita.quality_scores/complexity_scores must be lists")
    if len(q) == 0 or len(q) != len(c):
        raise BadRecord(f"score not numeric: annotation.deita has {len(q)} quality and {len(c)} "
                        "complexity scores (need the same, non-zero number)")
    if not all(_number(v) for v in q) or not all(_number(v) for v in c):
        raise BadRecord("score not numeric: annotation.deita scores must be numbers")
    total = 0.0
    for t, (qi, ci) in enumerate(zip(q, c, strict=True)):
        # per turn: a negative quality times a negative complexity must not pass as a positive score
        check_score(qi, f"annotation.deita.quality_scores[{t}]")
        check_score(ci, f"annotation.deita.complexity_scores[{t}]")
        total += qi * ci
    return check_score(total / len(q), "annotation.deita")


_INF = float("inf")


def released_fast(rec: dict) -> tuple[str, float, list] | None:
    """(id, score, labels) of a well-formed released-layout record with a string `_id`, else None.

    The common case, read in a few dict lookups: a pool of 10^6 records spent 80% of its read time
    in the general accessors. Anything unusual returns None and goes through `FieldSpec`, which
    accepts a superset of these records, gives the same values and names what is wrong.
    """
    try:
        rid = rec["_id"]
        ann = rec["annotation"]
        labels = ann["instag"]["content"]
        deita = ann["deita"]
        q = deita["quality_scores"]
        c = deita["complexity_scores"]
    except (KeyError, TypeError, IndexError):
        return None
    if type(rid) is not str or type(labels) is not list or type(q) is not list or type(c) is not list:
        return None
    n = len(q)
    if n == 0 or n != len(c):
        return None
    total = 0.0
    for qi, ci in zip(q, c, strict=True):
        tq, tc = type(qi), type(ci)
        if (tq is not float and tq is not int) or (tc is not float and tc is not int) or qi < 0 or ci < 0:
            return None
        total += qi * ci
    score = total / n
    if not (0.0 <= score < _INF):  # also False for NaN
        return None
    for t in labels:
        if type(t) is not str:
            return None
    return rid, score, labels


def record_fields(rec: object, spec: FieldSpec) -> tuple[str, float, list]:
    """(id, score, labels) of a parsed record, or BadRecord naming what is wrong: the checked path
    every pool reader takes for a record (the single-core reader for all, the parallel one for the
    records its column checks doubt), so both give the same values and reasons."""
    fast = released_fast(rec) if spec.is_released and type(rec) is dict else None
    if fast is not None:
        return fast
    if not isinstance(rec, dict):
        raise BadRecord("record is not a JSON object")
    return spec.record_id(rec), spec.score(rec), spec.labels(rec)


@dataclass(frozen=True)
class FieldSpec:
    """Where a record keeps its id, labels and score (None: the released annotated layout)."""

    labels_field: str | None = None
    score_field: str | None = None
    id_field: str | None = None
    group_field: str | None = None  # a dotted field or "file" (see pools/costs.py); None: no groups
    cost_field: str | None = None  # "tokens" or a dotted numeric field; None: no costs
    tokenizer: str | None = None  # for cost "tokens": a local tokenizer folder (None: bundled MiniLM)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_labels", split_path(self.labels_field or RELEASED_LABELS))
        object.__setattr__(self, "_score", split_path(self.score_field) if self.score_field else None)
        object.__setattr__(self, "_id", split_path(self.id_field) if self.id_field else None)

    @property
    def is_released(self) -> bool:
        """The released annotated layout with the default id lookup (`released_fast` applies)."""
        return self.labels_field is None and self.score_field is None and self.id_field is None

    @property
    def labels_name(self) -> str:
        return self.labels_field or RELEASED_LABELS

    def record_id(self, rec: dict) -> str:
        name = self.id_field
        if self._id is not None:
            v = get_path(rec, self._id)
            if v is _MISSING or v is None:
                raise BadRecord(f"missing id: {self.id_field}")
        else:
            name, v = "_id", rec.get("_id", _MISSING)
            if v is _MISSING or v is None:
                name, v = "id", rec.get("id", _MISSING)
            if v is _MISSING or v is None:
                return content_id(rec)
        if isinstance(v, bool) or not isinstance(v, str | int):  # True would read as the id "True"
            raise BadRecord(f"id not a string or a whole number: {name} = {short_repr(v)} (ids are strings "
                            "or integers, in every reader)")
        return str(v)

    def score(self, rec: dict) -> float:
        if self._score is None:
            return released_score(rec)
        v = get_path(rec, self._score)
        if v is _MISSING or v is None:
            raise BadRecord(f"missing score: {self.score_field}")
        if not _number(v):
            raise BadRecord(f"score not numeric: {self.score_field} = {v!r}")
        return check_score(v, self.score_field)

    def labels(self, rec: dict) -> list[str]:
        v = get_path(rec, self._labels)
        if v is _MISSING or v is None:
            raise BadRecord(f"missing labels: {self.labels_name}")
        if not isinstance(v, list) or not all(type(t) is str for t in v):
            raise BadRecord(f"labels not a list of strings: {self.labels_name}")
        return v


def content_id(rec: Any) -> str:
    """Stable id from content: sha256 of the record as canonical JSON (sorted keys)."""
    try:
        text = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:  # nested deeper than the encoder's limit (255 levels)
        raise BadRecord(f"record not hashable for an id: {e} (nested too deeply); give it an _id") from None
    return hashlib.sha256(text).hexdigest()[:24]
