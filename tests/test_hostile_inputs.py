"""Hostile inputs: broken pools, typos in a command, hostile job files, outputs aimed at inputs.

Every case runs the real `mig-ray` entry point in process (`main(argv)`) and checks the contract:
the exit code; one `error:` line naming the file (and line or key) and no traceback; every input
byte for byte as before; and the records accounted for (read = selectable + rejected, a rejects
row per rejected record, selected lines copied unchanged) or, on exit 2, no selection written.
`select` gets an .npz of label embeddings, so no model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from mig_ray.cli import main

LABELS = ["apple", "banana", "cherry", "date", "elder", "fig"]


def rec(i: int, labels: list[str], q: list | None = None, c: list | None = None, **extra) -> dict:
    return {"_id": f"r{i}", "dialogs": [{"role": "user", "content": f"question {i}"}],
            "annotation": {"instag": {"content": labels},
                           "deita": {"quality_scores": q or [2.0], "complexity_scores": c or [3.0]}},
            **extra}


def good_records(n: int = 8) -> list[dict]:
    return [rec(i, [LABELS[i % 6], LABELS[(i * 2 + 1) % 6]], [1.0 + i % 3], [2.0]) for i in range(n)]


def jsonl(records: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)


class Case:
    """A scenario in a fresh folder: the input files, the argv, what must come out."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.inputs: list[Path] = []
        self.pool = self.file("pool.jsonl", jsonl(good_records()))
        rng = np.random.default_rng(0)
        self.npz = tmp / "emb.npz"
        np.savez(self.npz, labels=np.array(LABELS), embeddings=rng.normal(size=(6, 8)).astype(np.float32))
        self.inputs.append(self.npz)
        self.out = tmp / "out" / "sel.jsonl"

    def file(self, name: str, data: bytes | str) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        self.inputs.append(p)
        return p

    def select(self, *extra, pool: Path | None = None, out: Path | None = None,
               npz: bool = True) -> list[str]:
        argv = ["select", str(pool or self.pool), "-n", "3", "-o", str(out or self.out), "--no-progress"]
        return argv + (["--label-embeddings", str(self.npz)] if npz else []) + [str(x) for x in extra]

    def digests(self) -> dict[str, str]:
        out = {}
        for p in self.inputs:
            files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
            for f in files:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "missing"
        return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def check_error(code: int, err: str, names: list[str]) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err  # the last line, and one line
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert len(lines[0]) < 1200, lines[0]
    return lines[0]


def check_accounting(case: Case, out: Path, rejected: int, reason: str | None = None) -> dict:
    summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
    c = summary["counts"]
    assert c["read"] == c["selectable"] + c["rejected"], c
    assert c["rejected"] == rejected, c
    rows = [orjson.loads(x) for x in out.with_name(out.stem + ".rejects.jsonl").read_bytes().splitlines()]
    assert len(rows) == rejected
    if reason is not None:
        assert any(r["reason"].startswith(reason) for r in rows), [r["reason"] for r in rows]
    if out.suffix == ".jsonl":
        inputs = {ln.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
                  for ln in case.pool.read_bytes().splitlines()}
        sel = out.read_bytes().splitlines()
        assert len(sel) == c["selected"] > 0
        assert all(ln.rstrip(b"\r") in inputs for ln in sel)
    return summary


# ------------------------------------------------------------------ select: refused before the read

def npz_case(**arrays) -> Callable[[Case], list[str]]:
    def make(case: Case) -> list[str]:
        np.savez(case.npz, **arrays)
        return case.select() + ["::", case.npz.name]
    return make


def raw_npz(data: bytes | Callable[[bytes], bytes]) -> Callable[[Case], list[str]]:
    def make(case: Case) -> list[str]:
        case.npz.write_bytes(data(case.npz.read_bytes()) if callable(data) else data)
        return case.select() + ["::", case.npz.name]
    return make


