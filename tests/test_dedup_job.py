"""The dedup stage on Ray, end to end through the job: the same duplicates.jsonl whatever the part
boundaries and bucket counts, equal to the in-memory reference (curate.local); later stages read
only the kept records; benchmark decontamination; and nightly curation across nights, where the
tagger's counts show that tonight's copies of last night's prompts were never annotated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from test_curate import planted_pool
from test_job import DEMO_POOL, small_job

from mig_ray.curate.local import find_duplicates
from mig_ray.curate.text import conversation_text
from mig_ray.job.jobfile import load_job
from mig_ray.job.pipeline import run_job

BENCHMARK = Path(__file__).parent / "data" / "benchmark_prompts.jsonl"


def pool_records(seed: int, n: int) -> list[dict]:
    texts, _ = planted_pool(seed, n)
    return [{"id": f"r{i:05d}", "messages": [{"role": "user", "content": t[: len(t) // 2]},
                                             {"role": "assistant", "content": t[len(t) // 2:]}]}
            for i, t in enumerate(texts)]


def write_files(tmp: Path, records: list[dict], files: int) -> list[Path]:
    paths = []
    for k, chunk in enumerate(np.array_split(np.arange(len(records)), files)):
        p = tmp / f"pool-{files}-{k}.jsonl"
        p.write_bytes(b"".join(orjson.dumps(records[i]) + b"\n" for i in chunk))
        paths.append(p)
    return paths


def dedup_job(tmp: Path, paths: list[Path], out: Path, **extra) -> Path:
    return small_job(tmp, paths[0], out, **{"input.paths": [str(p) for p in paths],
                                           "dedup": {"enabled": True}, **extra})


def kept(out) -> list[str]:
    """The ids later stages read: the ingest parts' rows less the dedup stage's dropped positions."""
    dropped = set(pq.read_table(out / "dedup" / "dropped").column("position").to_pylist())
    table = pq.read_table(out / "ingest" / "parts", columns=["id", "position"]).sort_by("position")
    pairs = zip(table.column("id").to_pylist(), table.column("position").to_pylist(), strict=True)
    return [i for i, p in pairs if p not in dropped]


def test_same_duplicates_for_1_2_7_parts_and_the_in_memory_reference(tmp_path, ray_address):
    records = pool_records(5, 600)
    got = {}
    for files, rows_per_bucket in ((1, 2_000_000), (2, 3000), (7, 500)):
        out = tmp_path / f"out{files}"
        job = dedup_job(tmp_path, write_files(tmp_path, records, files), out,
                        **{"dedup.rows_per_bucket": rows_per_bucket})
        run_job(load_job(job), until="dedup")
        got[files] = (out / "dedup" / "duplicates.jsonl").read_bytes()
        kept_ids = kept(out)
        dropped = [orjson.loads(x)["id"] for x in got[files].splitlines()]
        assert sorted(kept_ids + dropped) == [r["id"] for r in records] and not set(kept_ids) & set(dropped)
    assert got[1] == got[2] == got[7]
    ref = find_duplicates([conversation_text(r["messages"]) for r in records])
    rows = [orjson.loads(x) for x in got[1].splitlines()]
    assert len(rows) > 100
    assert [(r["position"], r["kept_position"], r["reason"]) for r in rows] == [
        (int(d), int(k), "exact" if e else "near") for d, k, e in zip(ref.dropped, ref.kept, ref.exact,
                                                                              strict=True)]
    assert [r["jaccard"] for r in rows] == [round(float(j), 4) for j in ref.jaccard]
    assert all(r["kept_id"] == records[r["kept_position"]]["id"] for r in rows)


def test_decontamination_drops_13_gram_overlaps_only(tmp_path, ray_address):
    bench = [orjson.loads(x) for x in BENCHMARK.read_bytes().splitlines()]
    heron = bench[0]["instruction"].split()
    limerick = bench[1]["prompt"].split()
    library = bench[2]["turns"][0].split()  # no hyphens: its words are its whitespace-separated parts
    records = [
        {"id": "hit-13", "messages": [{"role": "user",
                                       "content": "Tell me: " + " ".join(library[1:14]).upper() + "!!"},
                                      {"role": "assistant", "content": "ok"}]},
        {"id": "miss-12", "messages": [{"role": "user", "content": "Tell me: " + " ".join(library[1:13])},
                                       {"role": "assistant", "content": "ok"}]},
        {"id": "assistant-only", "messages": [{"role": "user", "content": "hello there"},
                                              {"role": "assistant", "content": " ".join(heron)}]},
        {"id": "hit-turns", "messages": [{"role": "user", "content": "a, " + ",".join(limerick) + "?"},
                                         {"role": "assistant", "content": "no"}]},
    ]
    out = tmp_path / "out"
    job = dedup_job(tmp_path, write_files(tmp_path, records, 1), out,
                    **{"decontaminate": {"paths": [str(BENCHMARK)], "ngram": 13}})
    result = run_job(load_job(job), until="dedup")
    hits = [orjson.loads(x) for x in (out / "dedup" / "contaminated.jsonl").read_bytes().splitlines()]
    assert [h["id"] for h in hits] == ["hit-13", "hit-turns"]
    assert hits[0]["ngram"] == " ".join(library[1:14]).lower() and hits[0]["benchmark"] == str(BENCHMARK)
    assert kept(out) == ["miss-12", "assistant-only"]
    assert result["stages"]["dedup"]["counts"]["contaminated"] == 2


def test_night_2_copies_of_night_1_are_dropped_and_not_annotated(tmp_path, ray_address, quick_tagger):
    demo = [orjson.loads(x) for x in DEMO_POOL.read_bytes().splitlines()]
    night1, fresh = demo[:60], demo[60:100]
    longest = sorted(range(60), key=lambda i: -len(json.dumps(night1[i]["dialogs"])))[:30]
    copies = []
    for i in longest:
        rec = json.loads(json.dumps(night1[i]))
        rec["_id"] = f"recrawl-{i}"
        rec["dialogs"][-1]["content"] += " Thanks"
        copies.append(rec)
    f1, f2 = tmp_path / "night1.jsonl", tmp_path / "night2.jsonl"
    f1.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in night1))
    f2.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [*fresh[:20], *copies, *fresh[20:]]))
    out = tmp_path / "out"
    job = dedup_job(tmp_path, [f1], out, **{"annotate.tagger": quick_tagger})
    first = run_job(load_job(job))
    kept1 = first["stages"]["dedup"]["counts"]["kept"]
    assert first["stages"]["tag"]["counts"]["annotated"] == kept1
    job2 = dedup_job(tmp_path, [f2], out, incremental=True, **{"annotate.tagger": quick_tagger})
    second = run_job(load_job(job2))
    d = second["stages"]["dedup"]["counts"]
    rows = [orjson.loads(x) for x in (out / "dedup" / "duplicates.jsonl").read_bytes().splitlines()]
    against = {r["id"]: r["kept_id"] for r in rows if r["kept_position"] < 0}
    assert d["earlier_nights"] == 30 == len(against)
    assert json.loads((out / "diff.json").read_text())["duplicates_of_earlier_nights"] == 30
    assert all(against[f"recrawl-{i}"] == night1[i]["_id"] or against[f"recrawl-{i}"] in
               {r["_id"] for r in night1} for i in longest)
    tag = second["stages"]["tag"]["counts"]
    # tonight only the kept fresh records reach the tagger: none of the 30 copies was annotated
    assert tag["annotated"] == d["kept"] and tag["total"] == d["kept"] and d["kept"] <= 40
    # and only they reach the assembled pool (the ingest parts less dedup/dropped/)
    pool = pq.read_table(out / "assemble" / "pool.parquet", columns=["id"]).column("id").to_pylist()
    assert sorted(pool) == sorted(kept(out)) and not set(pool) & set(against)
    assert second["stages"]["assemble"]["counts"] == {"ingested": d["kept"], "selectable": len(pool),
                                                      "unselectable": d["kept"] - len(pool)}
    # without the cache the copies stay (they are new ids, and last night's records are not in the input)
    out3 = tmp_path / "out3"
    plain = run_job(load_job(dedup_job(tmp_path, [f2], out3)), until="dedup")
    assert plain["stages"]["dedup"]["counts"]["kept"] == d["kept"] + 30


def test_report_shows_the_clusters_their_sizes_examples_and_contamination_hits(tmp_path, ray_address,
                                                                               quick_tagger):
    """`mig-ray report OUTDIR` of a job with dedup and decontamination: the cluster count and size
    histogram agree with duplicates.jsonl, the largest cluster's kept record is shown beside its
    copies, and the hits are counted per benchmark file."""
    from html import escape

    from mig_ray.cli import main

    library = orjson.loads(BENCHMARK.read_bytes().splitlines()[2])["turns"][0].split()
    quote = " ".join(library[:14])
    records = pool_records(3, 150) + [
        {"id": f"quote-{i}", "messages": [{"role": "user", "content": f"Tell me {i}: {quote}"},
                                          {"role": "assistant", "content": "ok"}]} for i in range(2)]
    out = tmp_path / "out"
    job = dedup_job(tmp_path, write_files(tmp_path, records, 2), out,
                    **{"decontaminate": {"paths": [str(BENCHMARK)]}, "annotate.scorer": {"kind": "constant"},
                       "selection.n": 5, "annotate.tagger": quick_tagger})
    run_job(load_job(job))
    try:
        main(["report", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    rows = [orjson.loads(x) for x in (out / "dedup" / "duplicates.jsonl").read_bytes().splitlines()]
    clusters: dict[str, list[dict]] = {}
    for r in rows:
        clusters.setdefault(r["kept_id"], []).append(r)
    numbers = json.loads((out / "report" / "summary.json").read_text())["curation"]
    assert numbers["clusters"] == len(clusters) > 3 and numbers["dropped"] == len(rows)
    assert {int(k): v for k, v in numbers["sizes"].items()} == {
        s: sum(1 + len(v) == s for v in clusters.values()) for s in {1 + len(v) for v in clusters.values()}}
    assert numbers["contaminated"] == {str(BENCHMARK): 2}
    html = (out / "report" / "report.html").read_text()
    largest = max(len(v) for v in clusters.values())
    kept = next(k for k, v in sorted(clusters.items(), key=lambda kv: min(r["position"] for r in kv[1]))
                if len(v) == largest)
    kept_text = next(r for r in records if r["id"] == kept)["messages"][0]["content"]
    assert escape(kept_text[:200]) in html and all(escape(r["id"]) in html for r in clusters[kept][:3])
    assert escape(str(BENCHMARK)) in html and 'id="dedup-sizes"' in html
