"""A full disk under a job's output folder (a small tmpfs, mounted by the test; it needs root, as
the tests have here): the job stops with exit 2 and one line that names the folder and says the
disk is full; no stage is marked done with partial output; once space is freed, the re-run
finishes with the same bytes as a run that never failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_POOL = ROOT / "mig_ray" / "demo" / "demo_pool.jsonl"
MOUNT_BYTES = 2 << 20


def mount_tmpfs(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the tests run as root on the project's machines)")
    path.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_BYTES}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def job_file(tmp: Path, out: Path, ray_address: str) -> Path:
    emb = tmp / "emb.npz"
    if not emb.exists():
        tags = sorted({t for line in DEMO_POOL.read_text().splitlines()
                       for t in json.loads(line)["annotation"]["instag"]["content"]})
        vectors = np.random.default_rng(0).normal(size=(len(tags), 16)).astype(np.float32)
        np.savez(emb, labels=np.array(tags), embeddings=vectors)
    job = {"input": {"paths": [str(DEMO_POOL)]},
           "annotate": {"tagger": {"kind": "from-data"}, "scorer": {"kind": "field"}},
           "graph": {"label_embeddings": str(emb)}, "selection": {"n": 30}, "output": {"dir": str(out)},
           "ray": {"address": ray_address}, "progress": False}
    path = tmp / f"job-{out.parent.name}-{out.name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def run(job: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mig_ray", "run", str(job)], capture_output=True, text=True,
                          timeout=600)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "_DONE.json"}


@pytest.mark.parametrize("free_kb", [150, 330])
def test_a_full_disk_is_one_line_and_the_rerun_gives_the_same_bytes(tmp_path, ray_address, free_kb):
    ref = tmp_path / "ref" / "out"
    assert run(job_file(tmp_path, ref, ray_address)).returncode == 0
    mnt = tmp_path / "small"
    mount_tmpfs(mnt)
    try:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (MOUNT_BYTES - free_kb * 1024))
        out = mnt / "out"
        job = job_file(tmp_path, out, ray_address)
        proc = run(job)
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "the disk is full" in errors[0] and str(out) in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        done = [d.name for d in sorted(out.iterdir()) if (d / "_DONE.json").is_file()]
        assert "write" not in done, "the disk cannot have held the whole job"
        for name in done:  # a stage marked done holds exactly what an undisturbed run's does
            assert files(out / name) == files(ref / name), name
        filler.unlink()
        proc = run(job)
        assert proc.returncode == 0, proc.stderr
        for name in ("selected.jsonl", "selected.manifest.jsonl"):
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