def _emb(rows: int = 6, fill: float | None = None, row: int = 2) -> np.ndarray:
    e = np.random.default_rng(1).normal(size=(rows, 8)).astype(np.float32)
    if fill is not None:
        e[row] = fill
    return e


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, _emb())
    return buf.getvalue()


def _link_sidecar(kind: str, suffix: str, target: str, how: str = "hard"):
    def make(case: Case) -> list[str]:
        case.out.parent.mkdir(parents=True, exist_ok=True)
        side = case.out.with_name(case.out.stem + suffix)
        src = getattr(case, target)
        os.link(src, side) if how == "hard" else side.symlink_to(src)
        return case.select() + ["::", side.name, kind]
    return make


def _tags(data: bytes):
    def make(case: Case) -> list[str]:
        tags = case.file("tags.txt", data)
        return case.select("--valid-tags", tags) + ["::", "tags.txt"]
    return make


def _prev(data: bytes):
    def make(case: Case) -> list[str]:
        prev = case.file("prev.manifest.jsonl", data)
        return case.select("--previous-manifest", prev) + ["::", "prev.manifest.jsonl"]
    return make


def _strict(case: Case) -> list[str]:
    case.pool.write_bytes(jsonl(good_records(4)) + b'{"_id": "x", oops\n' + jsonl(good_records(2)))
    return case.select("--strict") + ["::", "pool.jsonl:5"]


def _out_is_tags(case: Case) -> list[str]:
    tags = case.file("tags.jsonl", "\n".join(LABELS) + "\n")
    return case.select("--valid-tags", tags, out=tags) + ["::", "tags.jsonl", "valid tags"]


def _out_parent_is_file(case: Case) -> list[str]:
    return case.select(out=case.pool / "sel.jsonl") + ["::", "pool.jsonl"]


def _out_is_dir(case: Case) -> list[str]:
    (case.tmp / "outdir.jsonl").mkdir()
    return case.select(out=case.tmp / "outdir.jsonl") + ["::", "outdir.jsonl", "directory"]


def _out_symlink_to_pool(case: Case) -> list[str]:
    link = case.tmp / "alias.jsonl"
    link.symlink_to(case.pool)
    return case.select(out=link) + ["::", "alias.jsonl", "pool"]


def _summary_links_npz(case: Case) -> list[str]:
    case.out.parent.mkdir(parents=True, exist_ok=True)
    os.link(case.npz, case.out.with_name("sel.labels.json"))
    return case.select() + ["::", "sel.labels.json", "label embeddings"]


def _parquet_garbage(case: Case) -> list[str]:
    p = case.file("pool.parquet", b"PAR1 this is not parquet PAR1")
    return case.select(pool=p) + ["::", "pool.parquet", "Parquet"]


def _pool_dir(case: Case) -> list[str]:
    (case.tmp / "pooldir.jsonl").mkdir()
    return case.select(pool=case.tmp / "pooldir.jsonl") + ["::", "pooldir.jsonl"]


def _missing_label(case: Case) -> list[str]:
    np.savez(case.npz, labels=np.array(LABELS[:4]), embeddings=_emb(4))
    return case.select() + ["::", "emb.npz", "no embedding"]


