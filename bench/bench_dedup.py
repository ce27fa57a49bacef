"""The dedup stage at scale (issue 19): a Tulu3-shaped pool whose user turns are 40-80 words, with
5% of its records planted near-duplicates of earlier ones (a copy with 0-4% of its words replaced,
or differing only in case and spacing). The job runs ingest and dedup (`mig-ray dedup`, a fresh
process with its own local Ray); from its stage rows: the dedup stage's seconds against ingest's in
the same run, the driver's peak RSS after each stage (growth per record over the dedup stage), and
recall / precision of the dropped records against the planted copies. The driver's growth is its
peak RSS through ingest and dedup minus its peak through ingest alone (a second run), per record.

    python bench/bench_dedup.py --records 1000000     # writes bench/results/dedup-<date>.json

Targets on the 2-core machine: dedup at most 1.5x ingest; driver growth at most 20 bytes/record.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_job_scale import measured  # noqa: E402
from bench_select import DATA  # noqa: E402
from provenance import header, write_result  # noqa: E402
from tulu3_shaped import tulu3_shaped  # noqa: E402

WORDS = [f"w{j}" for j in range(20_000)]  # a vocabulary wide enough that unrelated turns rarely share 5-grams


def write_pool(path: Path, n: int, share: float, seed: int = 0) -> tuple[dict[str, str], dict[str, float]]:
    """The pool; each planted copy's id -> the id of the record it copies, and their true Jaccard."""
    tags, indptr, codes, turns, quality, complexity = tulu3_shaped(n, seed)
    rng = np.random.default_rng(seed + 1)
    texts: list[str] = []
    answers: list[str] = []
    planted: dict[str, str] = {}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for i in range(n):
            if i > 100 and rng.random() < share:
                src = int(rng.integers(0, i))
                words = texts[src].split()
                if rng.random() < 0.3:  # case and spacing only: an exact duplicate once normalised
                    text = "  ".join(w.upper() if rng.random() < 0.5 else w for w in words)
                else:
                    rate = float(rng.choice([0.0, 0.01, 0.02, 0.04]))
                    for j in np.flatnonzero(rng.random(len(words)) < rate):
                        words[j] = WORDS[int(rng.integers(0, len(WORDS)))]
                    text = " ".join(words)
                planted[f"s{i:08d}"] = f"s{src:08d}"
                answer = answers[src]
            else:
                text = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), int(rng.integers(40, 81))))
                answer = f"An answer to question {i}."
            texts.append(text)
            answers.append(answer)
            t = int(turns[i])
            rec = {"_id": f"s{i:08d}",
                   "dialogs": [{"role": "user", "content": text},
                               {"role": "assistant", "content": answer}],
                   "annotation": {"instag": {"content": [tags[c] for c in codes[indptr[i]:indptr[i + 1]]]},
                                  "deita": {"quality_scores": quality[i, :t].tolist(),
                                            "complexity_scores": complexity[i, :t].tolist()}}}
            f.write(orjson.dumps(rec) + b"\n")
    tmp.replace(path)
    jaccard = {c: true_jaccard(f"{texts[int(c[1:])]} {answers[int(c[1:])]}",
                               f"{texts[int(s[1:])]} {answers[int(s[1:])]}") for c, s in planted.items()}
    return planted, jaccard


def true_jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard of the word 5-gram sets of two texts, case-folded (the stage's shingles, exactly)."""
    def shingles(t: str) -> set:
        w = t.casefold().split()
        return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def root_of(parent: dict[str, str], rid: str) -> str:
    while rid in parent:
        rid = parent[rid]
    return rid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--share", type=float, default=0.05, help="share of planted near-duplicates")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    work = DATA / f"dedup-{args.records}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pool = work / "pool.jsonl"
    planted, jaccard = write_pool(pool, args.records, args.share)
    job = {"name": "dedup-bench", "input": {"paths": [str(pool)]},
           "annotate": {"tagger": {"kind": "from-data"}, "scorer": {"kind": "field"}},
           "selection": {"n": 10}, "dedup": {"enabled": True}, "output": {"dir": str(work / "out")},
           "progress": False}
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    result = {**header(), "benchmark": "dedup", "records": args.records, "planted": len(planted),
              "pool_bytes": pool.stat().st_size}
    # the driver's own peak through ingest alone, then through ingest and dedup (fresh folders):
    # the difference over the records is what the dedup stage adds to the driver
    alone = measured(["run", str(work / "job.yaml"), "-o", str(work / "ingest-only"), "--until", "ingest",
                      "--no-progress"])
    run = measured(["dedup", str(work / "job.yaml"), "--no-progress"], keep_stderr=True)
    result["ingest_only"], result["run"] = alone, {k: v for k, v in run.items() if k != "stderr"}
    result["stage_seconds"] = stage_seconds(run["stderr"])
    growth = (run["driver_peak_rss_mb"] - alone["driver_peak_rss_mb"]) * 2**20 / args.records
    result["driver_growth_bytes_per_record"] = round(growth, 2)
    ingest, dedup = result["stage_seconds"]["ingest"], result["stage_seconds"]["dedup"]
    result["dedup_over_ingest"] = round(dedup / ingest, 2)
    dropped = {}
    for line in (work / "out" / "dedup" / "duplicates.jsonl").open("rb"):
        row = orjson.loads(line)
        dropped[row["id"]] = row["kept_id"]
    # a planted copy is found when it is dropped and kept with a record of its own planted family
    found = sum(1 for c, src in planted.items() if c in dropped
                and root_of(planted, dropped[c]) == root_of(planted, src))
    true_drops = sum(1 for c in dropped if c in planted)
    result["recall"] = round(found / max(1, len(planted)), 4)
    for lo in (0.8, 0.9):  # the planted pairs the threshold (0.8) should find, by their true Jaccard
        above = [c for c, j in jaccard.items() if j >= lo]
        hit = sum(1 for c in above if c in dropped and root_of(planted, dropped[c]) == root_of(planted, c))
        result[f"recall_true_jaccard_ge_{lo}"] = round(hit / max(1, len(above)), 4)
        result[f"planted_true_jaccard_ge_{lo}"] = len(above)
    result["precision"] = round(true_drops / max(1, len(dropped)), 4)
    result["dropped"] = len(dropped)
    result["targets"] = {"dedup_le_1_5x_ingest": result["dedup_over_ingest"] <= 1.5,
                         "driver_growth_le_20_bytes": result["driver_growth_bytes_per_record"] <= 20}
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine_speed_before",)}, indent=1))
    write_result(result, "dedup", args.out)


def stage_seconds(stderr: list[str]) -> dict[str, float]:
    """Each stage's seconds from the job's stage table on stderr (`stage status seconds ...`)."""
    out = {}
    for line in stderr:
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("ingest", "dedup") and parts[1] in ("ran", "skipped"):
            out[parts[0]] = float(parts[2])
    return out


if __name__ == "__main__":
    main()
