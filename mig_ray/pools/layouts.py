"""Conversation layouts of instruction pools, normalised to one form: [{"role", "content"}, ...].

Every later stage (taggers, scorers, writers of the ingest table) sees only this form, so a pool
in any supported layout runs through the same pipeline. Errors raise BadRecord with a reason that
names the offending field, because the rejects file is what a user reads to fix a pool.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from mig_ray.errors import BadRecord
from mig_ray.pools.fields import RELEASED_LABELS, FieldSpec, released_fast, released_score, split_path

# layout name -> the field that holds its conversation (detection order matters: first match wins)
LAYOUT_FIELDS: dict[str, str] = {
    "released": "dialogs",
    "sharegpt": "conversations",
    "openai": "messages",
    "alpaca": "instruction",
}
LAYOUTS: tuple[str, ...] = tuple(LAYOUT_FIELDS)

ROLES = ("system", "user", "assistant")
# ShareGPT speaker names seen in public pools, mapped to chat roles
SHAREGPT_ROLES: dict[str, str] = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "system": "system",
}
OPENAI_ROLES: dict[str, str] = {"system": "system", "developer": "system", "user": "user",
                                "assistant": "assistant"}

Messages = list[dict[str, str]]


def detect_layout(rec: Any) -> str:
    """The layout of one record, by the field that holds its conversation."""
    if not isinstance(rec, dict):
        raise BadRecord("record is not a JSON object")
    for name, key in LAYOUT_FIELDS.items():
        if rec.get(key) is not None:  # Parquet/Arrow rows carry other layouts' columns as nulls
            return name
    raise BadRecord("no conversation: none of the fields " + ", ".join(LAYOUT_FIELDS.values()))


def check_layout(layout: str) -> str:
    """'auto' or a known layout name; anything else is a usage error, not a bad record."""
    if layout != "auto" and layout not in LAYOUT_FIELDS:
        raise ValueError(f"unknown layout {layout!r}: expected auto or one of {', '.join(LAYOUTS)}")
    return layout


def normalise(rec: Any, layout: str = "auto") -> tuple[str, Messages]:
    """(layout, messages) of a record; `layout` 'auto' detects it, a name requires its field."""
    check_layout(layout)
    if layout == "auto":
        layout = detect_layout(rec)
    elif not isinstance(rec, dict):
        raise BadRecord("record is not a JSON object")
    elif rec.get(LAYOUT_FIELDS[layout]) is None:
        raise BadRecord(f"missing field: {LAYOUT_FIELDS[layout]} (layout {layout})")
    if layout == "alpaca":
        msgs = _alpaca(rec)
    elif layout == "sharegpt":
        msgs = read_turns(rec["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
    else:
        key = LAYOUT_FIELDS[layout]
        msgs = read_turns(rec[key], key, "role", "content", OPENAI_ROLES)
    if not any(m["role"] == "user" for m in msgs):
        raise BadRecord(f"no user turn: {LAYOUT_FIELDS[layout]}")
    return layout, msgs


def _text(v: Any, where: str) -> str:
    """A message content: a string, or OpenAI content parts of type text (joined)."""
    if isinstance(v, list):
        parts = []
        for j, p in enumerate(v):
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise BadRecord(f"content part not text: {where}[{j}]")
            parts.append(p["text"])
        v = "\n".join(parts)
    if not isinstance(v, str):
        raise BadRecord(f"content not a string: {where}")
    return v


def read_turns(turns: Any, key: str, role_key: str, text_key: str, roles: dict[str, str]) -> Messages:
    """The turns as messages. Well-formed turns (a known role spelled as the table has it, a
    non-blank string content) take a few dict lookups each; anything else goes through the checks
    of `read_turns_checked`, which give the same messages or name what is wrong."""
    if type(turns) is list:
        out: Messages = []
        try:
            for t in turns:
                text = t[text_key]
                if type(text) is not str or not text.strip():
                    break
                out.append({"role": roles[t[role_key]], "content": text})
            else:
                if out:
                    return out
        except (KeyError, TypeError):
            pass
    return read_turns_checked(turns, key, role_key, text_key, roles)


def read_turns_checked(turns: Any, key: str, role_key: str, text_key: str, roles: dict[str, str]) -> Messages:
    if not isinstance(turns, list):
        raise BadRecord(f"conversation not a list: {key}")
    if not turns:
        raise BadRecord(f"empty conversation: {key}")
    out: Messages = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise BadRecord(f"turn not an object: {key}[{i}]")
        who = t.get(role_key)
        if not isinstance(who, str):
            raise BadRecord(f"missing role: {key}[{i}].{role_key}")
        role = roles.get(who.strip().lower())
        if role is None:
            raise BadRecord(f"unknown role: {key}[{i}].{role_key} = {who!r} "
                            f"(expected one of {', '.join(roles)})")
        if t.get(text_key) is None:
            raise BadRecord(f"missing content: {key}[{i}].{text_key}")
        text = _text(t[text_key], f"{key}[{i}].{text_key}")
        if not text.strip():
            if role == "system":
                continue  # an empty system prompt says nothing; keeping it would only change the id
            raise BadRecord(f"empty content: {key}[{i}].{text_key}")
        out.append({"role": role, "content": text})
    return out


def _alpaca(rec: dict) -> Messages:
    """instruction (+ input) -> user, output -> assistant. Self-instruct seed tasks keep input and
    output in `instances`; as Stanford Alpaca's generator does, the first instance is used."""
    instruction = _text(rec["instruction"], "instruction")
    if not instruction.strip():
        raise BadRecord("empty content: instruction")
    src: dict = rec
    prefix = ""
    if rec.get("output") is None and rec.get("instances") is not None:
        inst = rec["instances"]
        if not isinstance(inst, list) or not inst or not isinstance(inst[0], dict):
            raise BadRecord("instances not a list of objects: instances")
        src, prefix = inst[0], "instances[0]."
    inp = src.get("input")
    inp = "" if inp is None else _text(inp, prefix + "input")
    if src.get("output") is None:
        raise BadRecord(f"missing content: {prefix}output")
    output = _text(src["output"], prefix + "output")
    if not output.strip():
        raise BadRecord(f"empty content: {prefix}output")
    user = instruction if not inp.strip() else f"{instruction}\n\n{inp}"
    msgs: Messages = []
    system = rec.get("system")
    if isinstance(system, str) and system.strip():
        msgs.append({"role": "system", "content": system})
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return msgs


