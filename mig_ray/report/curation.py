"""The report's curation section for a job with the dedup stage: the clusters of duplicates found
(how many, their sizes as a histogram), the three largest side by side (kept record first), and
the contamination hits per benchmark file. Read from OUTDIR/dedup/ (duplicates.jsonl,
contaminated.jsonl) and, for the example texts, the ingest parts of those few ids only."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any

import orjson

from mig_ray.report.browse import first_user_turn
from mig_ray.report.svg import histogram

EXAMPLES = 3
EXAMPLE_CHARS = 400


def read_rows(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file (a broken line is skipped: the report shows, never fails)."""
    rows = []
    if path.is_file():
        for line in path.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def curation_numbers(job_dir: Path) -> dict[str, Any] | None:
    """Clusters (kept id -> dropped rows), their size histogram and the contamination hits per
    benchmark file; None when the job ran no dedup stage."""
    folder = job_dir / "dedup"
    if not (folder / "duplicates.jsonl").is_file() and not (folder / "contaminated.jsonl").is_file():
        return None
    clusters: dict[str, list[dict]] = defaultdict(list)
    for row in read_rows(folder / "duplicates.jsonl"):
        clusters[str(row.get("kept_id"))].append(row)
    sizes = Counter(1 + len(rows) for rows in clusters.values())
    hits = Counter(str(row.get("benchmark")) for row in read_rows(folder / "contaminated.jsonl"))
    largest = sorted(clusters.items(), key=lambda kv: (-len(kv[1]), min(r.get("position", 0) for r in kv[1])))
    return {"clusters": len(clusters), "dropped": sum(len(v) for v in clusters.values()),
            "exact": sum(r.get("reason") == "exact" for v in clusters.values() for r in v),
            "sizes": {str(k): v for k, v in sorted(sizes.items())},
            "contaminated": dict(sorted(hits.items())),
            "examples": [{"kept_id": kept, "kept_position": rows[0].get("kept_position"),
                          "dropped": [{k: r.get(k) for k in ("id", "jaccard", "reason")}
                                      for r in sorted(rows, key=lambda r: r.get("position", 0))[:EXAMPLES]]}
                         for kept, rows in largest[:EXAMPLES]]}


def example_texts(job_dir: Path, ids: set[str]) -> dict[str, str]:
    """The first user turn of each of `ids`, from the job's ingest parts (only those rows read)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    texts: dict[str, str] = {}
    for part in sorted((job_dir / "ingest" / "parts").glob("part-*.parquet")):
        if len(texts) == len(ids):
            break
        try:
            table = pq.read_table(part, columns=["id", "messages"])
        except (OSError, pa.ArrowException):
            continue
        for rid, messages in zip(*table.filter(pc.is_in(table.column("id"), value_set=pa.array(sorted(ids))))
                                 .to_pydict().values(), strict=True):
            try:
                texts[rid] = first_user_turn(orjson.loads(messages), EXAMPLE_CHARS)
            except ValueError:
                texts[rid] = ""
    return texts


def section(job_dir: Path, numbers: dict[str, Any]) -> str:
    """The HTML section: counts, the size histogram, the examples side by side, the hits."""
    sizes = {int(k): v for k, v in numbers["sizes"].items()}
    body = [f'<p>{numbers["clusters"]:,} clusters of duplicates; {numbers["dropped"]:,} records dropped '
            f'({numbers["exact"]:,} exact copies, {numbers["dropped"] - numbers["exact"]:,} near), each '
            'listed in dedup/duplicates.jsonl with its kept twin and the estimated Jaccard.</p>']
    if sizes:
        top = max(sizes)
        edges = [1.5 + i for i in range(top)] if top < 30 else \
            [2 ** (i / 2) for i in range(1, 2 * math.ceil(math.log2(top + 1)) + 2)]
        heights = [sum(v for s, v in sizes.items() if lo <= s < hi)
                   for lo, hi in zip(edges, edges[1:], strict=False)]
        body.append(histogram("dedup-sizes", "Cluster sizes (kept record included)", edges,
                              [("clusters", "#2563eb", heights)], "records in the cluster", "clusters"))
    examples = numbers["examples"]
    ids = {str(e["kept_id"]) for e in examples} | {str(d["id"]) for e in examples for d in e["dropped"]}
    texts = example_texts(job_dir, ids) if ids else {}
    for e in examples:
        earlier = isinstance(e["kept_position"], int) and e["kept_position"] < 0
        kept_text = "(kept on an earlier night)" if earlier else texts.get(str(e["kept_id"]), "")
        cells = [f'<td><b>kept</b> {escape(str(e["kept_id"]))}<br>{escape(kept_text)}</td>']
        cells += [f'<td><b>dropped</b> {escape(str(d["id"]))} ({escape(str(d["reason"]))}, Jaccard '
                  f'{escape(str(d["jaccard"]))})<br>{escape(texts.get(str(d["id"]), ""))}</td>'
                  for d in e["dropped"]]
        body.append(f'<table class="dedup-example"><tr>{"".join(cells)}</tr></table>')
    hits = numbers["contaminated"]
    if hits:
        rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:,}</td></tr>" for k, v in hits.items())
        body.append('<table id="contamination"><tr><th>benchmark file</th><th>records dropped</th></tr>'
                    f"{rows}</table>")
    else:
        body.append('<p class="note">No record shares an n-gram with a benchmark prompt (or no benchmark '
                    "file was named: `decontaminate:` in the job).</p>")
    return f'<section id="curation"><h2>Duplicates and contamination</h2>{"".join(body)}</section>'
