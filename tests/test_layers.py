"""The package's layering, read from the source: every `import` (lazy ones inside functions too)
goes down or sideways, never up; no two packages import each other, directly or round a circle;
no module imports another module's underscore names. The floors, ground first:

  0  core (the method), errors, storage, guard, runtime (Ray session, placement), bundled, metrics
  1  pools, annotate, embeddings, curate
  2  selection (select's config and driver, the sharded engine)
  3  report, then compare, then job
  4  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mig_ray"

FLOORS = {
    "mig_ray": 0, "mig_ray.core": 0, "mig_ray.errors": 0, "mig_ray.storage": 0, "mig_ray.guard": 0,
    "mig_ray.quarantine": 0,
    "mig_ray.runtime": 0, "mig_ray.bundled": 0, "mig_ray.metrics": 0,
    "mig_ray.pools": 1, "mig_ray.annotate": 1, "mig_ray.embeddings": 1, "mig_ray.curate": 1,
    "mig_ray.selection": 2,
    "mig_ray.report": 3, "mig_ray.compare": 3.1, "mig_ray.job": 3.2,
    "mig_ray.cli": 4, "mig_ray.__main__": 4, "mig_ray.demo": 4,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def unit(module: str) -> str:
    """The layering unit of a module: its subpackage, or the module itself at the package root."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) of every mig_ray import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mig_ray"):
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("mig_ray")]
    return out


def graph() -> dict[str, list[tuple[str, list[str], int]]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = graph()


def resolve(target: str, names: list[str]) -> list[str]:
    """`from pkg import mod` imports the module pkg.mod; anything else imports `target`."""
    subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
    return subs or [target]


def test_every_unit_has_a_floor():
    missing = sorted({unit(m) for m in MODULES} - set(FLOORS))
    assert not missing, f"give these a floor in FLOORS: {missing}"


def test_no_import_runs_back_up():
    up = [f"{m}:{line} imports {t} (floor {FLOORS[unit(t)]} above {FLOORS[unit(m)]})"
          for m, found in MODULES.items() for target, names, line in found
          for t in resolve(target, names) if FLOORS[unit(t)] > FLOORS[unit(m)]]
    assert not up, "\n".join(up)


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if colour.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in colour and (found := visit(m)):
                return found
        colour[n] = 2
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in colour and (found := visit(n)):
            return found
    return None


def test_no_circle_between_modules_or_packages():
    mods = {m: {t for target, names, _ in found for t in resolve(target, names) if t != m and t in MODULES}
            for m, found in MODULES.items()}
    assert _cycle(mods) is None, f"modules import each other round a circle: {_cycle(mods)}"
    units = {unit(m): set() for m in MODULES}
    for m, ts in mods.items():
        units[unit(m)] |= {unit(t) for t in ts if unit(t) != unit(m) and unit(t) != "mig_ray"}
    assert _cycle(units) is None, f"packages import each other round a circle: {_cycle(units)}"


def test_no_module_imports_another_modules_underscore_names():
    private = [f"{m}:{line} takes {n} from {target}" for m, found in MODULES.items()
               for target, names, line in found for n in names
               if n.startswith("_") and n not in ("__version__",)]
    assert not private, "\n".join(private)


@pytest.mark.parametrize("fault", ["up", "circle", "private"])
def test_the_checks_catch_what_they_claim(fault):
    """Each check above, on a small made-up graph with the fault planted."""
    mods = {"mig_ray.core.graph": [], "mig_ray.pools.ingest": [("mig_ray.core.graph", ["LabelGraph"], 1)]}
    if fault == "up":
        mods["mig_ray.core.graph"] = [("mig_ray.pools.ingest", ["ingest"], 3)]
        assert any(FLOORS[unit(t)] > FLOORS[unit(m)] for m, f in mods.items() for t, _, _ in f)
    elif fault == "circle":
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
        assert _cycle(edges) == ["a", "b", "c", "a"]
        assert _cycle({"a": {"b"}, "b": {"c"}}) is None
    else:
        mods["mig_ray.pools.ingest"][0][1].append("_kernel")
        assert any(n.startswith("_") for f in mods.values() for _, names, _ in f for n in names)
