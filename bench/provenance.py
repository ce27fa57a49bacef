"""What a benchmark result was measured on: the code (commit, uncommitted changes) and the machine's
speed at the time (this machine's speed was seen to vary 2-3x between hours)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def code_version() -> dict:
    """The commit measured and whether tracked files differed from it (a dirty run is not that commit)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "argv": [Path(sys.argv[0]).name, *sys.argv[1:]]}


def machine_speed() -> dict:
    """A fixed pure-Python loop and a float32 matrix product: the speed of the machine right now,
    to read the other numbers against."""
    t0 = time.perf_counter()
    s = 0
    for i in range(5_000_000):
        s += i * i
    py = time.perf_counter() - t0
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    a @ a
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    mm = time.perf_counter() - t0
    return {"python_loop_5m_seconds": py, "matmul_f32_gflops": 10 * 2 * 1024**3 / mm / 1e9,
            "loadavg": os.getloadavg()}


def header() -> dict:
    """The fields every result file opens with: when, on what machine, which code, how fast now."""
    return {"date": dt.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "code": code_version(),
            "machine_speed_before": machine_speed()}


def write_result(result: dict, name: str, out: Path | None) -> Path:
    """Stamp the machine's speed after the run and write `results/<name>-<date>.json` (or `out`)."""
    result["machine_speed_after"] = machine_speed()
    out = out or ROOT / "bench" / "results" / f"{name}-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out