def messages_json(messages: Messages) -> str:
    """The canonical JSON text of a normalised conversation (what the ingest table stores)."""
    return orjson.dumps(messages).decode()


def conversation_id(messages: Messages) -> str:
    """Stable id from content: sha256 of the normalised conversation as canonical JSON, 24 hex."""
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


class IdRule:
    """The pool's own id (`_id`, then `id`, or a dotted `id_field`) wins; otherwise the content hash.
    A named `id_field` that a record lacks is a reject: the user said where ids live."""

    def __init__(self, id_field: str | None = None) -> None:
        self.id_field = id_field
        self._spec = FieldSpec(id_field=id_field)
        if id_field:
            split_path(id_field)  # fail early on a malformed path

    def __call__(self, rec: dict, messages: Messages) -> str:
        if self.id_field is None and rec.get("_id") is None and rec.get("id") is None:
            return conversation_id(messages)
        return self._spec.record_id(rec)


def released_annotations(rec: dict) -> tuple[list[str] | None, float | None]:
    """Labels and score the record already carries in the released layout's fields (None if absent).
    Present but malformed is a BadRecord: a pool that says it is annotated must be annotated right."""
    fast = released_fast(rec)  # the common well-formed record, in a few lookups; same values
    if fast is not None:
        return fast[2], fast[1]
    ann = rec.get("annotation")
    if not isinstance(ann, dict):
        return None, None
    labels = None
    instag = ann.get("instag")
    if isinstance(instag, dict) and instag.get("content") is not None:
        labels = instag["content"]
        if not isinstance(labels, list) or not all(type(t) is str for t in labels):
            raise BadRecord(f"labels not a list of strings: {RELEASED_LABELS}")
    score = released_score(rec) if ann.get("deita") is not None else None
    return labels, score
