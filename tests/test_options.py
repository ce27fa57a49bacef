"""One definition of each selection option (mig_ray/core/options.py): `select` and `compare` have a
flag per field with the model's default, the job file's `graph:`/`selection:` sections hold the same
fields with the same defaults and bounds, and the engines' SelectConfig is built on the model."""

from __future__ import annotations

import pytest
import typer

from mig_ray.cli import app
from mig_ray.core.options import DICT_OPTIONS, SelectionOptions, graph_defaults, option_fields, parse_pairs
from mig_ray.job.jobfile import GraphSpec, SelectionSpec
from mig_ray.selection.config import SelectConfig


def _params(command: str) -> dict:
    cmd = typer.main.get_command(app).commands[command]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("command", ["select", "compare"])
def test_every_option_is_a_flag_with_the_models_default(command):
    params = _params(command)
    for name, flag in option_fields().items():
        field = SelectionOptions.model_fields[name]
        assert name in params, f"{command} has no flag for {name}"
        p = params[name]
        assert f"--{flag}" in p.opts, (name, p.opts)
        if name in DICT_OPTIONS:  # a repeatable GROUP=CAP flag: its default parses to the model's
            assert p.multiple and parse_pairs(flag, p.default) == field.default, (name, p.default)
        else:
            assert p.default == field.default, (name, p.default, field.default)
        assert p.help and field.description and p.help.startswith(field.description), name


def test_the_job_file_and_select_config_hold_the_same_fields():
    job_fields = GraphSpec.model_fields | SelectionSpec.model_fields
    for name, field in SelectionOptions.model_fields.items():
        for where, fields in (("job", job_fields), ("SelectConfig", SelectConfig.model_fields)):
            assert name in fields, f"{where} lacks {name}"
            assert fields[name].default == field.default and fields[name].metadata == field.metadata, \
                (where, name)


def test_a_bound_of_the_model_is_a_bound_of_the_flag(tmp_path):
    from typer.testing import CliRunner

    pool = tmp_path / "pool.jsonl"
    pool.write_text("{}\n")
    got = CliRunner().invoke(app, ["select", str(pool), "-n", "1", "-o", str(tmp_path / "o.jsonl"),
                                   "--checkpoint-every", "-1", "--phi-b", "1.5"])
    assert got.exit_code == 2
    assert "--checkpoint-every: Input should be greater than or equal to 0" in got.output
    assert "--phi-b: Input should be less than 1" in got.output


def test_a_repeated_quota_flag_reaches_the_config_as_the_models_dict(tmp_path):
    from typer.testing import CliRunner

    pool = tmp_path / "pool.jsonl"
    pool.write_text("{}\n")
    out = tmp_path / "o.jsonl"
    got = CliRunner().invoke(app, ["select", str(pool), "-n", "10", "-o", str(out), "--groups", "source",
                                   "--quota", "math=0.4", "--quota", "human=2", "--quota", "web=1.5"])
    assert got.exit_code == 2 and "quota 'web': a share above 1" in got.output, got.output
    got = CliRunner().invoke(app, ["select", str(pool), "-n", "10", "-o", str(out), "--quota", "math"])
    assert got.exit_code == 2 and "--quota: expected GROUP=CAP" in got.output, got.output
    got = CliRunner().invoke(app, ["select", str(pool), "-o", str(out)])
    assert got.exit_code == 2 and "give n (how many samples) or budget_tokens" in got.output, got.output
    cfg = SelectConfig(pool=pool, n=10, out=out, groups="source", quotas=parse_pairs(
        "quota", ["math=0.4", "human=2"]))
    assert cfg.quotas == {"math": 0.4, "human": 2} and isinstance(cfg.quotas["human"], int)


@pytest.mark.parametrize(("threshold", "degree", "bundled", "want"), [
    (None, None, True, (0.9, 5.0)), (None, None, False, (0.9, None)), (0.7, None, True, (0.7, None)),
    (None, 3.0, False, (0.9, 3.0)), (0.5, 8.0, True, (0.5, 8.0))])
def test_graph_defaults_apply_to_unset_options_only(threshold, degree, bundled, want):
    got = graph_defaults(SelectionOptions(sim_threshold=threshold, target_degree=degree), bundled)
    assert got[:2] == want and got[2]


def test_the_job_file_reference_is_up_to_date():
    """docs/job-file.md is what mig_ray.job.reference renders from the models (regenerate with
    `python -m mig_ray.job.reference > docs/job-file.md`)."""
    from pathlib import Path

    from mig_ray.job.reference import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "job-file.md"
    assert doc.read_text(encoding="utf-8") == render(), "docs/job-file.md is stale: regenerate it"


def test_the_reference_names_every_key_of_the_job_file():
    """Every key of every section (and every annotator's options) has a row with a description."""
    from mig_ray.job.annotators import SCORERS, TAGGERS, config_class
    from mig_ray.job.jobfile import JobConfig, keys_at
    from mig_ray.job.reference import render

    doc = render()
    rows = {line.split("`")[1]: line for line in doc.splitlines() if line.startswith("| `")}
    sections = [(), ("input",), ("annotate",), ("annotate", "tagger"), ("annotate", "scorer"), ("graph",),
                ("selection",), ("output",), ("ray",), ("ray", "shard_actors"), ("compare",)]
    for loc in sections:
        for key in keys_at(JobConfig, loc):
            name = ".".join((*loc, key))
            assert name in rows, name
            assert not rows[name].rstrip().endswith("|  |"), f"{name} has no description"
    for section, registry in (("annotate.tagger", TAGGERS), ("annotate.scorer", SCORERS)):
        for kind in registry:
            for key in config_class(registry, kind).model_fields:
                assert f"{section}.options.{key}" in rows, (kind, key)


def test_an_unknown_key_lists_the_keys_allowed_there(tmp_path):
    from mig_ray.errors import JobError
    from mig_ray.job.jobfile import parse_job

    data = {"input": {"paths": [str(tmp_path)]}, "selection": {"n": 1, "phii": "pow"},
            "output": {"dir": str(tmp_path / "o")}}
    with pytest.raises(JobError) as e:
        parse_job(data, "job.yaml")
    assert "unknown key 'selection.phii'" in str(e.value)
    allowed = str(e.value).split("allowed here: ")[1].split(")")[0].split(", ")
    assert set(allowed) == set(SelectionSpec.model_fields)
