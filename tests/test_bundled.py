"""`bundled:NAME` wherever a file is taken: the cluster jobs load on a machine that has only the
package, and `select` / `compare --valid-tags bundled:valid_tags_tulu3.json` read the shipped list."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from fixtures import DATA, TULU3_TAGS_SHA256
from test_cli import manifest, mig_ray

from mig_ray.annotate.embedding_tagger import EmbeddingTaggerConfig
from mig_ray.annotate.tags import load_vocabulary
from mig_ray.annotate.vllm_tagger import VLLMTaggerConfig
from mig_ray.bundled import resolve_bundled
from mig_ray.job.jobfile import load_job
from mig_ray.selection.config import SelectConfig

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_JOBS = ("tulu3-cluster.yaml", "nightly.yaml")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_valid_tags_is_the_released_list_in_the_installed_package():
    import mig_ray

    path = resolve_bundled("bundled:valid_tags_tulu3.json")
    assert path.is_relative_to(Path(mig_ray.__file__).parent)
    assert _sha256(path) == TULU3_TAGS_SHA256
    assert resolve_bundled("bundled:demo_pool.jsonl").name == "demo_pool.jsonl"
    assert resolve_bundled("~/x.json") == Path.home() / "x.json"  # any other value: the path itself
    for bad in ("bundled:nope.json", "bundled:", "bundled:../data"):
        with pytest.raises(ValueError, match="no bundled file .*shipped: bundled:demo_pool.jsonl"):
            resolve_bundled(bad)


@pytest.mark.parametrize("name", CLUSTER_JOBS)
def test_cluster_job_loads_with_only_the_package(tmp_path, name):
    """The valid-tag files of the cluster jobs are bundled names, so loading the job needs no /shared;
    only the pool and the output (a cluster's volume or bucket) are pointed at this machine."""
    raw = yaml.safe_load((ROOT / "jobs" / name).read_text())
    tagger_tags = raw["annotate"]["tagger"]["options"]["valid_tags"]
    assert raw["graph"]["valid_tags"] == tagger_tags == "bundled:valid_tags_tulu3.json"
    pool = tmp_path / "pool.jsonl"
    shutil.copy(DATA / "mig_example_tulu3_10.jsonl", pool)
    job = load_job(ROOT / "jobs" / name, {"input.paths": [str(pool)], "output.dir": str(tmp_path / "out")})
    assert _sha256(resolve_bundled(job.graph.valid_tags)) == TULU3_TAGS_SHA256
    tagger = VLLMTaggerConfig(**job.annotate.tagger.options)  # what the tagger actors build
    shipped = json.loads(resolve_bundled("bundled:valid_tags_tulu3.json").read_text())
    assert tagger.vocabulary() == load_vocabulary(resolve_bundled(tagger_tags))
    assert set(tagger.vocabulary()) == set(shipped) and len(shipped) == 4531


def test_taggers_and_select_config_take_the_bundled_name():
    shipped = sorted(json.loads(resolve_bundled("bundled:valid_tags_tulu3.json").read_text()))
    assert EmbeddingTaggerConfig(vocabulary="bundled:valid_tags_tulu3.json").vocabulary_tags() == shipped
    cfg = SelectConfig(pool=DATA / "mig_example_tulu3_10.jsonl", n=2, out=Path("o.jsonl"),
                       valid_tags="bundled:valid_tags_tulu3.json")
    assert cfg.valid_tags == resolve_bundled("bundled:valid_tags_tulu3.json")
    with pytest.raises(ValueError, match="no bundled file 'valid_tags.json'"):
        VLLMTaggerConfig(model="m", valid_tags="bundled:valid_tags.json")


def test_select_and_compare_read_bundled_valid_tags(tmp_path):
    """The same selection as with a copy of the list given by its path; compare's MIG agrees."""
    pool = DATA / "mig_example_tulu3_10.jsonl"
    copy = tmp_path / "tags.json"
    shutil.copy(resolve_bundled("bundled:valid_tags_tulu3.json"), copy)
    common = ["-n", 4, "--target-degree", 2, "--embedding-cache-dir", tmp_path / "cache", "--no-progress"]
    by_name, by_path = tmp_path / "name" / "sel.jsonl", tmp_path / "path" / "sel.jsonl"
    mig_ray("select", pool, "-o", by_name, "--valid-tags", "bundled:valid_tags_tulu3.json", *common)
    mig_ray("select", pool, "-o", by_path, "--valid-tags", copy, *common)
    assert manifest(by_name) == manifest(by_path) and len(manifest(by_name)) == 4
    summary = json.loads(by_name.with_name("sel.summary.json").read_text())
    assert summary["graph"]["labels"] == json.loads(by_path.with_name("sel.summary.json").read_text())[
        "graph"]["labels"]
    mig_ray("compare", pool, "-o", tmp_path / "cmp", "--methods", "mig,random",
            "--valid-tags", "bundled:valid_tags_tulu3.json", *common)
    got = [json.loads(x)["id"] for x in (tmp_path / "cmp" / "mig.manifest.jsonl").read_text().splitlines()]
    assert got == [r["id"] for r in manifest(by_name)]
    bad = mig_ray("select", pool, "-o", tmp_path / "bad.jsonl", "--valid-tags", "bundled:tulu3.json",
                  *common, check=False)
    assert bad.returncode == 2 and "no bundled file 'tulu3.json'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