REFUSED: dict[str, Callable[[Case], list[str]]] = {
    "pool missing": lambda c: c.select(pool=c.tmp / "nope.jsonl") + ["::", "nope.jsonl", "no such file"],
    "pool is a directory": _pool_dir,
    "pool with unknown suffix": lambda c: c.select(pool=c.file("pool.csv", b"a,b\n")) + ["::", "pool.csv"],
    "pool is garbage parquet": _parquet_garbage,
    "out names a directory": _out_is_dir,
    "out suffix unknown": lambda c: c.select(out=c.tmp / "sel.txt") + ["::", "sel.txt"],
    "out folder under a file": _out_parent_is_file,
    "out is the pool": lambda c: c.select(out=c.pool) + ["::", "pool.jsonl"],
    "out is a symlink to the pool": _out_symlink_to_pool,
    "out is the valid-tags file": _out_is_tags,
    "rejects sidecar hard-linked to pool": _link_sidecar("pool", ".rejects.jsonl", "pool"),
    "manifest sidecar symlinked to pool": _link_sidecar("pool", ".manifest.jsonl", "pool", "sym"),
    "summary sidecar hard-linked to npz": _link_sidecar("label embeddings", ".summary.json", "npz"),
    "labels sidecar hard-linked to npz": _summary_links_npz,
    "npz truncated": raw_npz(lambda b: b[: len(b) // 2]),
    "npz empty file": raw_npz(b""),
    "npz is text": raw_npz(b"labels,embeddings\napple,0.1\n"),
    "npz is a bare .npy": raw_npz(lambda b: _npy_bytes()),
    "npz NaN row": npz_case(labels=np.array(LABELS), embeddings=_emb(fill=np.nan)),
    "npz inf row": npz_case(labels=np.array(LABELS), embeddings=_emb(fill=np.inf, row=5)),
    "npz all-zero row": npz_case(labels=np.array(LABELS), embeddings=_emb(fill=0.0, row=0)),
    "npz string embeddings": npz_case(labels=np.array(LABELS), embeddings=np.array([["x"] * 8] * 6)),
    "npz object embeddings": npz_case(labels=np.array(LABELS),
                                      embeddings=np.array([[1.0], "x"] * 3, dtype=object)),
    "npz numeric labels": npz_case(labels=np.arange(6), embeddings=_emb()),
    "npz 2-d labels": npz_case(labels=np.array(LABELS).reshape(2, 3), embeddings=_emb()),
    "npz missing embeddings": npz_case(labels=np.array(LABELS)),
    "npz shape mismatch": npz_case(labels=np.array(LABELS), embeddings=_emb(5)),
    "npz 1-d embeddings": npz_case(labels=np.array(LABELS), embeddings=np.ones(6, np.float32)),
    "npz duplicate label": npz_case(labels=np.array(LABELS[:5] + ["apple"]), embeddings=_emb()),
    "npz lacks a pool label": _missing_label,
    "npz path missing": lambda c: c.select("--label-embeddings", c.tmp / "no.npz", npz=False)
    + ["::", "no.npz"],
    "labels-field a..b": lambda c: c.select("--labels-field", "a..b") + ["::", "--labels-field", "a..b"],
    "score-field leading dot": lambda c: c.select("--score-field", ".s") + ["::", "--score-field"],
    "id-field trailing dot": lambda c: c.select("--id-field", "meta.") + ["::", "--id-field"],
    "labels-field empty": lambda c: c.select("--labels-field", "") + ["::", "--labels-field"],
    "n zero": lambda c: c.select("-n", "0") + ["::", "--n"],
    "n not a number": lambda c: c.select("-n", "ten") + ["::", "-n"],
    "phi misspelt": lambda c: c.select("--phi", "power") + ["::", "--phi", "power"],
    "sim threshold above 1": lambda c: c.select("--sim-threshold", "1.5") + ["::", "--sim-threshold"],
    "unknown option": lambda c: c.select("--frobnicate") + ["::", "--frobnicate"],
    "valid tags not UTF-8": _tags(b"apple\n\xff\xfe banana\n"),
    "valid tags empty": _tags(b"\n \n"),
    "valid tags missing": lambda c: c.select("--valid-tags", c.tmp / "none.json") + ["::", "none.json"],
    "previous manifest not JSON": _prev(b'{"rank": 1}\nnot json\n'),
    "previous manifest bad score": _prev(b'{"labels": ["apple"], "score": -1}\n'),
    "previous manifest missing": lambda c: c.select("--previous-manifest", c.tmp / "p.jsonl")
    + ["::", "p.jsonl"],
    "strict stops at a bad line": _strict,
}


FOUND_IN_THE_READ = {"npz lacks a pool label", "strict stops at a bad line"}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_select_refused(kind, tmp_path, capsys):
    case = Case(tmp_path)
    made = REFUSED[kind](case)
    argv, names = made[:made.index("::")], made[made.index("::") + 1:]
    before, paths = case.digests(), set(tmp_path.rglob("*"))
    code, err = run_cli(argv, capsys)
    check_error(code, err, names)
    assert case.digests() == before
    assert not case.out.exists()
    if kind not in FOUND_IN_THE_READ:  # refused before anything was created or opened for writing
        assert set(tmp_path.rglob("*")) == paths


# ------------------------------------------------------------------ select: bad records quarantined

def _deep(depth: int) -> bytes:
    return b'{"l": ["apple"], "s": 2.0, "x": ' + b"[" * depth + b"]" * depth + b"}"


QUARANTINED: dict[str, tuple[list, int, str | None, list[str]]] = {
    # kind: (pool lines, rejected, reason of one reject, extra argv)
    "negative turn scores": ([*good_records(5), rec(9, ["fig"], [-2.0], [-3.0])], 1, "score negative", []),
    "one negative turn of two": ([*good_records(5), rec(9, ["fig"], [4.0, -1.0], [2.0, 2.0])], 1,
                                 "score negative", []),
    "id 7 and '7'": ([*good_records(5), {**rec(0, ["fig"]), "_id": 7}, {**rec(0, ["date"]), "_id": "7"}], 1,
                     "duplicate id", []),
    "bool id": ([*good_records(5), {**rec(0, ["fig"]), "_id": True}], 1, "id not a string", []),
    "float id": ([*good_records(5), {**rec(0, ["fig"]), "_id": 1.5}], 1, "id not a string", []),
    "BOM on a later line": ([*good_records(3), b"\xef\xbb\xbf" + orjson.dumps(rec(9, ["fig"]))], 1,
                            "invalid JSON", []),
    "invalid UTF-8 in a line": ([*good_records(3), b'{"_id": "\xff\xfe", "x": 1}'], 1, "invalid JSON", []),
    "NaN literal": ([*good_records(3), b'{"_id": "n", "annotation": {"deita": NaN}}'], 1, "invalid JSON", []),
    "labels not strings": ([*good_records(3), rec(9, ["fig", 3])], 1, "labels not a list of strings", []),
    "turn counts differ": ([*good_records(3), rec(9, ["fig"], [1.0, 2.0], [1.0])], 1,
                           "score not numeric", []),
    "a JSON array line": ([*good_records(3), b"[1, 2, 3]"], 1, "record is not a JSON object", []),
    "score a string": ([{"l": ["apple"], "s": 2}, {"l": ["fig"], "s": "5"}, {"l": ["date"], "s": 1.5}], 1,
                       "score not numeric", ["--labels-field", "l", "--score-field", "s"]),
    "record nested 300 deep without id": ([{"l": ["apple"], "s": 2}, {"l": ["fig"], "s": 1}, _deep(300)],
                                          1, "record not hashable", ["--labels-field", "l", "--score-field",
                                                                     "s"]),
    "record nested 2000 deep": ([{"l": ["apple"], "s": 2}, {"l": ["fig"], "s": 1}, _deep(2000)], 1,
                                "invalid JSON", ["--labels-field", "l", "--score-field", "s"]),
    "huge score": ([*good_records(3), rec(9, ["fig"], [1e308], [1e308])], 1, "score not finite", []),
}


@pytest.mark.parametrize("kind", list(QUARANTINED))
def test_select_quarantines(kind, tmp_path, capsys):
    lines, rejected, reason, extra = QUARANTINED[kind]
    case = Case(tmp_path)
    case.pool.write_bytes(jsonl(lines))
    before = case.digests()
    code, err = run_cli(case.select(*extra), capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert case.digests() == before
    check_accounting(case, case.out, rejected, reason)


def test_bom_at_file_start_is_not_part_of_the_record(tmp_path, capsys):
    """A BOM before the first record is a file marker: the record is selectable, and the selection
    and the copied lines are those of the same pool without the BOM."""
    plain = Case(tmp_path / "plain")
    bom = Case(tmp_path / "bom")
    bom.pool.write_bytes(b"\xef\xbb\xbf" + plain.pool.read_bytes())
    for case in (plain, bom):
        before = case.digests()
        code, err = run_cli(case.select("-n", "8"), capsys)
        assert code == 0, err
        assert case.digests() == before
        check_accounting(case, case.out, 0)
    assert bom.out.read_bytes() == plain.out.read_bytes()
    assert b"\xef\xbb\xbf" not in bom.out.read_bytes()


def test_crlf_blank_lines_and_no_final_newline(tmp_path, capsys):
    case = Case(tmp_path)
    recs = good_records(6)
    case.pool.write_bytes(b"\r\n".join(orjson.dumps(r) for r in recs[:3]) + b"\r\n\r\n  \n"
                          + b"\n".join(orjson.dumps(r) for r in recs[3:]))
    before = case.digests()
    code, err = run_cli(case.select("-n", "6"), capsys)
    assert code == 0, err
    assert case.digests() == before
    summary = check_accounting(case, case.out, 0)
    assert summary["counts"]["read"] == 6 and summary["counts"]["blank_lines"] == 2


def test_parquet_output_of_mixed_records(tmp_path, capsys):
    """Records whose fields change type, and empty objects in every record, still write as Parquet;
    a field without a common type holds each value's JSON text."""
    case = Case(tmp_path)
    recs = good_records(6)
    for i, r in enumerate(recs):
        r["meta"] = {}
        r["source"] = i if i % 2 else f"s{i}"
        r["extra"] = {"n": i} if i % 3 else {"n": f"{i}", "deep": {}}
        if i == 4:
            r["only_here"] = [1.5, 2]
    case.pool.write_bytes(jsonl(recs))
    out = tmp_path / "o" / "sel.parquet"
    before = case.digests()
    code, err = run_cli(case.select("-n", "6", out=out), capsys)
    assert code == 0, err
    assert case.digests() == before
    check_accounting(case, out, 0)
    table = pq.read_table(out)
    rows = table.to_pylist()
    by_id = {r["_id"]: r for r in recs}
    assert len(rows) == 6
    json_cols = json.loads(table.schema.metadata[b"mig_ray.json_columns"])
    assert set(json_cols) >= {"meta", "source", "extra"}
    for row in rows:
        orig = by_id[row["_id"]]
        for k in json_cols:
            assert (None if k not in orig else orjson.loads(row[k])) == orig.get(k)
        assert row["annotation"]["instag"]["content"] == orig["annotation"]["instag"]["content"]
    assert [r.get("only_here") for r in rows].count(None) == 5


def test_empty_pool_exits_2_or_selects_nothing(tmp_path, capsys):
    case = Case(tmp_path)
    case.pool.write_bytes(b"\n\n")
    before = case.digests()
    code, err = run_cli(case.select(), capsys)
    assert "Traceback" not in err
    assert case.digests() == before
    if code == 0:
        assert json.loads(case.out.with_name("sel.summary.json").read_text())["counts"]["selected"] == 0
    else:
        check_error(code, err, ["pool.jsonl"])


# ------------------------------------------------------------------ run: job files refused at load

def job_yaml(pool: Path, out: Path, extra: str = "") -> str:
    return (f"input: {{paths: [{json.dumps(str(pool))}]}}\n"
            "annotate: {tagger: {kind: from-data}, scorer: {kind: field}}\n"
            f"selection: {{n: 3}}\noutput: {{dir: {json.dumps(str(out))}}}\n{extra}")


def _bomb(case: Case) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return job_yaml(case.pool, case.tmp / "jobout", "x:\n  " + "\n  ".join(lines) + "\n")


def _bomb_in_options(case: Case) -> str:
    lines = ['  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return ("defs:\n" + "\n".join(lines) + "\n"
            + job_yaml(case.pool, case.tmp / "jobout").replace(
                "tagger: {kind: from-data}", "tagger: {kind: embedding, options: {vocabulary: *a8}}"))


def _glob_matches_out(case: Case) -> str:
    (case.tmp / "runs" / "a").mkdir(parents=True)
    (case.tmp / "runs" / "a" / "p.jsonl").write_bytes(case.pool.read_bytes())
    case.inputs.append(case.tmp / "runs")
    return (f"input: {{paths: [{json.dumps(str(case.tmp / 'runs' / '*' / '*.jsonl'))}]}}\n"
            "selection: {n: 3}\n"
            f"output: {{dir: {json.dumps(str(case.tmp / 'runs' / 'out'))}}}\n")


def _huge_value(case: Case) -> str:
    return job_yaml(case.pool, case.tmp / "jobout").replace("selection: {n: 3}",
                                                            "selection: {n: " + "9" * 50_000 + "x}")


JOBS: dict[str, tuple[Callable[[Case], str | bytes], list[str]]] = {
    "alias bomb": (_bomb, ["job.yaml", "aliases"]),
    "alias bomb in tagger options": (_bomb_in_options, ["job.yaml", "aliases"]),
    "not UTF-8": (lambda c: job_yaml(c.pool, c.tmp / "o").encode() + b"# caf\xe9\n", ["job.yaml:5", "UTF-8"]),
    "nested 5000 deep": (lambda c: job_yaml(c.pool, c.tmp / "o") + "x: " + "[" * 5000 + "]" * 5000 + "\n",
                         ["job.yaml"]),
    "self-referencing alias": (lambda c: job_yaml(c.pool, c.tmp / "o") + "x: &r [*r, *r]\n", ["job.yaml"]),
    "output dir matches input glob": (_glob_matches_out, ["job.yaml", "glob"]),
    "output dir is the pool": (lambda c: job_yaml(c.pool, c.pool), ["job.yaml", "output.dir"]),
    "huge invalid value": (_huge_value, ["job.yaml", "selection.n"]),
    "top level is a list": (lambda c: "- a\n- b\n", ["job.yaml", "mapping"]),
    "unknown key with a long name": (lambda c: job_yaml(c.pool, c.tmp / "o", "k" * 1000 + ": 1\n"),
                                     ["job.yaml", "unknown key"]),
    "tab-indented YAML": (lambda c: job_yaml(c.pool, c.tmp / "o") + "graph:\n\tsim_threshold: 0.5\n",
                          ["job.yaml:"]),
    "missing pool": (lambda c: job_yaml(c.tmp / "gone.jsonl", c.tmp / "o"), ["job.yaml", "gone.jsonl"]),
    "valid tags not a file": (lambda c: job_yaml(c.pool, c.tmp / "o", f"graph: {{valid_tags: {c.tmp}}}\n"),
                              ["job.yaml", "graph.valid_tags"]),
    "scalar where a mapping goes, with -o": (lambda c: "output: 5\ninput: {paths: [x]}\nselection: {n: 1}\n",
                                             ["job.yaml", "output"]),
}


@pytest.mark.parametrize("kind", list(JOBS))
def test_run_refuses_job_file(kind, tmp_path, capsys):
    case = Case(tmp_path)
    make, names = JOBS[kind]
    job = case.file("job.yaml", make(case))
    before = case.digests()
    argv = ["run", str(job), "--no-progress"] + (["-o", str(tmp_path / "o2")] if "-o" in kind else [])
    code, err = run_cli(argv, capsys)
    check_error(code, err, names)
    assert case.digests() == before
    assert not any((tmp_path / d).exists() for d in ("jobout", "o", "o2", "runs/out"))


def test_run_refuses_output_dir_holding_a_link_to_an_input(tmp_path, capsys):
    """A hard link to the pool inside output.dir, under a name the job writes: refused before any
    write (and before Ray starts), the pool unchanged."""
    case = Case(tmp_path)
    out = tmp_path / "jobout"
    out.mkdir()
    os.link(case.pool, out / "selected.jsonl")
    job = case.file("job.yaml", job_yaml(case.pool, out))
    before = case.digests()
    code, err = run_cli(["run", str(job), "--no-progress"], capsys)
    check_error(code, err, ["job.yaml", "selected.jsonl", "pool.jsonl"])
    assert case.digests() == before
    assert sorted(p.name for p in out.iterdir()) == ["selected.jsonl"]


def test_run_refuses_job_file_linked_into_output_dir(tmp_path, capsys):
    case = Case(tmp_path)
    out = tmp_path / "jobout"
    out.mkdir()
    job = case.file("job.yaml", job_yaml(case.pool, out))
    os.link(job, out / "job.resolved.yaml")
    before = case.digests()
    code, err = run_cli(["run", str(job), "--no-progress"], capsys)
    check_error(code, err, ["job.resolved.yaml", "job file"])
    assert case.digests() == before


# ------------------------------------------------------------------ one rule in select and run

def test_select_and_run_apply_one_rule(tmp_path, ray_address, capsys):
    """The same bytes through `select` and through the job's ingest (what `run` reads with):
    a BOM before the first record is stripped, a BOM before a later one is invalid JSON, a
    negative turn score (-2 x -3) is rejected, and `_id` 7 and "7" are one id (the later a
    duplicate). Both accept the same ids and reject the same lines for the same reasons."""
    from mig_ray.pools.ingest import ingest

    case = Case(tmp_path)
    recs = good_records(6)
    lines = [b"\xef\xbb\xbf" + orjson.dumps(recs[0]), *recs[1:4],
             rec(20, ["fig"], [-2.0], [-3.0]), {**recs[4], "_id": 7}, {**recs[5], "_id": "7"},
             b"\xef\xbb\xbf" + orjson.dumps(rec(21, ["date"]))]
    case.pool.write_bytes(jsonl(lines))
    before = case.digests()
    code, err = run_cli(case.select("-n", "50"), capsys)
    assert code == 0, err
    check_accounting(case, case.out, 3)
    sel_rejects = {r["line"]: r["reason"].split(":")[0] for r in map(
        orjson.loads, case.out.with_name("sel.rejects.jsonl").read_bytes().splitlines())}
    manifest = case.out.with_name("sel.manifest.jsonl").read_bytes().splitlines()
    sel_ids = {orjson.loads(x)["id"] for x in manifest}

    res = ingest([case.pool], tmp_path / "ing" / "parts", rejects_path=tmp_path / "ing" / "rejects.jsonl",
                 progress=False)
    run_rejects = {r["line"]: r["reason"].split(":")[0] for r in map(
        orjson.loads, (tmp_path / "ing" / "rejects.jsonl").read_bytes().splitlines())}
    run_ids = set(pq.read_table(tmp_path / "ing" / "parts", columns=["id"]).column("id").to_pylist())
    assert case.digests() == before
    assert sel_rejects == run_rejects == {5: "score negative", 7: "duplicate id", 8: "invalid JSON"}
    assert sel_ids == run_ids == {"r0", "r1", "r2", "r3", "7"}
    assert res.read == 8 and res.accepted == 5 and res.rejected == 3


def test_report_never_overwrites_the_selection_it_reads(tmp_path, capsys):
    """`mig-ray report` writes summary.json: aimed (by a hard link) at the selection's own summary,
    or at a folder under a file, it is refused before writing."""
    case = Case(tmp_path)
    code, err = run_cli(case.select(), capsys)
    assert code == 0, err
    case.inputs += [case.out.parent]  # the selection is the report's input now
    linked = tmp_path / "rep"
    linked.mkdir()
    os.link(case.out.with_name("sel.summary.json"), linked / "summary.json")
    for out_dir, names in ((linked, ["summary.json", "selection summary"]),
                           (case.pool / "rep", ["pool.jsonl"])):
        before = case.digests()
        code, err = run_cli(["report", str(case.out), "-o", str(out_dir)], capsys)
        check_error(code, err, names)
        assert case.digests() == before
        assert not (linked / "report.html").exists()
