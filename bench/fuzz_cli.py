"""The property tests of tests/test_fuzz_inputs.py for minutes instead of a few hundred examples:
job files generated from the job schema (checked with `run --check`, and whole runs on a local Ray,
the embedding and static taggers included), `select` and `compare` argument lists generated from
the commands' own parameters. Counts the examples, their exits, and every internal error (the
target is 0), each with its input, into bench/results/fuzz-cli-<date>.json.

    python bench/fuzz_cli.py --minutes 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from fuzz_inputs import argument_lists, job_files, make_case_folder, run_case  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from provenance import header, write_result  # noqa: E402

# (name, strategy, argv of a case (None: the case is the argv), cases in a row): light cases are
# many and fast; whole runs that may load a model (the embedding and static taggers, MiniLM for the
# labels) are few and slow
KINDS = [
    ("job-check", job_files(), ["run", "job.yaml", "--check"], 40),
    ("job-run", job_files(wrong=False), ["run", "job.yaml"], 2),
    ("job-run-light", job_files(light=True, wrong=False), ["run", "job.yaml"], 5),
    ("select-wrong", argument_lists("select"), None, 20),
    ("select", argument_lists("select", wrong=False), None, 10),
    ("compare-wrong", argument_lists("compare"), None, 20),
    ("compare", argument_lists("compare", wrong=False), None, 10),
]


@dataclass
class Tally:
    counts: dict[str, Counter]
    seconds: Counter
    bugs: list[dict]


def run_chunk(name: str, strategy, argv: list[str] | None, in_a_row: int, chunk: int, stop: float, work: Path,
              tally: Tally) -> None:
    """`in_a_row` cases of one kind (hypothesis seeded by the chunk's number), each in a folder of
    its own; a bug is recorded with its input, not shrunk."""

    @seed(chunk)
    @settings(max_examples=in_a_row, deadline=None, database=None, phases=["generate"],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def one(case) -> None:
        if time.monotonic() >= stop:
            return
        folder = make_case_folder(Path(tempfile.mkdtemp(dir=work)))
        t0 = time.monotonic()
        outcome = run_case(argv or case, folder, case if argv else None)
        tally.seconds[name] += time.monotonic() - t0
        tally.counts[name]["examples"] += 1
        tally.counts[name][f"exit {outcome.code}"] += 1
        if outcome.bug:
            tally.counts[name]["internal errors"] += 1
            tally.bugs.append({"kind": name, "case": repr(case)[:2000], "exit": outcome.code,
                               "stderr": outcome.err[-2000:]})
            print(f"BUG {name}: {outcome.err.strip().splitlines()[-1][:300]}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)

    one()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to generate cases")
    ap.add_argument("--out", type=Path, default=None, help="result file (default bench/results/...)")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer

    from mig_ray.runtime.session import ray_up

    work = Path(tempfile.mkdtemp(prefix="mig_ray-fuzz-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="fuzz", AWS_SECRET_ACCESS_KEY="fuzz", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_EC2_METADATA_DISABLED="true")
    ray_up(None, num_cpus=8)

    result = header()
    tally = Tally({name: Counter() for name, *_ in KINDS}, Counter(), [])
    stop = time.monotonic() + args.minutes * 60
    chunk = 0
    while time.monotonic() < stop:
        run_chunk(*KINDS[chunk % len(KINDS)], chunk, stop, work, tally)
        chunk += 1
        print(f"{sum(c['examples'] for c in tally.counts.values())} examples, {len(tally.bugs)} internal "
              "errors", flush=True)

    server.stop()
    result.update(minutes=args.minutes, examples=sum(c["examples"] for c in tally.counts.values()),
                  internal_errors=len(tally.bugs), per_kind={k: dict(v) for k, v in tally.counts.items()},
                  seconds_per_kind=dict(tally.seconds), bugs=tally.bugs)
    write_result(result, "fuzz-cli", args.out)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if tally.bugs else 0)


if __name__ == "__main__":
    main()
