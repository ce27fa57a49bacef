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
from mig_ray.selection import run_select


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
