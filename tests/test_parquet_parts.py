"""A Parquet pool may be a folder of part-*.parquet files (the job's assembled pool): its rows are
the parts' rows in name order. `mig-ray select` on the folder, in process and sharded (shard
blocks that cut across parts), selects what naive greedy selects and writes the same records as
on the one-file pool."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pools import random_pool
from test_distributed import config, manifest_ids, naive_ids

from mig_ray.pools.annotated import parquet_rows
from mig_ray.selection.run import run_select


def _pools(tmp_path, seed: int = 5, n: int = 90):
    vocab, emb, labels, scores = random_pool(seed, n=n, n_labels=25)
    table = pa.table({"id": [f"r{i}" for i in range(n)], "tags": labels, "score": scores.tolist(),
                      "position": list(range(n))})
    one = tmp_path / "one.parquet"
    pq.write_table(table, one)
    folder = tmp_path / "pool.parquet"
    folder.mkdir()
    for k, (lo, hi) in enumerate([(0, 7), (7, 7), (7, 50), (50, n)]):  # an empty part, uneven sizes
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{k:06d}.parquet", row_group_size=10)
    npz = tmp_path / "emb.npz"
    np.savez(npz, labels=np.array(vocab), embeddings=emb)
    return one, folder, npz, (vocab, emb, labels, scores)


def test_parquet_rows_reads_any_rows_in_the_order_asked(tmp_path):
    one, folder, _, _ = _pools(tmp_path)
    rows = np.array([89, 0, 7, 49, 50, 6, 8, 7])
    assert parquet_rows(folder, rows).to_pylist() == pq.read_table(one).take(rows).to_pylist()


@pytest.mark.parametrize("shards", [1, 3])
def test_select_on_a_folder_of_parts_equals_naive_and_the_one_file(tmp_path, ray_address, shards):
    one, folder, npz, (vocab, emb, labels, scores) = _pools(tmp_path)
    k = 90  # every record: a row lost or read twice changes the manifest
    want = naive_ids(vocab, emb, labels, scores, k, 0.7)
    extra = {"shards": shards, "ray_address": ray_address} if shards > 1 else {}
    on_folder = config(tmp_path, folder, npz, "folder", n=k, **extra)
    on_file = config(tmp_path, one, npz, "file", n=k)
    run_select(on_folder)
    run_select(on_file)
    assert manifest_ids(on_folder) == want
    assert on_folder.out.read_bytes() == on_file.out.read_bytes()


CASES = ["clean", "valid_tags", "empty_labels", "all_dropped", "duplicate", "negative", "null_labels",
         "null_in_list", "nan_score"]


def _hostile_parts(tmp_path, case: str):
    """A folder of parts in the job's pool shape (id, labels, score) with one kind of trouble."""
    rng = np.random.default_rng(CASES.index(case))
    n = 60
    vocab = [f"t{j}" for j in range(30)]
    labels = [[vocab[j] for j in rng.integers(0, 30, rng.integers(0, 5))] for _ in range(n)]
    scores = rng.uniform(0, 5, n).tolist()
    ids = [f"r{i}" for i in range(n)]
    valid = None
    if case == "valid_tags":
        valid = set(vocab[::2])
    if case == "empty_labels":
        labels[0], labels[13], labels[n - 1] = [], [], []
    if case == "all_dropped":
        valid, labels[5] = set(vocab[:10]), ["t25", "t26"]
    if case == "duplicate":
        ids[40] = ids[3]
    if case == "negative":
        scores[22] = -1.0
    if case == "null_labels":
        labels[17] = None
    if case == "null_in_list":
        labels[8] = ["t1", None]
    if case == "nan_score":
        scores[30] = float("nan")
    table = pa.table({"id": ids, "labels": pa.array(labels, pa.list_(pa.string())),
                      "score": pa.array(scores, pa.float64()), "position": list(range(n))})
    folder = tmp_path / "pool.parquet"
    folder.mkdir()
    for k, (lo, hi) in enumerate([(0, 9), (9, 9), (9, 41), (41, n)]):
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{k:06d}.parquet", row_group_size=7)
    return folder, valid


@pytest.mark.parametrize("case", CASES)
def test_the_columnar_read_of_a_job_pool_equals_the_row_by_row_read(tmp_path, monkeypatch, case):
    """`_Builder.add_columns` (whole row groups of a flat id/labels/score pool) gives what `add`
    gives row by row: ids, scores, label codes, vocabulary order, lines, counts and rejects, on
    whole pools and on shard blocks that cut row groups; with anything to reject it steps aside."""
    from mig_ray.pools import annotated
    from mig_ray.pools.annotated import Block, read_annotated
    from mig_ray.pools.fields import FieldSpec
    from mig_ray.pools.rejects import Rejects

    folder, valid = _hostile_parts(tmp_path, case)
    spec = FieldSpec(labels_field="labels", score_field="score", id_field="id")
    fast_calls = []
    original = annotated._Builder.add_columns

    def counted(self, table, first):
        took = original(self, table, first)
        fast_calls.append(took)
        return took

    def read(block):
        rejects = Rejects(None)
        pool = read_annotated(folder, spec, valid, rejects, block=block)
        return pool, rejects.rows

    for block in (None, Block(0, 60, 1), Block(5, 33, 6), Block(33, 60, 34)):
        monkeypatch.setattr(annotated._Builder, "add_columns", counted)
        fast, fast_rejects = read(block)
        monkeypatch.setattr(annotated._Builder, "add_columns", lambda self, table, first: False)
        slow, slow_rejects = read(block)
        assert fast.ids == slow.ids and fast.vocab == slow.vocab and fast.counts == slow.counts
        for name in ("scores", "label_indptr", "label_codes", "locations", "lines"):
            assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
            assert getattr(fast, name).dtype == getattr(slow, name).dtype, name
        assert repr(fast_rejects) == repr(slow_rejects)  # repr: a NaN score equals itself
    if case in ("clean", "valid_tags", "empty_labels", "all_dropped"):
        assert all(fast_calls) and fast_calls  # nothing to reject: every row group went the columnar way
    else:
        assert not all(fast_calls) and any(fast_calls)  # the troubled group only steps aside
