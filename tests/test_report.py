"""Report data beside a selection (same from both engines) and `mig-ray report` rendered in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from pools import random_pool

from mig_ray.errors import ReportError
from mig_ray.report.build import find_summary, render_html, report_numbers
from mig_ray.selection.config import SelectConfig
from mig_ray.selection.run import run_select

ROOT = Path(__file__).resolve().parents[1]
DEMO_POOL = ROOT / "mig_ray" / "demo" / "demo_pool.jsonl"


def mig_ray(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mig_ray", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def write_pool(tmp_path: Path, seed: int, n: int, n_labels: int) -> tuple[Path, Path, list, np.ndarray]:
    vocab, emb, labels, scores = random_pool(seed, n=n, n_labels=n_labels)
    recs = [{"id": f"r{i}", "tags": ls, "score": float(s)} for i, (ls, s) in enumerate(zip(labels, scores,
                                                                                           strict=True))]
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    np.savez(tmp_path / "emb.npz", labels=np.array(vocab), embeddings=emb)
    return pool, tmp_path / "emb.npz", labels, scores


def test_both_engines_write_the_same_report_data(tmp_path, ray_address):
    pool, emb, labels, scores = write_pool(tmp_path, 11, n=400, n_labels=40)
    base = {"pool": pool, "label_embeddings": emb, "labels_field": "tags", "score_field": "score",
            "sim_threshold": 0.7, "progress": False, "n": 250}
    local = SelectConfig(**base, out=tmp_path / "local" / "sel.jsonl")
    ray = SelectConfig(**base, out=tmp_path / "ray" / "sel.jsonl", shards=3, batch=8, ray_address=ray_address)
    s_local, s_ray = run_select(local), run_select(ray)
    assert s_ray["greedy"]["engine"] == "ray" and s_local["greedy"]["engine"] == "local"
    assert s_ray["report"] == s_local["report"]
    side = json.loads((tmp_path / "local" / "sel.labels.json").read_text())
    assert json.loads((tmp_path / "ray" / "sel.labels.json").read_text()) == side
    assert s_local["outputs"]["labels"] == str(tmp_path / "local" / "sel.labels.json")

    # against a direct count from the pool and the manifest
    rep = s_local["report"]
    nodes = sorted({t for ls in labels for t in ls})
    assert side["labels"] == nodes
    assert side["pool"] == [sum(t in set(ls) for ls in labels) for t in nodes]
    manifest = [json.loads(x) for x in (tmp_path / "local" / "sel.manifest.jsonl").read_text().splitlines()]
    chosen = Counter(t for m in manifest for t in set(m["labels"]))
    assert side["selected"] == [chosen[t] for t in nodes]
    assert rep["labels"] == {"nodes": len(nodes), "in_pool": len(nodes),
                             "covered_by_selection": len(chosen), "coverage": len(chosen) / len(nodes)}
    curve = rep["information_curve"]
    assert curve["k"][0] == 0 and curve["k"][-1] == 250 and 150 <= len(curve["k"]) <= 201
    assert curve["k"] == sorted(set(curve["k"]))
    assert curve["information"][0] == pytest.approx(s_local["information"]["empty"], rel=1e-12)
    assert curve["information"][-1] == pytest.approx(s_local["information"]["selected"], rel=1e-12)
    assert all(b >= a for a, b in zip(curve["information"], curve["information"][1:], strict=False))
    hist = rep["scores"]
    assert len(hist["edges"]) == len(hist["pool"]) + 1 == len(hist["selected"]) + 1
    assert sum(hist["pool"]) == 400 and sum(hist["selected"]) == 250
    assert hist["edges"][0] == scores.min() and hist["edges"][-1] == scores.max()
    assert hist["selected_mean"] == pytest.approx(np.mean([m["score"] for m in manifest]))


def test_find_summary_accepts_select_outputs_and_job_directories(tmp_path):
    sel = tmp_path / "a" / "sel.jsonl"
    sel.parent.mkdir()
    summary = tmp_path / "a" / "sel.summary.json"
    summary.write_text("{}")
    want = (summary, tmp_path / "a" / "sel.report")
    assert find_summary(sel) == want
    assert find_summary(summary) == want
    assert find_summary(tmp_path / "a") == want
    job = tmp_path / "job"  # `mig-ray run` keeps its selection stage in OUTDIR/select/
    (job / "select").mkdir(parents=True)
    (job / "select" / "selected.summary.json").write_text("{}")
    assert find_summary(job) == (job / "select" / "selected.summary.json", job / "report")
    (tmp_path / "a" / "other.summary.json").write_text("{}")
    with pytest.raises(ReportError, match="several selections"):
        find_summary(tmp_path / "a")
    with pytest.raises(ReportError, match="x.summary.json does not exist"):
        find_summary(tmp_path / "job" / "x.jsonl")
    (tmp_path / "job" / "x").mkdir()
    with pytest.raises(ReportError, match="no \\*.summary.json"):
        find_summary(tmp_path / "job" / "x")


def test_report_cli_names_a_missing_selection(tmp_path):
    proc = mig_ray("report", tmp_path, check=False)
    assert proc.returncode == 2 and "no *.summary.json in" in proc.stderr
    assert not (tmp_path / "report").exists()


def test_summary_without_report_data_still_renders():
    numbers = report_numbers({"counts": {"selected": 3, "selectable": 9}, "information": {"selected": 1.5}},
                             None, Path("old.summary.json"))
    html = render_html(numbers)
    assert html.count('class="missing"') == 3 and "<svg" not in html


def test_nightly_diff_shows_the_previous_selection_on_this_graph():
    diff = {"previous_selected": 4, "selected": 4, "added": 1, "dropped": 1, "kept": 3,
            "information": {"before": 10.25, "after": 12.5, "before_on_this_graph": 11.75}}
    numbers = report_numbers({"counts": {"selected": 4, "selectable": 9}, "information": {"selected": 12.5}},
                             None, Path("run.summary.json"), diff)
    html = render_html(numbers)
    section = html[html.index('id="diff"'):]
    section = section[:section.index("</section>")]
    for text in ("information before", "10.25", "information now", "12.5",
                 "previous selection on this run&#x27;s graph", "11.75"):
        assert text in section, text


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into rows of raw pixel bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run must `apt-get install -y chromium`")
        pytest.skip("chromium is not installed (apt-get install chromium); CI requires it")
    return exe


def test_report_of_demo_selection_renders_in_chromium(tmp_path):
    exe = chromium()
    out = tmp_path / "sel" / "selected.jsonl"
    mig_ray("select", DEMO_POOL, "-n", 30, "-o", out, "--target-degree", 5, "--no-progress")
    proc = mig_ray("report", tmp_path / "sel")
    html_path = tmp_path / "sel" / "selected.report" / "report.html"
    assert f"report:  {html_path}" in proc.stdout
    numbers = json.loads((html_path.parent / "summary.json").read_text())
    summary = json.loads((tmp_path / "sel" / "selected.summary.json").read_text())
    html = html_path.read_text()
    external = re.search(r"(src|href)\s*=|https?://|<script[^>]*\bsrc|@import|url\(", html)
    assert external is None, f"the page must be self-contained: {external}"

    profile = tmp_path / "profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", "--hide-scrollbars", f"--user-data-dir={profile}"]
    dom = subprocess.run([exe, *flags, "--dump-dom", html_path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, "--window-size=1400,1600", f"--screenshot={shot}", html_path.as_uri()],
                   capture_output=True, timeout=120, check=True)

    # the DOM Chromium built holds every chart with its marks, and the numbers
    for ident in ("plot-information", "plot-coverage", "plot-label-scatter", "plot-scores"):
        assert f'<svg id="{ident}"' in dom, ident
    curve = summary["report"]["information_curve"]
    points = re.search(r'<polyline class="series" points="([^"]+)"', dom).group(1).split()
    assert len(points) == len(curve["k"]) == 31
    # counted here from the pool file and the manifest, not taken from the summary
    pool_labels = set()
    for line in DEMO_POOL.read_bytes().splitlines():
        ann = orjson.loads(line).get("annotation", {})
        if "instag" in ann and "deita" in ann:
            pool_labels |= set(ann["instag"]["content"])
    rows = (tmp_path / "sel" / "selected.manifest.jsonl").read_bytes().splitlines()
    manifest = [orjson.loads(x) for x in rows]
    covered = {t for m in manifest for t in m["labels"]}
    assert dom.count('class="dot"') == len(pool_labels)
    assert len(re.findall(r'<rect class="bar" data-series="selection"', dom)) >= 25
    labels = numbers["labels"]
    assert (labels["in_pool"], labels["covered_by_selection"]) == (len(pool_labels), len(covered))
    assert f"{labels['covered_by_selection']:,} / {labels['in_pool']:,}" in dom
    assert f"{summary['information']['selected']:,.6g}" in dom
    assert f"{summary['graph']['edges']:,}" in dom
    for ident, rows in (("most-covered", labels["most_covered"]), ("least-covered", labels["least_covered"])):
        table = re.search(rf'<table id="{ident}".*?</table>', dom, re.S).group(0)
        assert len(rows) == 15 and all(f"<td>{r['label']}</td>" in table for r in rows), ident
    assert numbers["information_curve"]["k"] == list(range(31))  # 30 picks: every k is a point

    # the screenshot is a rendered page, not a blank one
    width, bpp, rows = png_pixels(shot)
    assert width == 1400 and len(rows) == 1600
    colours = Counter(row[i:i + 3] for row in rows[::4] for i in range(0, len(row), bpp * 4))
    blue = sum(n for (r, _, b), n in colours.items() if b > 180 and r < 90)
    assert len(colours) > 50, "screenshot has almost no distinct colours"
    assert colours.most_common(1)[0][1] < 0.9 * sum(colours.values()), "screenshot is mostly one colour"
    assert blue > 100, "no selection-blue marks in the screenshot"
