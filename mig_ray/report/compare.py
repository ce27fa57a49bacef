"""The comparison part of `mig-ray report`: information vs k for every method on one chart, the
metric table with small bars, the overlap between methods and a sample browser per method.

Reads only what `mig-ray compare` wrote: compare.json, the head of each <method>.manifest.jsonl
and samples.jsonl (the first user turns of the rows the browser carries)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import orjson

from mig_ray.report import browse, svg

COMPARE_FILE = "compare.json"
SAMPLES_FILE = "samples.jsonl"
METRICS = (("information", "information E(D)"), ("label_coverage", "label coverage"),
           ("mass_coverage", "label-mass coverage"), ("effective_labels", "effective labels"),
           ("mean_score", "mean score"), ("mean_labels", "labels per sample"), ("vendi", "Vendi score"))


def find_compare(path: Path) -> Path | None:
    """compare.json in `path` (a compare output directory) or in path/compare/ (a job's)."""
    path = Path(path)
    if path.is_file() and path.name == COMPARE_FILE:
        return path
    for where in (path, path / "compare"):
        if (where / COMPARE_FILE).is_file():
            return where / COMPARE_FILE
    return None


def _manifest(compare_path: Path, recorded: str) -> Path:
    """The manifest beside compare.json (the recorded path may be another machine's)."""
    local = compare_path.parent / Path(recorded).name
    return local if local.is_file() else Path(recorded)


def load(compare_path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(compare.json, browser rows per method)."""
    data = json.loads(compare_path.read_text(encoding="utf-8"))
    texts: dict[str, str] = {}
    samples = compare_path.parent / SAMPLES_FILE
    if samples.is_file():
        for line in samples.read_bytes().splitlines():
            if line.strip():
                r = orjson.loads(line)
                texts[str(r["id"])] = str(r.get("first_turn", ""))
    rows = {name: browse.rows_of(browse.read_head(_manifest(compare_path, m["manifest"])), texts)
            for name, m in data.get("methods", {}).items()}
    return data, rows


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:,.5g}" if isinstance(v, float) else escape(str(v))


def _papers(data: dict) -> str:
    """One line per method (run or skipped): what it picks and the paper it comes from, as compare.json
    recorded them from the method's module."""
    about = data.get("about") or {name: m for name, m in data.get("methods", {}).items() if "paper" in m}
    if not about:
        return ""
    items = "".join(f'<li data-method="{escape(name)}"><b>{escape(name)}</b>: '
                    f'{escape(str(a.get("summary", "")))} <i>({escape(str(a.get("paper", "")))})</i></li>'
                    for name, a in about.items())
    return f'<ul id="compare-papers" class="note">{items}</ul>'


def sections(data: dict, rows: dict[str, list[dict]]) -> list[str]:
    methods = data.get("methods", {})
    colours = {name: svg.METHOD_COLOURS[i % len(svg.METHOD_COLOURS)] for i, name in enumerate(methods)}
    out = []
    series = [(name, colours[name], m["curve"]["k"], m["curve"]["information"])
              for name, m in methods.items() if m.get("curve")]
    chart = svg.multi_line_chart("plot-compare-information", "Information E(D_k) of each method's first k",
                                 series, "k (samples, in each method's order)", "information E(D_k)")
    note = escape(data.get("notes", {}).get("information", ""))
    pool_n = data.get("counts", {}).get("selectable", 0)
    out.append('<section id="compare-information" class="wide"><h2>Information vs k, every method</h2>'
               f'{chart}<p class="note">{note}. k = {data.get("k", 0):,} from {pool_n:,} selectable records.'
               '</p></section>')
    metrics = list(METRICS)
    if any(m["metrics"].get("tokens") is not None for m in methods.values()):
        metrics.append(("tokens", "tokens"))  # a run under a budget: what each selection costs
    per_group = any(m["metrics"].get("groups") is not None for m in methods.values())
    head = ("<tr><th>method</th>" + "".join(f"<th>{escape(t)}</th>" for _, t in metrics)
            + ("<th>per group</th>" if per_group else "") + "<th>seconds</th></tr>")
    tops = {key: max((m["metrics"].get(key) or 0 for m in methods.values()), default=0)
            for key, _ in metrics}
    body = []
    for name, m in methods.items():
        v = m["metrics"]
        cells = "".join(f'<td data-metric="{key}">{_fmt(v.get(key))}<br>'
                        f'{svg.mini_bar(v.get(key) or 0, tops[key], colours[name])}</td>'
                        for key, _ in metrics)
        if per_group:
            groups = v.get("groups") or {}
            cells += ('<td data-metric="groups">' + "<br>".join(f"{escape(str(g))}: {c:,}" for g, c in
                                                               groups.items()) + "</td>")
        body.append(f'<tr data-method="{escape(name)}"><th>{escape(name)}</th>{cells}'
                    f'<td>{m["seconds"]:.2f}</td></tr>')
    for name, why in data.get("skipped", {}).items():
        body.append(f'<tr data-method="{escape(name)}" class="skipped"><th>{escape(name)}</th>'
                    f'<td colspan="{len(metrics) + 1 + per_group}">skipped: {escape(str(why))}</td></tr>')
    applied = (data.get("constraints") or {}).get("applied")
    limits_note = f" Quotas and budget: {escape(applied)}." if applied else ""
    vendi_on = next((m["metrics"].get("vendi_on") for m in methods.values()), None)
    out.append('<section id="compare-metrics" class="wide"><h2>Methods side by side</h2>'
               f'<table id="compare-table" class="compare">{head}{"".join(body)}</table>{_papers(data)}'
               '<p class="note">Bars: share of the best method on that measure. Label coverage: share of the '
               "pool's graph labels carried by a selected sample; label-mass coverage: share of the pool's "
               "label occurrences on covered labels; effective labels: exp of the entropy of the "
               f"selection's label counts. Vendi score on {escape(str(vendi_on))}.{limits_note}"
               "</p></section>")
    names = list(methods)
    overlap = data.get("overlap", {})
    grid = "<tr><th></th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"
    for a in names:
        cells = []
        for b in names:
            j = 1.0 if a == b else overlap.get(f"{a}|{b}", overlap.get(f"{b}|{a}"))
            cells.append(f"<td>{_fmt(j)}</td>")
        grid += f"<tr><th>{escape(a)}</th>{''.join(cells)}</tr>"
    out.append(f'<section id="compare-overlap"><h2>Overlap (Jaccard) between methods</h2>'
               f'<table id="overlap-table" class="compare">{grid}</table></section>')
    total = {name: int(m["metrics"]["samples"]) for name, m in methods.items()}
    out.append(browse.section(rows, total, "Gain: the increase of E(D) as the sample joins, in that "
                                           "method's order (the manifests also carry greedy_key, the key "
                                           "MIG's greedy ranks by)."))
    return out
