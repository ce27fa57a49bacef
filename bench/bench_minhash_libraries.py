"""MinHash libraries against the dedup stage's own pass (issue 19: "measure, then choose"), on the
same normalised texts, 128 permutations of word 5-gram shingles, microseconds per record on one core:

- `mig_ray`: `text_signatures`, the compiled pass the stage runs (words, hashes, shingles, MinHash);
- `datasketch`: `MinHash.bulk` over each record's shingles as UTF-8 bytes (its default SHA-1 hash);
- `rensa`: `RMinHash.digest_matrix_from_token_sets` over the same shingles (its bulk Rust path);
- `shingles_in_python`: what both libraries need before they start (words, n-grams joined),
  reported apart and added to their totals.

    python bench/bench_minhash_libraries.py --records 20000   # bench/results/minhash-libraries-<date>.json

rensa is not a dependency of mig_ray: `pip install rensa` to include it (it is skipped otherwise).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import header, write_result  # noqa: E402

from mig_ray.curate.minhash import text_signatures  # noqa: E402
from mig_ray.curate.text import normalise, words  # noqa: E402

NUM_PERM, NGRAM, SEED = 128, 5, 1


def texts(n: int, seed: int = 0) -> list[str]:
    """User turns of 40-80 words from a 20,000-word vocabulary, as the dedup bench's pool has."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{j}" for j in range(20_000)]
    return [normalise(" ".join(vocab[j] for j in rng.integers(0, len(vocab), int(rng.integers(40, 81)))))
            for _ in range(n)]


def shingles(text: str) -> list[str]:
    ws = words(text)
    return [" ".join(ws[i:i + NGRAM]) for i in range(max(len(ws) - NGRAM + 1, 1))]


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pool = texts(args.records)
    per = 1e6 / len(pool)
    compile_s, _ = timed(text_signatures, pool[:10], NGRAM, NUM_PERM, SEED)
    ours_s, _ = timed(text_signatures, pool, NGRAM, NUM_PERM, SEED)
    shingle_s, sets = timed(lambda: [shingles(t) for t in pool])
    result = {**header(), "records": len(pool), "num_perm": NUM_PERM, "ngram": NGRAM,
              "us_per_record": {"mig_ray": round(ours_s * per, 2),
                                "shingles_in_python": round(shingle_s * per, 2)},
              "mig_ray_compile_seconds": round(compile_s, 2)}
    import datasketch

    encoded = [[s.encode() for s in ss] for ss in sets]
    ds_s, _ = timed(lambda: datasketch.MinHash.bulk(encoded, num_perm=NUM_PERM, seed=SEED))
    result["us_per_record"]["datasketch"] = round(ds_s * per, 2)
    result["us_per_record"]["datasketch_with_shingles"] = round((ds_s + shingle_s) * per, 2)
    result["datasketch_version"] = datasketch.__version__ if hasattr(datasketch, "__version__") else None
    try:
        import rensa
    except ImportError:
        result["rensa"] = "not installed"
    else:
        rensa.RMinHash.digest_matrix_from_token_sets(sets[:10], NUM_PERM, SEED)
        rs_s, _ = timed(rensa.RMinHash.digest_matrix_from_token_sets, sets, NUM_PERM, SEED)
        result["us_per_record"]["rensa"] = round(rs_s * per, 2)
        result["us_per_record"]["rensa_with_shingles"] = round((rs_s + shingle_s) * per, 2)
        from importlib.metadata import version

        result["rensa_version"] = version("rensa")
    print(result["us_per_record"])
    write_result(result, "minhash-libraries", args.out)


if __name__ == "__main__":
    main()
