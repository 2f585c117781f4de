"""Held-out evaluation during training, its parts without Ray: which problems, what scores, what the plot draws.
The whole path (samplers evaluating between batches, the record in metrics.jsonl, the metric on the Prometheus
endpoint) runs in tests/test_loop.py and tests/test_cluster_e2e.py."""
from __future__ import annotations

import pytest

from configs import load_config
from evaluation.heldout import heldout_scores, load_heldout, spread


def test_the_heldout_set_is_spread_over_the_split_and_disjoint_from_training():
    cfg = load_config("smoke", [])
    problems = load_heldout(cfg)
    assert len(problems) == cfg.eval.limit == 8
    assert all(p.split == "heldout" and p.eval_tests.cases for p in problems)
    assert len({p.meta["template"] for p in problems}) == 8  # not the first template's instances only
    assert all(p.problem_id.split("/")[2] == "heldout" for p in problems)  # never a training instance
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 5) == [1, 2]


def test_scores_are_greedy_pass_at_1_and_sampled_pass_at_1_and_n():
    ids = ["a"] * 5 + ["b"] * 5
    decoding = (["greedy"] + ["sampled"] * 4) * 2
    outcomes = ["passed", "passed", "failed", "failed", "failed",  # a: greedy passes, 1 of 4 sampled
                "failed", "failed", "failed", "failed", "runtime_error"]  # b: nothing passes
    scores = heldout_scores(ids, decoding, outcomes, 4)
    assert scores == {"eval_pass@1_greedy": 0.5, "eval_pass@1": pytest.approx(0.125), "eval_pass@4": 0.5}


def test_evaluation_needs_a_heldout_set():
    from configs import ConfigError

    with pytest.raises(ConfigError, match="eval.every_steps"):
        load_config("smoke", ["--data.eval_split=null"])
    cfg = load_config("smoke", ["--eval.every_steps=0", "--data.eval_split=null"])
    assert cfg.eval.every_steps == 0
