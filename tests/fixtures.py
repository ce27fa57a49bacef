"""Real third-party fixtures kept in the checkout (sources and licences: tests/data/README.md)."""
from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
# The 4,531 released Tulu3 valid tags ship in the package; tests read that copy.
TULU3_TAGS = Path(__file__).resolve().parents[1] / "mig_ray" / "data" / "valid_tags_tulu3.json"
# sha256 of configs/valid_tag_path.json in the MIG paper's repository (yichengchen24/MIG).
TULU3_TAGS_SHA256 = "ccc19ed88d94a89e902e6701721ed5dde94e89e4143a5936324f01a859662d23"
