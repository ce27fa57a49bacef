"""Inputs generated from the program's own schemas (issue 22, point 2), shared by
tests/test_fuzz_inputs.py (a few hundred examples) and bench/fuzz_cli.py (ten minutes):

- job files: a small valid job with keys set, deleted or added, the keys and the values' types and
  bounds read from the job schema (`JobConfig`), plus values of the wrong type and odd strings;
- `select` and `compare` argument lists: each command's own parameters (names, types, choices,
  bounds) read from the CLI, with values in and out of range, flags repeated, unknown or missing.

Every case runs through `mig_ray.cli.main` in a work folder of its own; `outcome` says whether it
ended as a user should see it (exit 0, or exit 2 with one `error:` line) or as a bug."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import strategies as st
from pydantic import BaseModel

DATA = Path(__file__).resolve().parent / "data"
POOL = DATA / "mig_example_tulu3_10.jsonl"
BENCHMARK = DATA / "benchmark_prompts.jsonl"

ODD = ["", " ", "\t", "\n", "null", "~", "NaN", "-1", "0", "1e309", "ü", "日本語", "\u200b", "a\x00b",
       "x" * 300, "%s", "{x}", "${HOME}", "*", "?", "[", "s3://", "s3://no-such-bucket/x", ".", "pool.jsonl",
       "emb.npz", "out", "yes", "- a", "a: b", "~nosuchuser-mig/x"]
ODD_STRINGS = st.sampled_from(ODD) | st.text(max_size=12)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | ODD_STRINGS,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(ODD_STRINGS, inner, max_size=3), max_leaves=6)


UNKNOWN_USER = "~nosuchuser-mig"  # `~name` of no user stays a relative path: inside the folder


def local(text: str) -> str:
    """Odd strings stay inside the case's folder: no absolute paths, no home, no parent."""
    if text.startswith(UNKNOWN_USER):
        return text.replace("..", "__")
    return text.lstrip("/~").replace("..", "__")


def bounds(field) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in getattr(field, "metadata", ()):
        lo = getattr(m, "ge", getattr(m, "gt", lo))
        hi = getattr(m, "le", getattr(m, "lt", hi))
    return lo, hi


def numbers(kind: type, lo: float | None, hi: float | None) -> st.SearchStrategy:
    """Values of `kind` at and beside the bounds, and some anywhere."""
    edges = [x + d for x in (lo, hi) if x is not None for d in (-1, 0, 1)] + [0, 1, 2, -1]
    if kind is int:
        return st.sampled_from([int(x) for x in edges]) | st.integers(-10, 10**6)
    return (st.sampled_from([float(x) for x in edges] + [0.5, 1e-9, float("inf"), float("nan")])
            | st.floats(-3, 3))


def plausible(annotation: Any, field=None, light: bool = False) -> st.SearchStrategy:
    """Values of the annotation's type (in or beside its bounds); `light` leaves out what loads a
    model (the embedding and static taggers), so that a case runs in seconds."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        choices = [a for a in args if not (light and a in ("embedding", "static"))]
        return st.sampled_from(choices)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else plausible(a, field, light) for a in args])
    if origin is typing.Annotated:
        return plausible(args[0], field, light)
    if annotation is bool:
        return st.booleans()
    if annotation in (int, float):
        return numbers(annotation, *bounds(field))
    if annotation is str:
        return ODD_STRINGS.map(local)
    if origin is list:
        return st.lists(plausible(args[0], None, light), max_size=3)
    if origin is dict:
        return st.dictionaries(ODD_STRINGS, JSON_VALUES, max_size=2)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return st.just({})
    return JSON_VALUES


def schema_keys(model: type[BaseModel], prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every key path of the job schema with its field, nested models included."""
    from mig_ray.job.jobfile import model_in

    out = []
    for name, f in model.model_fields.items():
        out.append(((*prefix, name), f))
        if (sub := model_in(f.annotation)) is not None:
            out += schema_keys(sub, (*prefix, name))
    return out


HEAVY = {("compare", "embed_samples"), ("graph", "label_embeddings"), ("graph", "embedding_model"),
         ("ray", "address")}  # a model to load, or a cluster to join: left alone in light cases


