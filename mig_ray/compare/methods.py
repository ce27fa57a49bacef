"""The compared methods by name, in the order they are run and shown."""

from __future__ import annotations

from types import ModuleType

from mig_ray.compare import deita, instag, kcenter, mig, score, uniform

METHODS: dict[str, ModuleType] = {m.NAME: m for m in (mig, uniform, score, instag, deita, kcenter)}
DEFAULT = tuple(METHODS)


def parse_methods(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Method names from a comma list (or a list); ValueError names an unknown one."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in names if t not in METHODS]
    if bad:
        raise ValueError(f"unknown method {bad[0]!r} (methods: {', '.join(METHODS)})")
    if not names:
        raise ValueError(f"no method given (methods: {', '.join(METHODS)})")
    return list(dict.fromkeys(names))
