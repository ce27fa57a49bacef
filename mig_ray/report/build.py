"""Turn a selection's outputs into report.html (self-contained) and summary.json (its numbers).

Reads only the small sidecars a selection writes (<stem>.summary.json and <stem>.labels.json),
never the pool or the selected records, so a report of a 10^8-sample run is instant.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from mig_ray import __version__
from mig_ray.errors import ReportError
from mig_ray.guard import clip
from mig_ray.report import svg

TOP_LABELS = 15
BAR_LABELS = 25
SCATTER_LABELS = 5000  # one SVG dot each: keeps the page a few MB at most
SUMMARY_SUFFIX = ".summary.json"
JOB_SELECTION_DIRS = ("select", "selection")  # where `mig-ray run` keeps its selection stage


def find_summary(path: Path) -> tuple[Path, Path]:
    """The selection summary behind `path` and the default report directory.

    `path` is a `select` output (OUT or its <stem>.summary.json), a directory holding one
    `*.summary.json` (report beside it as <stem>.report/), or a job output directory whose
    selection is in select/ or selection/ (report in OUTDIR/report/).
    """
    path = Path(path)
    if path.is_dir():
        places = [(path, None)] + [(path / d, path / "report") for d in JOB_SELECTION_DIRS]
        for where, report_dir in places:
            found = sorted(where.glob("*" + SUMMARY_SUFFIX)) if where.is_dir() else []
            if len(found) > 1:
                raise ReportError(f"{where} holds several selections ({', '.join(p.name for p in found)}): "
                                  "name one of them")
            if found:
                return found[0], report_dir or _beside(found[0])
        raise ReportError(f"no *{SUMMARY_SUFFIX} in {path} or its {' or '.join(JOB_SELECTION_DIRS)}/: "
                          "is it a selection's or a job's output directory?")
    if path.name.endswith(SUMMARY_SUFFIX):
        summary = path
    else:
        summary = path.with_name(path.with_suffix("").name + SUMMARY_SUFFIX)
    if not summary.is_file():
        raise ReportError(f"{summary} does not exist: give a selection output (OUT, its {SUMMARY_SUFFIX}) "
                          "or a job output directory")
    return summary, _beside(summary)


def _beside(summary: Path) -> Path:
    return summary.with_name(summary.name[: -len(SUMMARY_SUFFIX)] + ".report")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read it as JSON ({clip(str(e), 200)})") from e


def _labels_path(summary_path: Path, summary: dict) -> Path | None:
    """<stem>.labels.json beside the summary (outputs may hold paths of another machine)."""
    local = summary_path.with_name(summary_path.name[: -len(SUMMARY_SUFFIX)] + ".labels.json")
    if local.is_file():
        return local
    recorded = summary.get("outputs", {}).get("labels")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def _label_rows(labels: dict, n_pool: int, n_selected: int) -> list[dict]:
    rows = []
    for name, p, s in zip(labels["labels"], labels["pool"], labels["selected"], strict=True):
        rows.append({"label": name, "pool": int(p), "selected": int(s),
                     "pool_share": p / n_pool if n_pool else 0.0,
                     "selection_share": s / n_selected if n_selected else 0.0,
                     "selected_of_pool": s / p if p else 0.0})
    return rows


def _job_diff(summary_path: Path) -> dict | None:
    """The nightly diff of the job whose selection this is (OUTDIR/summary.json `diff`), if any."""
    if summary_path.parent.name not in JOB_SELECTION_DIRS:
        return None
    job = summary_path.parent.parent / "summary.json"
    if not job.is_file():
        return None
    diff = _load_json(job).get("diff")
    if not isinstance(diff, dict):
        return None
    return {"previous_selected": diff.get("previous_selected"), "selected": diff.get("selected"),
            "added": len(diff.get("added", [])), "dropped": len(diff.get("dropped", [])),
            "kept": diff.get("kept"), "information": diff.get("information", {})}


def report_numbers(summary: dict, labels: dict | None, source: Path, diff: dict | None = None) -> dict:
    """Everything the page shows, as plain JSON (written as the report's summary.json)."""
    counts = summary.get("counts", {})
    n_pool, n_sel = int(counts.get("selectable", 0)), int(counts.get("selected", 0))
    extra = summary.get("report", {})
    info = dict(summary.get("information", {}))
    curve = extra.get("information_curve")
    if curve and len(curve["k"]) > 1:
        e0, ek = curve["information"][0], curve["information"][-1]
        half = next((k for k, e in zip(curve["k"], curve["information"], strict=True)
                     if e - e0 >= 0.5 * (ek - e0)), None)
        info["k_for_half_gain"] = half
    out: dict[str, Any] = {
        "mig_ray_version": __version__,
        "source": str(source),
        "counts": counts,
        "information": info,
        "information_curve": curve,
        "graph": summary.get("graph", {}),
        "method": {k: summary.get("config", {}).get(k) for k in (
            "embedding_model", "label_embeddings", "sim_threshold", "target_degree", "propagation",
            "prop_weight", "phi", "phi_a", "phi_b", "phi_alpha", "norm", "gain", "valid_tags")},
        "engine": summary.get("greedy", {}).get("engine"),
        "approximate": summary.get("approximate"),
        "scores": extra.get("scores"),
        "labels": None,
        "diff": diff,
        "constraints": summary.get("constraints"),
    }
    if labels is not None:
        rows = _label_rows(labels, n_pool, n_sel)
        in_pool = [r for r in rows if r["pool"] > 0]
        most = sorted(in_pool, key=lambda r: (-r["selected"], -r["pool"], r["label"]))[:TOP_LABELS]
        least = sorted(in_pool, key=lambda r: (r["selected_of_pool"], -r["pool"], r["label"]))[:TOP_LABELS]
        frequent = sorted(in_pool, key=lambda r: (-r["pool"], r["label"]))[:BAR_LABELS]
        covered = sum(1 for r in rows if r["selected"] > 0)
        out["labels"] = {"nodes": len(rows), "in_pool": len(in_pool), "covered_by_selection": covered,
                         "uncovered": len(in_pool) - covered,
                         "coverage": covered / len(in_pool) if in_pool else None,
                         "most_covered": most, "least_covered": least, "most_frequent_in_pool": frequent}
    return out


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.6g}"
    return escape(str(v))