def method_options() -> st.SearchStrategy:
    """compare.options: known methods with their own option names (values of any type, or numbers near
    the edges), and now and then an unknown method or option."""
    from mig_ray.compare.methods import METHODS

    names = st.sampled_from(list(METHODS)) | ODD_STRINGS
    known = sorted({k for m in METHODS.values() for k in getattr(m, "OPTIONS", {})})
    keys = st.sampled_from(known) | ODD_STRINGS
    values = numbers(float, 0.0, 1.0) | numbers(int, 1, None) | JSON_VALUES
    return st.dictionaries(names, st.dictionaries(keys, values, max_size=2), max_size=2)


def base_job(compare: bool) -> dict:
    """A valid job over the 10-record pool, labels and scores from the data, label vectors given."""
    job = {"name": "fuzz", "input": {"paths": ["pool.jsonl"]},
           "annotate": {"tagger": {"kind": "from-data"}, "scorer": {"kind": "field"}},
           "graph": {"label_embeddings": "emb.npz"}, "selection": {"n": 4}, "output": {"dir": "out"},
           "decontaminate": {"paths": ["bench.jsonl"]}, "progress": False}
    if compare:
        job["compare"] = {"methods": ["mig", "random", "score"]}
    return job


def key_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += [(*prefix, k), *key_paths(v, (*prefix, k))]
    return out


