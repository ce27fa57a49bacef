"""The in-process engine (`shards: 1`) checkpoints as the sharded one does: the same file, the
same fingerprint. A `select` stopped part-way resumes from its checkpoint, evaluates fewer gains
than a run from scratch, and still gives the naive reference's order; a checkpoint of other
options, or a damaged one, is not used. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_distributed import config, manifest_ids, naive_ids, write_pool

import mig_ray.selection.run as select_run
from mig_ray.selection.checkpoint import fingerprint
from mig_ray.selection.config import output_paths
from mig_ray.selection.run import run_select


class Stop(Exception):
    """The test's kill: raised from the round hook once the selection is far enough."""


def stopped_at(cfg, share: float) -> int:
    """Run `cfg` until `share` of its picks are committed, then stop it as a kill would (the
    checkpoint every chunk: checkpoint_seconds 0); how many the checkpoint holds."""
    def hook(done: int, actors: list) -> None:
        if done >= share * cfg.n:
            raise Stop

    with pytest.raises(Stop):
        run_select(cfg, on_round=hook)
    ckpt = output_paths(cfg.out)["checkpoint"]
    with np.load(ckpt) as z:
        assert str(z["fingerprint"]) == fingerprint(cfg)
        return len(z["positions"])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.3, 0.95), gain=st.sampled_from(["gradient", "exact"]))
def test_a_stopped_local_select_resumes_with_less_work_and_the_naive_order(tmp_path_factory, seed, share,
                                                                           gain):
    tmp = tmp_path_factory.mktemp("ckpt")
    pool, emb, vocab, e, labels, scores = write_pool(tmp, seed, n=400, n_labels=30, dup_every=0)
    k = 200
    whole = config(tmp, pool, emb, "whole", n=k, gain=gain)
    fresh = run_select(whole)["greedy"]
    cfg = config(tmp, pool, emb, "resumed", n=k, gain=gain, checkpoint_seconds=0.0)
    saved = stopped_at(cfg, share)
    assert 0 < saved < k
    summary = run_select(cfg)
    greedy = summary["greedy"]
    assert greedy["engine"] == "local" and greedy["resumed_from_checkpoint"] == saved
    n = summary["counts"]["selectable"]
    after = greedy["first_pass_evaluations"] + greedy["evaluations_after_first_pass"]
    assert greedy["first_pass_evaluations"] == n - saved
    assert after < n + fresh["evaluations_after_first_pass"]  # the work saved
    assert manifest_ids(cfg) == manifest_ids(whole) == naive_ids(vocab, e, labels, scores, k, 0.7, gain=gain)
    assert cfg.out.read_bytes() == whole.out.read_bytes()
    assert not output_paths(cfg.out)["checkpoint"].exists()  # a finished selection leaves none


def test_a_checkpoint_of_other_options_or_a_damaged_one_is_not_used(tmp_path, capsys):
    pool, emb, vocab, e, labels, scores = write_pool(tmp_path, 5, n=300, n_labels=25)
    cfg = config(tmp_path, pool, emb, "a", n=120, checkpoint_seconds=0.0)
    stopped_at(cfg, 0.5)
    other = cfg.model_copy(update={"phi_b": 0.5})
    assert run_select(other)["greedy"].get("resumed_from_checkpoint", 0) == 0
    stopped_at(cfg, 0.5)
    ckpt = output_paths(cfg.out)["checkpoint"]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    summary = run_select(cfg)
    assert summary["greedy"].get("resumed_from_checkpoint", 0) == 0
    assert (ckpt.parent / "quarantine" / ckpt.name).stat().st_size == 100
    assert "warning: " in capsys.readouterr().err
    assert manifest_ids(cfg) == naive_ids(vocab, e, labels, scores, 120, 0.7)
    assert json.loads(cfg.out.with_name("sel.summary.json").read_text())["counts"]["selected"] == 120


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), share=st.floats(0.3, 0.95), gain=st.sampled_from(["gradient", "exact"]),
       threads=st.integers(2, 3), batch=st.sampled_from([0, 1, 7, 4096]))
def test_the_threaded_in_process_greedy_gives_the_naive_order_and_resumes(tmp_path_factory, monkeypatch, seed,
                                                                         share, gain, threads, batch):
    """Above THREADED_MIN rows on several cores, `select` runs the certified rounds over threads: the
    naive order, the single engine's bytes and information, and a stopped run resumes from its
    checkpoint (THREADED_MIN lowered to reach it on a small pool)."""
    tmp = tmp_path_factory.mktemp("threads")
    pool, emb, vocab, e, labels, scores = write_pool(tmp, seed, n=300, n_labels=25)
    k = 150
    single = config(tmp, pool, emb, "single", n=k, gain=gain, batch=batch)
    one = run_select(single)
    assert "threads" not in one["greedy"]
    with monkeypatch.context() as mp:  # hypothesis runs the examples under one fixture: undone each time
        mp.setattr(select_run, "THREADED_MIN", 0)
        mp.setattr(select_run, "available_cores", lambda: threads)
        whole = config(tmp, pool, emb, "whole", n=k, gain=gain, batch=batch)
        summary = run_select(whole)
        assert summary["greedy"]["threads"] == threads
        want = naive_ids(vocab, e, labels, scores, k, 0.7, gain=gain)
        assert manifest_ids(whole) == manifest_ids(single) == want
        assert whole.out.read_bytes() == single.out.read_bytes()
        assert summary["information"] == one["information"]
        # one candidate a shard a round (3 at most, ties aside): the stop comes before the last pick
        cfg = config(tmp, pool, emb, "resumed", n=k, gain=gain, batch=min(batch, 1), checkpoint_seconds=0.0)
        saved = stopped_at(cfg, share)
        assert 0 < saved < k
        again = run_select(cfg)
        assert again["greedy"]["resumed_from_checkpoint"] == saved and again["greedy"]["threads"] == threads
        assert cfg.out.read_bytes() == single.out.read_bytes()
        assert again["information"] == one["information"]
