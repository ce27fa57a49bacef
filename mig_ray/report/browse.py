"""The report's sample browser: selected records in rank order, a text filter and paging.

Record text is untrusted. It travels as JSON inside a `<script type="application/json">` element
with `<`, `>`, `&` and the JS line separators written as \\u escapes (so no text can close the
element), and the page's one script puts it into the table with `textContent` only (never parsed as
HTML). A Content-Security-Policy with the script's hash stops any other script from running.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from mig_ray.errors import BadRecord
from mig_ray.pools.layouts import normalise

BROWSER_ROWS = 1000  # rows per selection (per method in a comparison) the page carries
TURN_CHARS = 400
PAGE_ROWS = 25

SCRIPT = """(function () {
  var data = JSON.parse(document.getElementById("browser-data").textContent);
  var pick = document.getElementById("browser-method"), query = document.getElementById("browser-filter");
  var body = document.getElementById("browser-rows"), info = document.getElementById("browser-page");
  var prev = document.getElementById("browser-prev"), next = document.getElementById("browser-next");
  var page = 0, size = __PAGE_ROWS__;
  Object.keys(data.methods).forEach(function (name) {
    var o = document.createElement("option");
    o.value = name; o.textContent = name; pick.appendChild(o);
  });
  function rows() {
    var all = data.methods[pick.value] || [], q = query.value.toLowerCase();
    if (!q) return all;
    return all.filter(function (r) {
      return (r.id + " " + r.text + " " + r.labels.join(" ")).toLowerCase().indexOf(q) >= 0;
    });
  }
  function cell(tr, text) {
    var td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
  }
  function num(v) { return v === null || v === undefined ? "" : Number(v).toPrecision(5); }
  function render() {
    var all = rows(), pages = Math.max(1, Math.ceil(all.length / size));
    page = Math.max(0, Math.min(page, pages - 1));
    body.replaceChildren();
    all.slice(page * size, (page + 1) * size).forEach(function (r) {
      var tr = document.createElement("tr");
      cell(tr, r.rank); cell(tr, r.id); cell(tr, r.text); cell(tr, r.labels.join(", "));
      cell(tr, num(r.score)); cell(tr, num(r.gain));
      body.appendChild(tr);
    });
    info.textContent = "page " + (page + 1) + " of " + pages + " (" + all.length + " rows)";
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
  }
  pick.addEventListener("change", function () { page = 0; render(); });
  query.addEventListener("input", function () { page = 0; render(); });
  prev.addEventListener("click", function () { page -= 1; render(); });
  next.addEventListener("click", function () { page += 1; render(); });
  render();
})();""".replace("__PAGE_ROWS__", str(PAGE_ROWS))

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-"
       + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() + "'")


def json_for_script(data: Any) -> str:
    """JSON that cannot end its <script> element or be read as markup."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def first_user_turn(messages: list[dict] | None, chars: int = TURN_CHARS) -> str:
    for m in messages or []:
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            text = m["content"]
            return text if len(text) <= chars else text[:chars - 1] + "…"
    return ""


def record_turn(rec: Any) -> str:
    """The first user turn of a record of any supported layout ('' when it has none)."""
    try:
        return first_user_turn(normalise(rec)[1])
    except BadRecord:
        return ""


def row(manifest_row: dict, text: str) -> dict:
    return {"rank": manifest_row.get("rank"), "id": str(manifest_row.get("id", "")), "text": text,
            "labels": [str(t) for t in manifest_row.get("labels") or []],
            "score": manifest_row.get("score"), "gain": manifest_row.get("gain")}


def read_head(path: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` (default BROWSER_ROWS) rows of a JSONL manifest or record file, or Parquet."""
    limit = BROWSER_ROWS if limit is None else limit
    if not path.is_file():
        return []
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        out: list[dict] = []
        for batch in pf.iter_batches(batch_size=min(limit, 1024)):
            out += batch.to_pylist()
            if len(out) >= limit:
                break
        return out[:limit]
    out = []
    with open(path, "rb") as f:
        for line in f:
            if len(out) >= limit:
                break
            if line.strip():
                out.append(orjson.loads(line))
    return out


def selection_rows(manifest: Path, records: Path | None) -> list[dict]:
    """Browser rows of one selection: its manifest's head beside its selected records' head (both in
    selection order), capped at BROWSER_ROWS."""
    head = read_head(manifest)
    recs = read_head(records) if records is not None else []
    texts = [record_turn(r) for r in recs] + [""] * max(0, len(head) - len(recs))
    return [row(m, t) for m, t in zip(head, texts, strict=False)]


def section(methods: dict[str, list[dict]], total: dict[str, int], note: str = "") -> str:
    """The browser: a method picker (one entry for a plain selection), a filter, the table, paging."""
    capped = [f"{name}: first {len(rows):,} of {total.get(name, len(rows)):,}"
              for name, rows in methods.items() if total.get(name, len(rows)) > len(rows)]
    cap = (f'<p class="note">The page carries at most {BROWSER_ROWS:,} rows per selection ('
           + "; ".join(capped) + ").</p>") if capped else ""
    data = json_for_script({"methods": methods})
    return ('<section id="browser" class="wide"><h2>Selected samples</h2>'
            f'<p class="note">In rank order; first user turn cut to {TURN_CHARS} characters. {note}</p>{cap}'
            '<div class="controls"><label>selection <select id="browser-method"></select></label> '
            '<label>filter <input id="browser-filter" type="search" placeholder="text, label or id"></label> '
            '<button id="browser-prev" type="button">previous</button> '
            '<button id="browser-next" type="button">next</button> <span id="browser-page"></span></div>'
            '<table id="browser-table" class="browser"><thead><tr><th>rank</th><th>id</th>'
            '<th>first user turn</th><th>labels</th><th>score</th><th>gain</th></tr></thead>'
            '<tbody id="browser-rows"></tbody></table>'
            f'<script type="application/json" id="browser-data">{data}</script>'
            f'<script>{SCRIPT}</script></section>')


def rows_of(manifest_rows: Iterable[dict], texts: dict[str, str]) -> list[dict]:
    return [row(m, texts.get(str(m.get("id")), "")) for m in manifest_rows]
