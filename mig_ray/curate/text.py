"""What text a record is compared by: its chosen turns, normalised, and the words of that text.

Normalisation is Unicode NFKC, then case folding, then every run of whitespace as one space: the
same conversation typed with other capitals, spacing or compatibility characters (full-width
letters, ligatures) normalises to one text. Words are the runs of letters and digits of that text,
so punctuation separates words and is otherwise ignored by shingles and n-grams.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Literal

import numpy as np

Turns = Literal["all", "user", "first-user"]
_WORD = re.compile(r"\w+")
TURN_SEPARATOR = "\n"


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, stripped (str.split's whitespace is
    the regex's \\s, and splitting is about twice as fast as substituting)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def turn_texts(messages: list[dict], turns: Turns = "all") -> list[str]:
    """The contents of the turns that count: every turn, the user turns, or the first user turn."""
    if turns == "all":
        return [str(m.get("content") or "") for m in messages]
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return users[:1] if turns == "first-user" else users


def conversation_text(messages: list[dict], turns: Turns = "all") -> str:
    """The normalised text of a conversation's counted turns, each turn prefixed by its role when all
    turns count (so that a question and an answer swapped are not one text)."""
    if turns == "all":
        parts = [f"{m.get('role', '')}: {m.get('content') or ''}" for m in messages]
    else:
        parts = turn_texts(messages, turns)
    return TURN_SEPARATOR.join(normalise(p) for p in parts)


def words(text: str) -> list[str]:
    """The runs of letters and digits of a normalised text."""
    return _WORD.findall(text)


def text_hashes(texts: list[str]) -> np.ndarray:
    """64-bit blake2b of each text's UTF-8: equal texts, equal hashes (the exact-duplicate key)."""
    blake = hashlib.blake2b
    return np.frombuffer(b"".join(blake(t.encode(), digest_size=8).digest() for t in texts),
                         dtype="<u8").copy()
