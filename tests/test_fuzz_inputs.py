"""No 'internal error' from what a user feeds the program (issue 22, point 2): job files generated
from the job schema, and `select` / `compare` argument lists generated from the commands' own
parameters, each end in exit 0 or one `error:` line with exit 2. Bounded here; bench/fuzz_cli.py
runs the same generators for minutes."""

from __future__ import annotations

import pytest
from fuzz_inputs import argument_lists, job_files, make_case_folder, run_case
from hypothesis import HealthCheck, event, given, settings

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


def check(outcome, what) -> None:
    event(f"exit {outcome.code}")
    assert not outcome.bug, f"{what}\nexit {outcome.code}\n{outcome.err[-3000:]}"


@settings(max_examples=250, deadline=None, suppress_health_check=FIXTURES)
@given(job=job_files())
def test_job_files_end_in_a_check_or_one_error_line(job, tmp_path_factory, s3_endpoint):
    """`mig-ray run JOB --check`: the job's keys, values, annotators' options, inputs and outputs."""
    folder = make_case_folder(tmp_path_factory.mktemp("job"))
    check(run_case(["run", "job.yaml", "--check"], folder, job), job)


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURES)
@given(job=job_files(light=True, wrong=False))
def test_jobs_with_values_of_the_schemas_types_run_or_stop_with_one_error_line(job, tmp_path_factory,
                                                                              ray_address):
    """Whole runs on the session's Ray: a value the schema takes must not crash a stage later (as
    `layout: annotated` once did)."""
    folder = make_case_folder(tmp_path_factory.mktemp("run"))
    check(run_case(["run", "job.yaml"], folder, job), job)


@pytest.mark.parametrize("command,wrong,examples", [("select", True, 100), ("select", False, 60),
                                                    ("compare", True, 50), ("compare", False, 30)])
def test_argument_lists_end_in_a_selection_or_one_error_line(command, wrong, examples, tmp_path_factory,
                                                             ray_address):
    """Values of any type (`wrong`: most stop at parsing), and values of each option's type (most
    run the selection or the comparison)."""
    @settings(max_examples=examples, deadline=None, suppress_health_check=FIXTURES)
    @given(argv=argument_lists(command, light=True, wrong=wrong))
    def case(argv):
        folder = make_case_folder(tmp_path_factory.mktemp(command))
        check(run_case(argv, folder), argv)

    case()


@pytest.mark.parametrize("extra,message", [
    (["--out", "a\nb.txt"], "error: a\\nb.txt: output must end in .jsonl or .parquet"),
    (["--groups", "no.such.field"],
     "error: groups: no selectable record has the group field 'no.such.field'"),
])
def test_what_the_fuzzing_found_ends_in_one_error_line(extra, message, tmp_path):
    """A newline in a path the user gave (escaped in the message), and a group field no record has
    (was 'internal error ValueError: caps must be a non-empty list')."""
    folder = make_case_folder(tmp_path)
    argv = ["select", "pool.jsonl", "-n", "3", "-o", "out/sel.jsonl", "--label-embeddings", "emb.npz",
            "--no-progress", *extra]
    outcome = run_case(argv, folder)
    assert outcome.code == 2 and not outcome.bug, outcome.err
    assert outcome.err.rstrip("\n").rsplit("\n", 1)[-1].startswith(message)


def test_a_job_with_relative_paths_runs_from_its_folder(tmp_path, ray_address):
    """input.paths, output.dir, label vectors and benchmark files relative to the folder the job
    runs from: Ray's tasks run in folders of their own, so the job hands them absolute paths (the
    fuzzing found `pool.jsonl: No such file or directory` from the ingest task)."""
    from fuzz_inputs import base_job

    folder = make_case_folder(tmp_path)
    outcome = run_case(["run", "job.yaml"], folder, base_job(compare=False))
    assert outcome.code == 0, outcome.err
    assert len((folder / "out" / "selected.jsonl").read_text().splitlines()) == 4


def test_more_shard_actors_than_the_local_ray_can_hold_is_one_error_line_not_a_hang(tmp_path,
                                                                                     ray_address):
    """`selection.shards: 3052` on a 10-record pool (found by bench/fuzz_cli.py) left 3044 shard
    actors waiting forever for a CPU of the session's 8: the job and `select` now say so, exit 2.
    (A regression here shows as a hang: the actors wait, nothing fails.)"""
    from fuzz_inputs import base_job

    folder = make_case_folder(tmp_path)
    job = base_job(compare=False)
    job["selection"]["shards"] = 9

    outcome = run_case(["run", "job.yaml"], folder, job)
    argv = ["select", "pool.jsonl", "-n", "3", "-o", "out/sel.jsonl", "--label-embeddings", "emb.npz",
            "--no-progress", "--shards", "3052"]
    selected = run_case(argv, folder)
    assert outcome.code == 2 and not outcome.bug, outcome.err
    assert "selection.shards 9 x ray.shard_actors.num_cpus 1 needs 9 CPUs at once; this Ray has 8" \
        in outcome.err
    outcome = selected
    assert outcome.code == 2, outcome.err
    # one actor a block, a block at least a line: 10 actors
    assert "--shards 3052: 10 shard actors of 1 CPUs need 10 CPUs at once; this Ray has 8: use fewer shards" \
        in outcome.err


def test_select_does_not_start_thousands_of_actor_processes_on_a_laptop(tmp_path):
    import subprocess
    import sys

    folder = make_case_folder(tmp_path)
    argv = ["select", "pool.jsonl", "-n", "3", "-o", "sel.jsonl", "--label-embeddings", "emb.npz",
            "--shards", "100000"]
    proc = subprocess.run([sys.executable, "-m", "mig_ray", *argv], cwd=folder, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "a local Ray would start 100000 actor processes" in proc.stderr


def test_an_output_under_an_unknown_users_home_is_a_relative_path(tmp_path):
    """`-o ~nosuchuser/...` was 'internal error RuntimeError: Could not determine home directory'
    (pathlib's expanduser; found by bench/fuzz_cli.py): like the shell, the name stays as written."""
    folder = make_case_folder(tmp_path)
    argv = ["select", "pool.jsonl", "-n", "3", "-o", "~nosuchuser-mig/sel.jsonl", "--label-embeddings",
            "emb.npz", "--no-progress"]
    outcome = run_case(argv, folder)
    assert outcome.code == 0, outcome.err
    assert len((folder / "~nosuchuser-mig" / "sel.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("extra,code,message", [
    (["--labels-field", "nope", "--sample-embeddings-field", "x"], 0, "compare: "),
    (["--sample-embeddings-field", "dialogs"], 2,
     "error: pool.jsonl: field 'dialogs': not one length of numbers"),
])
def test_compare_sample_embeddings_of_no_record_or_of_the_wrong_shape(extra, code, message, tmp_path):
    """No selectable record (every label list missing) with an embeddings field was `internal error
    AxisError` (found by bench/fuzz_cli.py); a field of dicts was a TypeError."""
    folder = make_case_folder(tmp_path)
    argv = ["compare", "pool.jsonl", "-n", "3", "-o", "out", "--label-embeddings", "emb.npz",
            "--no-progress", "--methods", "mig,random,score,kcenter", *extra]
    outcome = run_case(argv, folder)
    assert outcome.code == code and not outcome.bug, outcome.err
    assert outcome.err.rstrip("\n").rsplit("\n", 1)[-1].startswith(message)
