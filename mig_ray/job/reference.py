"""docs/job-file.md, generated from the job file's pydantic models and the annotators' option
models: every key with its type, default, bounds and description. A test fails when the file in the
repository differs from what this renders; `python -m mig_ray.job.reference > docs/job-file.md`
rewrites it."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mig_ray.job.annotators import SCORERS, TAGGERS, config_class
from mig_ray.job.jobfile import JobConfig, model_in

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def type_name(annotation: Any) -> str:
    """A reader's name of a field type: `str`, `int or null`, one of `target`, `source`; `mapping`."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        name = " or ".join(type_name(a) for a in args)
        return f"{name} or null" if len(args) < len(typing.get_args(annotation)) else name
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    name = getattr(annotation, "__name__", str(annotation))
    return {"Path": "path", "RemotePath": "URI"}.get(name, name)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default if field.default is not PydanticUndefined else field.default_factory()
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`".replace("None", "null").replace("True", "true").replace("False", "false")


def bounds_text(field: FieldInfo) -> str:
    return ", ".join(f"{op} {getattr(m, attr)}" for m in field.metadata for attr, op in _BOUNDS
                     if hasattr(m, attr))


def _table(model: type[BaseModel], prefix: str, out: list[str], sections: list[tuple[str, type]]) -> None:
    out += ["| key | type | default | bounds | what it is |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = model_in(field.annotation)
        if sub is not None:
            sections.append((key, sub))
        desc = field.description or ((sub.__doc__ or "").strip().split("\n\n")[0] if sub else "")
        desc = " ".join(desc.split()).replace("|", "\\|")
        out.append(f"| `{key}` | {type_name(field.annotation)} | {default_text(field)} | "
                   f"{bounds_text(field)} | {desc} |")
    out.append("")


def render() -> str:
    """The whole reference, as Markdown."""
    out = ["# Job file reference", "",
           "Generated from the job file's models by `python -m mig_ray.job.reference > docs/job-file.md`;",
           "a test fails when this file is stale. A job file is YAML read with `yaml.safe_load`; an unknown",
           "key, a wrong type or a value out of bounds stops `mig-ray run` with exit 2 before anything is",
           "written, and the error lists the keys allowed there. Paths are relative to the folder",
           "`mig-ray run` starts in; `bundled:NAME` names a file shipped in the package",
           "(`bundled:demo_pool.jsonl`, `bundled:valid_tags_tulu3.json`). The graph and selection options",
           "are the same as `mig-ray select`'s flags (one definition: `mig_ray/core/options.py`).", ""]
    sections: list[tuple[str, type]] = [("", JobConfig)]
    seen: set[str] = set()
    while sections:
        key, model = sections.pop(0)
        if key in seen:
            continue
        seen.add(key)
        title = f"`{key}`" if key else "Top level"
        out += [f"## {title}", ""]
        doc = " ".join((model.__doc__ or "").split())
        if doc and not doc.startswith("!!! abstract"):
            out += [doc, ""]
        found: list[tuple[str, type]] = []
        _table(model, f"{key}." if key else "", out, found)
        sections += found
    for section, registry in (("annotate.tagger", TAGGERS), ("annotate.scorer", SCORERS)):
        for kind in registry:
            model = config_class(registry, kind)
            out += [f"## `{section}.options` when `kind: {kind}`", ""]
            _table(model, f"{section}.options.", out, [])
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
