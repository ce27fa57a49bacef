"""A Ray task's own error reaches the user as its one-line message, exit 2: not Ray's wrapper
(RayTaskError(...), the remote traceback), not "internal error". Real Ray (the session cluster)."""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.cloudpickle
from test_job import small_job

from mig_ray.cli import main
from mig_ray.errors import PoolError
from mig_ray.runtime.session import run_tasks
from mig_ray.runtime.task_errors import task_cause

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task bodies below


def _raise_pool_error(item: int) -> None:
    raise PoolError(f"pool.jsonl:{item}: field 'x' is not a string")


def _fail_batch(batch: pa.Table) -> pa.Table:
    raise PoolError("data.jsonl:7: field 'labels' must be a list")


def test_the_cause_of_a_task_and_of_a_ray_data_udf_is_the_raised_exception(ray_address):
    with pytest.raises(ray.exceptions.RayTaskError) as got:
        ray.get(ray.remote(max_retries=0)(_raise_pool_error).remote(3))
    cause = task_cause(got.value)
    assert type(cause) is PoolError and str(cause) == "pool.jsonl:3: field 'x' is not a string"
    with pytest.raises(Exception) as got:
        ray.data.from_items([{"a": 1}]).map_batches(_fail_batch, batch_format="pyarrow").take_all()
    cause = task_cause(got.value)
    assert type(cause) is PoolError and str(cause) == "data.jsonl:7: field 'labels' must be a list"
    plain = ValueError("x")
    assert task_cause(plain) is plain


def test_a_job_whose_input_breaks_in_a_ray_task_ends_in_its_one_line(tmp_path, ray_address, capsys):
    """A Parquet input cut short fails in ingest's Ray task: the CLI prints that task's PoolError,
    one line naming the file, exit 2."""
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"messages": [[{"role": "user", "content": "hi"}]] * 50}), pool)
    pool.write_bytes(pool.read_bytes()[:-40])
    job = small_job(tmp_path, pool, tmp_path / "out", **{"ray.address": ray_address})
    with pytest.raises(SystemExit) as end:
        main(["run", str(job), "--no-progress"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert end.value.code == 2, err
    assert len(err) == 1 and str(pool) in err[0], err
    assert "internal error" not in err[0] and "ray::" not in err[0] and "RayTaskError" not in err[0]


def test_run_tasks_hands_back_the_task_error_to_the_pipeline(ray_address):
    with pytest.raises(Exception) as got:
        run_tasks([1, 2], _raise_pool_error, {})
    assert type(task_cause(got.value)) is PoolError and "ray::" not in str(task_cause(got.value))