def set_key(data: dict, path: tuple, value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def delete_key(data: dict, path: tuple) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


@st.composite
def job_files(draw, light: bool = False, wrong: bool = True) -> dict:
    """A job mapping: the base job with keys set (a value of the key's type, or with `wrong` any
    JSON value), deleted, or added beside the schema's: 1 to 4 changes (to 2 without `wrong`)."""
    from mig_ray.job.jobfile import JobConfig

    data = base_job(compare=draw(st.booleans()))
    if not light:  # each annotator's own options are checked: start from any of them
        annotate = data["annotate"]
        annotate["tagger"]["kind"] = draw(st.sampled_from(["from-data", "embedding", "static", "vllm"]))
        annotate["scorer"]["kind"] = draw(st.sampled_from(["field", "constant", "vllm"]))
    keys = [(p, f) for p, f in schema_keys(JobConfig) if not (light and p in HEAVY)]
    kinds = ["set", "delete"] + (["wrong", "extra"] if wrong else [])
    for _ in range(draw(st.integers(1, 4 if wrong else 2))):
        kind = draw(st.sampled_from(kinds))
        if kind in ("set", "wrong"):
            path, field = draw(st.sampled_from(keys))
            if kind == "wrong":
                values = JSON_VALUES
            elif path == ("compare", "options"):
                values = method_options()
            else:
                values = plausible(field.annotation, field, light)
            set_key(data, path, draw(values))
        elif kind == "delete":
            present = [p for p in key_paths(data) if not (light and p in HEAVY)]
            if present:
                delete_key(data, draw(st.sampled_from(present)))
        else:
            folders = [()] + [p for p in key_paths(data) if isinstance(get(data, p), dict)]
            set_key(data, (*draw(st.sampled_from(folders)), draw(ODD_STRINGS)), draw(JSON_VALUES))
    return data


def get(data: dict, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def command_params(command: str) -> list:
    """The click parameters of `mig-ray <command>`, as the CLI defines them."""
    import typer

    from mig_ray.cli import app

    return list(typer.main.get_command(app).commands[command].params)


FILES = ["pool.jsonl", "emb.npz", "bench.jsonl", "garbage.bin", "empty.jsonl", "missing.jsonl", ".", "out"]
LIGHT_LEAVE_OUT = {"embedding_model", "ray_address", "embed_samples", "progress", "shards"}


def flag_values(param, light: bool) -> st.SearchStrategy:
    """Values for one option, by its type: paths among the case's files, numbers at the model's
    bounds, choices, odd strings; any string now and then (the wrong type)."""
    from mig_ray.core.options import SelectionOptions

    kind = param.bare_type()
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `int | None` and the like
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    field = SelectionOptions.model_fields.get(param.name)
    if typing.get_origin(kind) is typing.Literal:
        good = st.sampled_from(typing.get_args(kind))
    elif kind is Path:
        good = st.sampled_from(FILES) | ODD_STRINGS.map(local)
    elif kind in (int, float):
        good = numbers(kind, *bounds(field)).map(repr) if field is not None else st.integers(-5, 50).map(str)
    elif param.name == "methods":
        good = st.lists(st.sampled_from(["mig", "random", "score", "instag", "deita", "kcenter", "longest",
                                         "qdit", "car", "nope", ""]), max_size=4).map(",".join)
    elif param.name in ("quotas", "floors", "method_option"):
        good = st.tuples(ODD_STRINGS, st.sampled_from(["=", ".", "=="]), ODD_STRINGS | st.sampled_from(
            ["1", "0.5", "-1", "2", "nan"])).map("".join)
    else:
        good = ODD_STRINGS
    return good


@st.composite
def argument_lists(draw, command: str, light: bool = False, wrong: bool = True) -> list[str]:
    """`mig-ray <command>` with a valid base (pool, -n, the output, given label embeddings) and 1
    to 5 options added with values of their type; with `wrong`, also values of any type, a
    required option dropped, or an unknown flag."""
    out = ["-o", "out/sel.jsonl"] if command == "select" else ["-o", "out"]
    args = [command, "pool.jsonl", "-n", "3", *out, "--label-embeddings", "emb.npz", "--no-progress"]
    if command == "compare":
        args += ["--methods", "mig,random,score"]
    params = [p for p in command_params(command)
              if p.param_type_name == "option" and not (light and p.name in LIGHT_LEAVE_OUT)]
    kinds = ["option", "option", "wrong", "drop", "unknown"] if wrong else ["option"]
    for _ in range(draw(st.integers(1, 5 if wrong else 3))):
        kind = draw(st.sampled_from(kinds))
        if kind in ("option", "wrong"):
            p = draw(st.sampled_from(params))
            if p.is_flag:
                args.append(draw(st.sampled_from(p.opts + p.secondary_opts)))
            else:
                value = ODD_STRINGS.map(local) if kind == "wrong" else flag_values(p, light)
                args += [draw(st.sampled_from(p.opts)), draw(value)]
        elif kind == "drop":
            at = draw(st.sampled_from([1, 2, 4]))  # the pool, -n, -o: each with its value
            args = args[:at] + args[at + (1 if at == 1 else 2):]
        else:
            args += [draw(st.sampled_from(["--nope", "-x", "--n=", "--", "-"])), draw(ODD_STRINGS)]
    return args


def make_case_folder(folder: Path) -> Path:
    """The files a case may name: the pool, label vectors for its tags, a benchmark file, garbage."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(POOL, folder / "pool.jsonl")
    shutil.copy(BENCHMARK, folder / "bench.jsonl")
    tags = set()
    for line in POOL.read_text().splitlines():
        with contextlib.suppress(ValueError):  # the pool has a broken line, as real ones do
            tags |= set(json.loads(line)["annotation"]["instag"]["content"])
    vectors = np.random.default_rng(0).normal(size=(len(tags), 8))
    np.savez(folder / "emb.npz", labels=np.array(sorted(tags)), embeddings=vectors)
    (folder / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "empty.jsonl").write_bytes(b"")
    return folder


@dataclass
class Outcome:
    code: int | None
    err: str

    @property
    def bug(self) -> bool:
        """Exit 1 ('internal error'), another code, or an error that is not one `error:` line."""
        if self.code in (0, None):
            return "internal error" in self.err
        last = self.err.rstrip("\n").rsplit("\n", 1)[-1]
        return not (self.code == 2 and last.startswith("error: ") and "internal error" not in self.err)


def run_case(argv: list[str], folder: Path, job: dict | None = None) -> Outcome:
    """`mig-ray ARGV` in `folder` (with `job` written to job.yaml first), stdout and stderr caught."""
    from mig_ray.cli import main

    was = os.getcwd()
    err = io.StringIO()
    os.chdir(folder)
    try:
        if job is not None:
            Path("job.yaml").write_text(yaml.safe_dump(job, allow_unicode=True))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(was)
    return Outcome(code, err.getvalue())
