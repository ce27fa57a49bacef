"""`mig-ray report` on summary files with the wrong types (hand-edited, or written by another
tool): every one ends in exit 0 or a one-line error (exit 2), never an internal error. The files
are a real selection's summary with random parts replaced (hypothesis)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig_ray.cli import main

DATA = Path(__file__).resolve().parent / "data"

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def selection(tmp_path_factory) -> Path:
    """A real selection (in process, given label embeddings) whose summary the cases edit."""
    tmp = tmp_path_factory.mktemp("sel")
    pool = DATA / "mig_example_tulu3_10.jsonl"
    tags = set()
    for line in pool.read_text().splitlines():
        try:
            tags |= set(json.loads(line)["annotation"]["instag"]["content"])
        except ValueError:
            continue
    emb = tmp / "emb.npz"
    vectors = np.random.default_rng(0).normal(size=(len(tags), 8))
    np.savez(emb, labels=np.array(sorted(tags)), embeddings=vectors)
    with pytest.raises(SystemExit) as e:
        main(["select", str(pool), "-n", "4", "-o", str(tmp / "sel.jsonl"), "--label-embeddings", str(emb),
              "--no-progress"])
    assert e.value.code in (0, None)
    return tmp


def paths_of(value, prefix=()):
    """Every key path of a JSON value (dicts and lists), the root included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from paths_of(v, (*prefix, i))


def replaced(value, path, new):
    if not path:
        return new
    out = dict(value) if isinstance(value, dict) else list(value)
    out[path[0]] = replaced(value[path[0]], path[1:], new)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_report_on_a_summary_with_wrong_types_is_never_an_internal_error(selection, tmp_path_factory, capsys,
                                                                         data):
    summary = json.loads((selection / "sel.summary.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(paths_of(summary))
        path = data.draw(st.sampled_from(paths))
        summary = replaced(summary, path, data.draw(JSON_VALUES))
    work = tmp_path_factory.mktemp("case")
    for name in ("sel.jsonl", "sel.manifest.jsonl", "sel.labels.json"):
        shutil.copy(selection / name, work / name)
    (work / "sel.summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit) as e:
        main(["report", str(work / "sel.jsonl"), "-o", str(work / "report")])
    err = capsys.readouterr().err
    assert e.value.code in (0, None, 2), err
    assert "internal error" not in err, err
    if e.value.code == 2:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