def _table(ident: str, rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{_num(v)}</td></tr>" for k, v in rows)
    return f'<table id="{ident}" class="kv">{body}</table>'


def _label_table(ident: str, rows: list[dict]) -> str:
    head = ("<tr><th>label</th><th>pool samples</th><th>selected samples</th><th>% of pool carriers "
            "selected</th><th>share of selection</th></tr>")
    body = "".join(f"<tr><td>{escape(r['label'])}</td><td>{r['pool']:,}</td><td>{r['selected']:,}</td>"
                   f"<td>{100 * r['selected_of_pool']:.2f}%</td>"
                   f"<td>{100 * r['selection_share']:.2f}%</td></tr>" for r in rows)
    return f'<table id="{ident}" class="labels">{head}{body}</table>'


def constraints_body(c: dict) -> str:
    """Per group: pool and selected counts and costs against the cap (and the floor, when a group has
    one); the budget used; which of the two greedies under a budget was kept, with both informations."""
    floors = any(r.get("floor") for r in (c.get("groups") or {}).values())  # a floor column when any
    head = ("<tr><th>group</th><th>pool</th><th>selected</th><th>cap</th><th>pool cost</th>"
            "<th>selected cost</th>" + ("<th>floor</th>" if floors else "") + "</tr>")
    body = "".join(f"<tr><td>{escape(str(g))}</td><td>{_num(r.get('pool'))}</td>"
                   f"<td>{_num(r.get('selected'))}</td>"
                   f"<td>{_num(r.get('cap')) if r.get('cap') is not None else 'none'}</td>"
                   f"<td>{_num(r.get('pool_cost'))}</td><td>{_num(r.get('selected_cost'))}</td>"
                   + (f"<td>{_num(r.get('floor') or 0)}</td>" if floors else "") + "</tr>"
                   for g, r in (c.get("groups") or {}).items())
    budget = c.get("budget")
    rows = [("budget", budget if budget is not None else "none"), ("cost used", c.get("used"))]
    greedy = c.get("greedy") or {}
    if greedy.get("greedy"):
        rows.append(("greedy kept", f"{greedy['greedy']} ({greedy.get('why', '')})"))
        rows += [(f"information, {k} greedy", v) for k, v in (greedy.get("information") or {}).items()]
    groups = f'<table id="constraint-groups" class="labels">{head}{body}</table>'
    return groups + _table("constraint-stats", rows)


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>{body}</section>'


def _missing(what: str) -> str:
    return (f'<p class="missing">{escape(what)} is not recorded in this selection summary (written by an '
            "older mig_ray): re-run the selection to get it.</p>")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:0;
background:#f8fafc}
main{max-width:1340px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 8px}
.meta{color:#6b7280;margin:0 0 16px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px}
.card .v{font-size:20px;font-weight:600}.card .k{color:#6b7280;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(640px,1fr));gap:16px;align-items:start}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px;overflow-x:auto}
svg.plot{max-width:100%;height:auto}svg text.tick{font-size:11px;fill:#374151}
svg text.axis{font-size:12px;fill:#111827}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
table.labels td:not(:first-child),table.labels th:not(:first-child){text-align:right}
table.labels tr:nth-child(even){background:#f3f4f6}.missing{color:#b45309}
.note{color:#6b7280;font-size:12px}
.wide{grid-column:1/-1}.controls{margin:6px 0}table.browser td{max-width:520px;word-break:break-word}
table.browser tr:nth-child(even),table.compare tr:nth-child(even){background:#f3f4f6}
table.compare td{text-align:right}svg.mini{display:inline-block}
"""


def render_html(n: dict, per_label: dict | None = None, extra: list[str] | None = None) -> str:
    """The page: cards, four charts as inline SVG, graph statistics and label tables, then `extra`
    sections (the comparison, the sample browser: the one script). `n` is what report_numbers
    returns; `per_label` the <stem>.labels.json sidecar (for the scatter)."""
    counts, info, graph, labels = n["counts"], n["information"], n["graph"], n["labels"]
    cards = [("selected", counts.get("selected")), ("selectable in pool", counts.get("selectable")),
             ("rejected", counts.get("rejected")), ("information E(D)", info.get("selected")),
             ("labels covered", None if labels is None else
              f"{labels['covered_by_selection']:,} / {labels['in_pool']:,}")]
    card_html = "".join(f'<div class="card" data-key="{escape(k)}"><div class="v">{_num(v)}</div>'
                        f'<div class="k">{escape(k)}</div></div>' for k, v in cards)
    sections = []

    curve = n["information_curve"]
    if curve:
        plot = svg.line_chart("plot-information", "Information E(D_k) of the first k selected samples",
                              curve["k"], curve["information"], "k (samples selected, in selection order)",
                              "information E(D_k)")
        half = info.get("k_for_half_gain")
        note = (f'<p class="note">Half of the final gain is reached at k = {half:,} of '
                f'{counts.get("selected", 0):,}; a concave curve is what diminishing returns look like.</p>'
                if half is not None else "")
        sections.append(f'<section id="information"><h2>Information gained vs k</h2>{plot}{note}</section>')
    else:
        sections.append(f'<section id="information"><h2>Information gained vs k</h2>'
                        f'{_missing("The information curve")}</section>')

    if labels is not None:
        top = labels["most_frequent_in_pool"]
        bars = svg.paired_bars("plot-coverage", "Share of samples carrying each of the most frequent labels",
                               [r["label"] for r in top],
                               [("pool", svg.POOL, [r["pool_share"] for r in top]),
                                ("selection", svg.SELECTED, [r["selection_share"] for r in top])],
                               "share of samples carrying the label")
        sc = per_label or {"labels": [], "pool": [], "selected": []}
        keep = sorted(range(len(sc["labels"])), key=lambda i: -sc["pool"][i])[:SCATTER_LABELS]
        shown = "" if len(keep) == len(sc["labels"]) else (
            f" The {len(keep):,} most frequent of {len(sc['labels']):,} labels are shown.")
        scatter = svg.log_scatter("plot-label-scatter", "Per label: pool samples vs selected samples",
                                  [sc["pool"][i] for i in keep], [sc["selected"][i] for i in keep],
                                  [sc["labels"][i] for i in keep],
                                  "pool samples carrying the label", "selected samples carrying the label",
                                  counts.get("selected", 0) / max(1, counts.get("selectable", 0)))
        sections.append(
            f'<section id="coverage"><h2>Label coverage: selection vs pool</h2>'
            f'<p>{labels["covered_by_selection"]:,} of {labels["in_pool"]:,} labels '
            f'({100 * (labels["coverage"] or 0):.1f}%) are carried by at least one selected sample; '
            f'{labels["uncovered"]:,} are not.</p>{bars}</section>')
        sections.append(f'<section id="coverage-scatter"><h2>Every label: pool vs selection</h2>{scatter}'
                        '<p class="note">log(1+count) axes; red: labels no selected sample carries; '
                        'dashed: what a uniform random subset of the same size would carry on average. '
                        'MIG spreads the selection over labels: rare labels tend to sit above the line, '
                        f'frequent ones below it.{shown}</p></section>')
    else:
        sections.append(_section("coverage", "Label coverage", _missing("Label coverage")))

    scores = n["scores"]
    if scores:
        tot_p, tot_s = max(1, sum(scores["pool"])), max(1, sum(scores["selected"]))
        hist = svg.histogram("plot-scores", "Score distribution: pool vs selection", scores["edges"],
                             [("pool", svg.POOL, [100 * v / tot_p for v in scores["pool"]]),
                              ("selection", svg.SELECTED, [100 * v / tot_s for v in scores["selected"]])],
                             "score s_i", "% of samples")
        mean = scores.get("selected_mean")
        sections.append(f'<section id="scores"><h2>Score distributions</h2>{hist}<p class="note">'
                        f'{sum(scores["pool"]):,} pool samples, {sum(scores["selected"]):,} selected'
                        + (f" (mean score {mean:.4g})" if mean is not None else "") + ".</p></section>")
    else:
        sections.append(f'<section id="scores"><h2>Score distributions</h2>{_missing("The score histogram")}'
                        "</section>")

    m = n["method"]
    graph_rows = [("labels (graph nodes)", graph.get("labels")), ("edges", graph.get("edges")),
                  ("mean degree", graph.get("mean_degree")), ("isolated labels", graph.get("isolated")),
                  ("isolated share", graph.get("isolated_share")),
                  ("similarity threshold", graph.get("threshold")),
                  ("target degree", m.get("target_degree")), ("propagation", m.get("propagation")),
                  ("prop weight", m.get("prop_weight")), ("embedding model", m.get("embedding_model"))]
    sel_rows = [("phi", m.get("phi")), ("phi a / b / alpha", f"{m.get('phi_a')} / {m.get('phi_b')} / "
                                                              f"{m.get('phi_alpha')}"),
                ("gain", m.get("gain")), ("norm", m.get("norm")), ("engine", n.get("engine")),
                ("approximate", n.get("approximate")), ("information of the empty set", info.get("empty")),
                ("information gain", info.get("gain")), ("records read", counts.get("read")),
                ("no valid label", counts.get("no_valid_label"))]
    diff = n.get("diff")
    if diff:
        dinfo = diff["information"]
        sections.append(_section("diff", "Since the previous run", _table("diff-stats", [
            ("selected before", diff["previous_selected"]), ("selected now", diff["selected"]),
            ("added", diff["added"]), ("dropped", diff["dropped"]), ("kept", diff["kept"]),
            ("information before", dinfo.get("before")), ("information now", dinfo.get("after")),
            ("previous selection on this run's graph", dinfo.get("before_on_this_graph"))])
            + '<p class="note">Before and now are each measured on their own run\'s label graph; the '
              'previous selection on this run\'s graph is the number that compares with now.</p>'))
    if n.get("constraints"):
        sections.append(_section("constraints", "Quotas and budget", constraints_body(n["constraints"])))
    sections.append(_section("graph", "Graph statistics", _table("graph-stats", graph_rows)))
    sections.append(_section("method", "Selection", _table("selection-stats", sel_rows)))
    if labels is not None:
        sections.append(_section("labels-most", "Most covered labels",
                                 '<p class="note">Most selected samples carrying them.</p>'
                                 + _label_table("most-covered", labels["most_covered"])))
        sections.append(_section("labels-least", "Least covered labels",
                                 '<p class="note">Lowest share of their pool carriers selected; frequent '
                                 'labels first among ties.</p>'
                                 + _label_table("least-covered", labels["least_covered"])))
    sections += extra or []
    return page("MIG selection report", f"{n['source']} · mig_ray {n['mig_ray_version']}",
                f'<div class="cards">{card_html}</div>', sections)


def page(title: str, meta: str, top: str, sections: list[str]) -> str:
    """The HTML shell; its Content-Security-Policy lets only the browser's own script run."""
    from mig_ray.report.browse import CSP

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{escape(title)}</h1><p class=\"meta\">{escape(meta)}</p>{top}"
            f"<div class=\"grid\">{''.join(sections)}</div></main></body></html>\n")


def _selection_files(summary_path: Path, summary: dict) -> tuple[Path, Path | None]:
    """(manifest, selected records) of a selection: a job's final outputs when the selection is a
    job's select stage (its own output holds no conversations), else the files beside the summary."""
    if summary_path.parent.name in JOB_SELECTION_DIRS:
        job = summary_path.parent.parent
        records = next((p for p in (job / "selected.jsonl", job / "selected.parquet") if p.is_file()), None)
        if (job / "selected.manifest.jsonl").is_file():
            return job / "selected.manifest.jsonl", records
    stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
    recorded = summary.get("outputs", {}).get("selected")
    records = summary_path.with_name(Path(recorded).name) if recorded else None
    return summary_path.with_name(stem + ".manifest.jsonl"), records


def _compare_page(compare_path: Path, out_dir: Path | None) -> tuple[str, dict, Path]:
    from mig_ray.report import compare

    data, rows = compare.load(compare_path)
    html = page("MIG comparison report", f"{data.get('pool', '')} · k = {data.get('k', 0):,} · mig_ray "
                f"{data.get('mig_ray_version', '')}", "", compare.sections(data, rows))
    numbers = {"mig_ray_version": __version__, "source": str(compare_path), "compare": data}
    return html, numbers, Path(out_dir) if out_dir is not None else compare_path.parent / "report"


def write_report(path: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Find the selection (and comparison) behind `path`, write report.html and summary.json;
    returns their paths. A `mig-ray compare` output directory alone gives the comparison page."""
    from mig_ray.report import browse, compare, curation

    compare_path = compare.find_compare(Path(path))
    try:
        summary_path, default_dir = find_summary(Path(path))
    except ReportError:
        if compare_path is None:
            raise
        html, numbers, out = _compare_page(compare_path, out_dir)
        inputs: dict[str, Path | None] = {"comparison": compare_path}
    else:
        summary = _load_json(summary_path)
        try:  # a summary edited by hand or written by another tool: one line, not a stack
            labels_path = _labels_path(summary_path, summary)
            labels = _load_json(labels_path) if labels_path is not None else None
            numbers = report_numbers(summary, labels, summary_path, _job_diff(summary_path))
            if compare_path is not None:
                data, rows = compare.load(compare_path)
                extra = compare.sections(data, rows)
                numbers["compare"] = data
            else:
                manifest, records = _selection_files(summary_path, summary)
                extra = [browse.section({"selection": browse.selection_rows(manifest, records)},
                                        {"selection": int(numbers["counts"].get("selected", 0))})]
            if summary_path.parent.name in JOB_SELECTION_DIRS:  # a job's: its dedup stage, if it ran
                job_dir = summary_path.parent.parent
                if (cur := curation.curation_numbers(job_dir)) is not None:
                    numbers["curation"] = cur
                    extra = [curation.section(job_dir, cur), *extra]
            html = render_html(numbers, labels, extra)
        except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
            raise ReportError(f"{summary_path}: not a selection summary mig_ray can report on "
                              f"({type(e).__name__}: {clip(str(e), 120)}); was it edited, or written by "
                              "another tool? Re-run the selection to write it again") from None
        out = Path(out_dir) if out_dir is not None else default_dir
        job = summary_path.parent.parent / "summary.json" if summary_path.parent.name in JOB_SELECTION_DIRS \
            else None
        inputs = {"selection summary": summary_path, "labels file": labels_path, "job summary": job,
                  "comparison": compare_path}
    paths = {"html": out / "report.html", "summary": out / "summary.json"}
    from mig_ray.errors import PoolError
    from mig_ray.guard import check_outputs_not_inputs, check_writable

    try:  # e.g. `-o OUTDIR` of a job would replace the job's own summary.json
        check_outputs_not_inputs(paths, inputs)
        check_writable(paths.values())
    except PoolError as e:
        raise ReportError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    paths["html"].write_text(html, encoding="utf-8")
    paths["summary"].write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    return paths
