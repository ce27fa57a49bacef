"""How the static tagger's labels compare with MiniLM's, and both with labels made by hand.

On the bundled demo pool (241 records) and the 175 Alpaca seed tasks (tests/data/):
- mean Jaccard of the two taggers' label sets and the share of records whose top label agrees;
- what MIG selects from each (the job, K = the demo's 30): overlap of the selected ids, and the
  information of the static tagger's selection on the MiniLM run's graph (the selected records
  with the labels MiniLM gave them), against MiniLM's own selection;
- against the hand labels of 100 seed tasks (tests/data/alpaca_seed_tasks_100_gold_tags.jsonl):
  precision@1/3/5 and recall of both taggers, under the default rule and floor / margin variants;
- MiniLM with turns cut at 128 tokens (its default) against the model's 256: agreement.
MiniLM runs with its defaults (floor 0.3, margin 3.5, 128 tokens) unless a row says otherwise.

    .venv/bin/python bench/tagger_agreement.py   # writes bench/results/tagger-agreement-<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_POOL = ROOT / "mig_ray" / "demo" / "demo_pool.jsonl"
SEEDS = ROOT / "tests" / "data" / "alpaca_seed_tasks_175.jsonl"
GOLD = ROOT / "tests" / "data" / "alpaca_seed_tasks_100_gold_tags.jsonl"
K = 30  # jobs/demo.yaml's selection.n


class Memo:
    """An encoder that embeds each distinct text once across the rule variants measured here."""

    def __init__(self, encode) -> None:
        self.encode, self.rows = encode, {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if todo:
            self.rows.update(zip(todo, self.encode(todo), strict=True))
        return np.stack([self.rows[t] for t in texts])


def records(path: Path) -> tuple[list[str], list[str]]:
    from mig_ray.pools.layouts import messages_json, normalise

    rows = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
    ids = [str(r.get("_id") or r.get("id")) for r in rows]
    return ids, [messages_json(normalise(r)[1]) for r in rows]


def label(tagger, encode, cfg, ids: list[str], msgs: list[str]) -> dict[str, list[str]]:
    from mig_ray.annotate.embedding_tagger import tag_batch

    out = tag_batch({"id": np.array(ids, dtype=object), "messages": np.array(msgs, dtype=object)}, cfg,
                    encode, tagger.vocab, tagger.vocab_emb)
    return {r["id"]: r["labels"] for r in out.to_pylist() if r["status"] == "ok"}


def agreement(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict:
    both = [i for i in a if i in b]
    jac = [len(set(a[i]) & set(b[i])) / len(set(a[i]) | set(b[i])) if a[i] or b[i] else 1.0 for i in both]
    top = [bool(a[i]) and bool(b[i]) and a[i][0] == b[i][0] for i in both]
    return {"records": len(both), "mean_jaccard": round(float(np.mean(jac)), 4),
            "top_label_agrees": round(float(np.mean(top)), 4),
            "without_label": [sum(not a[i] for i in both), sum(not b[i] for i in both)]}


def against_gold(pred: dict[str, list[str]], gold: dict[str, list[str]]) -> dict:
    """P@k: hits among the first k labels over the labels given there (min(k, n)); recall: hits of
    all labels over the gold tags; micro-averaged over the gold records."""
    out: dict = {}
    for k in (1, 3, 5):
        hits = sum(len(set(pred.get(i, [])[:k]) & set(g)) for i, g in gold.items())
        given = sum(min(k, len(pred.get(i, []))) for i in gold)
        out[f"precision@{k}"] = round(hits / given, 4) if given else None
    hits = sum(len(set(pred.get(i, [])) & set(g)) for i, g in gold.items())
    out["recall"] = round(hits / sum(len(g) for g in gold.values()), 4)
    out["labels_per_record"] = round(sum(len(pred.get(i, [])) for i in gold) / len(gold), 2)
    out["records_without_label"] = sum(not pred.get(i) for i in gold)
    return out


def run_job(tmp: Path, name: str, pool: Path, tagger: dict, scorer: dict) -> Path:
    from mig_ray.job.jobfile import load_job
    from mig_ray.job.pipeline import run_job as run

    data = yaml.safe_load((ROOT / "jobs" / "demo.yaml").read_text())
    data["input"]["paths"] = [str(pool)]
    data["annotate"]["tagger"] = {**data["annotate"]["tagger"], **tagger}
    data["annotate"]["scorer"] = scorer
    data["output"]["dir"] = str(tmp / name)
    data["progress"] = False
    job = tmp / f"{name}.yaml"
    job.write_text(yaml.safe_dump(data))
    run(load_job(job))
    return tmp / name


def manifest(out: Path) -> list[dict]:
    return [orjson.loads(x) for x in (out / "selected.manifest.jsonl").read_bytes().splitlines()]


def information_on_minilm_graph(tmp: Path, minilm_out: Path, static_ids: list[str],
                                minilm_labels: dict[str, list[str]]) -> dict:
    """The static selection's records with MiniLM's labels, measured on the MiniLM run's graph (the
    nightly diff's `previous_selection`), against the MiniLM selection made by the same config."""
    import pyarrow.parquet as pq

    from mig_ray.selection.config import SelectConfig
    from mig_ray.selection.run import run_select

    pool = pq.read_table(minilm_out / "assemble" / "pool.parquet", columns=["id", "score"]).to_pylist()
    score = {r["id"]: r["score"] for r in pool}
    prev = tmp / f"{minilm_out.name}-static-selection.jsonl"
    prev.write_bytes(b"".join(orjson.dumps({"id": i, "labels": minilm_labels[i], "score": score[i]}) + b"\n"
                              for i in static_ids))
    tag_emb = minilm_out / "tag" / "label_embeddings.npz"
    cfg = SelectConfig(pool=minilm_out / "assemble" / "pool.parquet", n=K, out=tmp / f"{minilm_out.name}-re"
                       / "selected.parquet", label_embeddings=tag_emb if tag_emb.is_file() else None,
                       target_degree=5, labels_field="labels", score_field="score", id_field="id",
                       progress=False, previous_manifest=prev, records=False, ids_unique=True)
    summary = run_select(cfg)
    again = [orjson.loads(x)["id"] for x in (tmp / f"{minilm_out.name}-re" / "selected.manifest.jsonl")
             .read_bytes().splitlines()]
    assert again == [m["id"] for m in manifest(minilm_out)], "the re-run is not the job's MiniLM selection"
    own = summary["information"]["selected"]
    other = summary["information"]["previous_selection"]["selected"]
    return {"minilm_selection": round(own, 4), "static_selection": round(other, 4),
            "ratio": round(other / own, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / f"tagger-agreement-{date.today()}.json")
    args = ap.parse_args()

    from mig_ray.annotate.cache import load_annotations
    from mig_ray.annotate.embedding_tagger import EmbeddingTagger, EmbeddingTaggerConfig
    from mig_ray.annotate.static_tagger import StaticTagger, StaticTaggerConfig
    from mig_ray.runtime.session import ray_up

    load_start = [round(x, 2) for x in os.getloadavg()]
    result: dict = {"benchmark": "tagger agreement: static (model2vec from MiniLM) vs MiniLM",
                    "date": str(date.today()), "K": K,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_average_at_start": load_start}}
    minilm = EmbeddingTagger(EmbeddingTaggerConfig(num_threads=os.cpu_count()))  # the defaults: 128 tokens
    minilm256 = EmbeddingTagger(EmbeddingTaggerConfig(num_threads=os.cpu_count(), max_tokens=None))
    static = StaticTagger(StaticTaggerConfig())
    enc = {"minilm": Memo(minilm._encode), "minilm256": Memo(minilm256._encode),
           "static": Memo(static.encode)}
    pools = {"demo": (DEMO_POOL, {"kind": "field"}), "alpaca175": (SEEDS, {"kind": "constant"})}
    labels: dict[str, dict[str, dict[str, list[str]]]] = {}
    speed: dict[str, dict] = {}
    for name, (path, _) in pools.items():
        ids, msgs = records(path)
        labels[name] = {}
        for key, tagger, cfg in (("minilm", minilm, minilm.cfg), ("minilm256", minilm256, minilm256.cfg),
                                 ("static", static, static.cfg)):
            t0 = time.perf_counter()
            labels[name][key] = label(tagger, enc[key], cfg, ids, msgs)
            speed.setdefault(key, {})[name] = round(len(ids) / (time.perf_counter() - t0), 1)
    result["records_per_s_in_process_first_pass"] = speed
    result["agreement"] = {
        name: {"static_vs_minilm": agreement(labels[name]["static"], labels[name]["minilm"]),
               "minilm128_vs_minilm256": agreement(labels[name]["minilm"], labels[name]["minilm256"])}
        for name in pools}

    gold = {r["id"]: r["tags"] for r in map(orjson.loads, GOLD.read_bytes().splitlines())}
    ids, msgs = records(SEEDS)
    keep = [i for i, x in enumerate(ids) if x in gold]
    ids, msgs = [ids[i] for i in keep], [msgs[i] for i in keep]
    floors = [(None, f) for f in (0.3, 0.35, 0.4, 0.5, 0.6)]
    rules = floors + [(m, 0.3) for m in (2.0, 3.0, 3.5, 4.0, 5.0)]
    gold_rows = []
    for key, tagger in (("minilm", minilm), ("minilm256", minilm256), ("static", static)):
        for margin, floor in rules:
            cfg = tagger.cfg.model_copy(update={"margin": margin, "min_similarity": floor})
            pred = label(tagger, enc[key], cfg, ids, msgs)
            gold_rows.append({"tagger": key, "min_similarity": floor, "margin": margin,
                              **against_gold(pred, gold)})
    result["hand_labels"] = {"file": str(GOLD.relative_to(ROOT)), "records": len(gold), "rows": gold_rows}

    ray_up(None, num_cpus=os.cpu_count() * 2)
    selection = {}
    with tempfile.TemporaryDirectory(prefix="tagger-agreement-") as tmp_:
        tmp = Path(tmp_)
        for name, (path, scorer) in pools.items():
            outs = {key: run_job(tmp, f"{name}-{key}", path, {"kind": kind}, scorer)
                    for key, kind in (("minilm", "embedding"), ("static", "static"))}
            m_ids = [r["id"] for r in manifest(outs["minilm"])]
            s_ids = [r["id"] for r in manifest(outs["static"])]
            overlap = len(set(m_ids) & set(s_ids)) / K
            cached = load_annotations(outs["minilm"] / "cache", "tags", EmbeddingTaggerConfig()).to_pylist()
            job_labels = {r["id"]: r["labels"] for r in cached}
            info = information_on_minilm_graph(tmp, outs["minilm"], s_ids, job_labels)
            selection[name] = {"overlap_of_selected_ids": round(overlap, 4),
                               "information_on_minilm_graph": info,
                               "rule_met": overlap >= 0.7 and info["ratio"] >= 0.95}
    result["selection"] = selection
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("agreement", "selection")}, indent=1))
    for row in gold_rows:
        print(row)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
