"""The bundled demo pool is what tools/make_demo_pool.py makes: the generator lives outside the
package (only its output ships), and regenerating it gives the same bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_demo_pool_is_the_generators_output(tmp_path):
    out = tmp_path / "demo_pool.jsonl"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_demo_pool.py"), str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == (ROOT / "mig_ray" / "demo" / "demo_pool.jsonl").read_bytes()


def test_the_generator_is_not_in_the_package():
    assert not list((ROOT / "mig_ray").rglob("make_demo_pool.py"))
