"""The compared methods by name, in the order they are run and shown.

Every method is one module with the same interface, so that a new method is that module and one line
in MODULES; `compare`, compare.json and the report take everything else from the module:

- NAME: the name users give (`--methods`, a job's `compare.methods`);
- PAPER: the paper it comes from, one line; SUMMARY: what it picks, one line;
- NEEDS: what it reads from the pool, a subset of NEEDS_KNOWN: `labels` and `scores` (every selectable
  record has them), `embeddings` (sample embeddings: the method is skipped without them) and `text`
  (the records' conversations, read only when a method needs them);
- OPTIONS: its options and their defaults (`--method-option NAME.KEY=VALUE`); a value is converted to
  the type of its default;
- select(pool, k, seed, **options) -> positions: the order of (up to) k positions of the pool.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from mig_ray.compare import car, deita, instag, kcenter, longest, mig, qdit, score, uniform

MODULES: tuple[ModuleType, ...] = (mig, uniform, score, instag, deita, kcenter, longest, car, qdit)
METHODS: dict[str, ModuleType] = {m.NAME: m for m in MODULES}
# run when no method is named (by `compare` and a job's compare step): all, each having met its targets
# (bench/results/compare-scale-2026-12-05-*.json: under 10 s at 50K x 384, qdit the slowest at 9.8 s)
DEFAULT = tuple(METHODS)
NEEDS_KNOWN = frozenset({"labels", "scores", "embeddings", "text"})


def parse_methods(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Method names from a comma list (or a list); ValueError names an unknown one."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in names if t not in METHODS]
    if bad:
        raise ValueError(f"unknown method {bad[0]!r} (methods: {', '.join(METHODS)})")
    if not names:
        raise ValueError(f"no method given (methods: {', '.join(METHODS)})")
    return list(dict.fromkeys(names))


def _convert(name: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}.{key}: {value!r} is not a {kind.__name__}") from None


def method_options(given: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every method's options: its defaults with the given values (converted to the defaults' types)
    over them; ValueError names an unknown method or option, or a value of the wrong type."""
    given = given or {}
    out = {name: dict(getattr(mod, "OPTIONS", {})) for name, mod in METHODS.items()}
    for name, opts in given.items():
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r} (methods: {', '.join(METHODS)})")
        for key, value in opts.items():
            if key not in out[name]:
                known = ", ".join(out[name]) or "none"
                raise ValueError(f"{name}: unknown option {key!r} (its options: {known})")
            out[name][key] = _convert(name, key, value, out[name][key])
        check = getattr(METHODS[name], "check_options", None)
        if check is not None:
            check(out[name])
    return out


def parse_method_options(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """`NAME.KEY=VALUE` items (the CLI's --method-option) as {name: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        name, dot, key = head.strip().partition(".")
        if not sep or not dot or not name or not key.strip():
            raise ValueError(f"{item!r} is not NAME.KEY=VALUE (e.g. qdit.alpha=0.7)")
        out.setdefault(name, {})[key.strip()] = value.strip()
    return out


def about(name: str) -> dict[str, Any]:
    """What compare.json and the report say of a method: its paper, summary and needs."""
    mod = METHODS[name]
    return {"paper": mod.PAPER, "summary": mod.SUMMARY, "needs": sorted(mod.NEEDS)}
