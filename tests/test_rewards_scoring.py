"""Rewards as pure functions of hand-built verdicts: coarse and adaptive rewards, the fine-grained category
table of RLTF-SPEC.md section 3, per-token returns checked against hand-computed numbers, and `score`."""
from __future__ import annotations

import numpy as np
import pytest

from configs.schema import RewardConfig
from rewards import (
    REWARD_FUNCTIONS,
    BaselineTracker,
    BatchScorer,
    GradedSample,
    NoRewardError,
    adaptive_reward,
    classify,
    coarse_reward,
    group_baselines,
    penalty_per_token,
    score,
    score_program,
    token_returns,
    verdict_rewards,
)
from sandbox.verdict import ProgramError, Verdict


def verdict(outcome, *, reason="", run=0, passed=0, err=None) -> Verdict:
    return Verdict(problem_id="p", outcome=outcome, reason=reason, tests_run=run, tests_passed=passed,
                   tests_total=run, error=err)


def compile_verdict(program: str) -> Verdict:
    """The verdict the sandbox builds for a program that does not compile, from a real SyntaxError."""
    try:
        compile(program, "<program>", "exec")
    except SyntaxError as exc:
        return verdict("compile_error", err=ProgramError(type(exc).__name__, str(exc.msg), exc.lineno))
    raise AssertionError(f"program compiles: {program!r}")


def runtime(type_, message, line, frames=None, reason="") -> Verdict:
    frames = [[line, "f"]] if frames is None and line is not None else (frames or [])
    return verdict("runtime_error", reason=reason, run=1, err=ProgramError(type_, message, line, frames))


# -------------------------------------------------------------------------------------------- coarse/adaptive


@pytest.mark.parametrize("outcome,expected", [
    ("compile_error", -1.0), ("runtime_error", -0.6), ("failed", -0.3), ("passed", 1.0),
])
def test_coarse_reward_per_outcome(outcome, expected):
    assert coarse_reward(outcome) == expected
    assert coarse_reward(verdict(outcome)) == expected


@pytest.mark.parametrize("run,passed", [(4, 0), (4, 1), (3, 2), (7, 6), (0, 0)])
def test_adaptive_reward_follows_pass_ratio_for_failed_only(run, passed):
    ratio = passed / run if run else 0.0
    assert adaptive_reward(verdict("failed", run=run, passed=passed)) == pytest.approx(-0.3 + 1.3 * ratio)
    # Other outcomes keep their coarse reward whatever tests passed before the error.
    assert adaptive_reward(verdict("runtime_error", run=run, passed=passed)) == -0.6
    assert adaptive_reward(verdict("passed", run=run, passed=run)) == 1.0


def test_infra_error_has_no_reward():
    with pytest.raises(NoRewardError):
        coarse_reward("infra_error")
    with pytest.raises(ValueError, match="unknown outcome 'crashed'"):
        coarse_reward("crashed")
    infra = verdict("infra_error")
    assert score(infra, "x = 1\n", [1, 2], tokenizer=None) is None
    assert verdict_rewards(infra, "x = 1\n") == {
        "reward": None, "adaptive_reward": None, "fine_category": None, "blamed_line": None}


# ------------------------------------------------------------------------------------------------ categories

PROGRAM = "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n"


@pytest.mark.parametrize("program,truncated,expected", [
    # Most syntax errors: the SyntaxError's line.
    ("def f(x):\n    y = x +* 2\n    return y\n", False, ("line", 2)),
    ("def f(x)\n    return x\n", False, ("line", 1)),
    ("def f(x):\n    y = (x + 2\n    return y\n", False, ("line", 2)),
    ("x = 1\n    y = 2\n", False, ("line", 2)),  # unexpected indent is a located syntax error
    ("def f():\n    def g():\n        nonlocal q\n        q = 1\n", False, ("line", 3)),
    # No useful location.
    ("def f(x):\n    if x:\n\treturn 1\n        return 2\n", False, ("ignore", None)),
    ("def f(x):\n    if x:\n        return 1\n  return 2\n", False, ("ignore", None)),
    ('def f(x):\n    """Doc\n    return x\n', False, ("ignore", None)),
    ("def f(a, a):\n    return a\n", False, ("ignore", None)),
    ("def f():\n    from os import *\n", False, ("ignore", None)),
    # Cut off by the length limit: a syntax error on the last line blames the whole program ...
    ("def f(x):\n    y = x + 1\n    return y +", True, ("whole", None)),
    ("def f(x):\n    y = x + 1\n    return (y", True, ("whole", None)),
    ("def f(x):\n    ", True, ("whole", None)),
    # ... but not one on an earlier line, and not when the program ended by itself.
    ("def f(x):\n    y = x +* 1\n    return y +", True, ("line", 2)),
    ("def f(x):\n    y = x + 1\n    return y +", False, ("line", 3)),
])
def test_syntax_error_categories(program, truncated, expected):
    blame = classify(compile_verdict(program), program, truncated=truncated)
    assert (blame.category, blame.line) == expected


@pytest.mark.parametrize("v,expected", [
    (runtime("IndexError", "list index out of range", 4), ("line", 4)),
    (runtime("ZeroDivisionError", "division by zero", 2, frames=[[5, "<module>"], [2, "f"]]), ("line", 2)),
    # No line from the sandbox: the innermost program frame still places it.
    (runtime("KeyError", "'a'", None, frames=[[5, "<module>"], [3, "f"]]), ("line", 3)),
    (runtime("NameError", "name 'y' is not defined", None, frames=[]), ("ignore", None)),  # raised in test code
    (runtime("AssertionError", "", 3), ("ignore", None)),  # empty message
    (runtime("RecursionError", "maximum recursion depth exceeded", 2), ("whole", None)),
    (runtime("MemoryError", "", 2, reason="memory"), ("whole", None)),
    (verdict("runtime_error", reason="timeout"), ("whole", None)),
    (verdict("runtime_error", reason="memory"), ("whole", None)),
    (verdict("runtime_error", reason="signal", err=ProgramError("Signal", "killed by SIGSEGV")), ("ignore", None)),
    (runtime("ValueError", "bad", 99), ("ignore", None)),  # a line outside the program cannot be blamed
    (verdict("failed", run=3, passed=1), ("ignore", None)),
    (verdict("passed", run=3, passed=3), ("ignore", None)),
])
def test_runtime_and_outcome_categories(v, expected):
    blame = classify(v, PROGRAM)
    assert (blame.category, blame.line) == expected


def test_missing_module_without_a_frame_is_found_by_its_import_statement():
    program = "import os\nimport numpyy.linalg as la\nfrom json import loads\n\ndef f():\n    return 1\n"
    v = runtime("ModuleNotFoundError", "No module named 'numpyy'", None, frames=[])
    assert classify(v, program).line == 2
    v = runtime("ImportError", "cannot import name 'loadz' from 'json' (/usr/lib/json/__init__.py)", None, [])
    assert classify(v, program.replace("loads", "loadz")).line == 3


# --------------------------------------------------------------------------------------------------- returns


def returns_of(reward, baseline, mask, cfg=RewardConfig()):
    mask = np.asarray(mask, dtype=np.float32)
    return token_returns(reward, baseline, mask, penalty_per_token(mask, cfg))


def test_token_returns_hand_computed():
    mask = [0, 1, 1, 0, 0]
    # flat: r_t = R - b - 0.3 * mask_t
    assert np.allclose(returns_of(-0.6, 0.2, mask), [-0.8, -1.1, -1.1, -0.8, -0.8])
    # paper: the penalty is scaled by T / blamed = 5 / 2
    assert np.allclose(returns_of(-0.6, 0.2, mask, RewardConfig(fine_grained_scale="paper")),
                       [-0.8, -1.55, -1.55, -0.8, -0.8])
    # fine-grained off: no penalty at all; a custom penalty scales the blamed tokens only
    assert np.allclose(returns_of(-0.6, 0.2, mask, RewardConfig(fine_grained=False)), [-0.8] * 5)
    assert np.allclose(returns_of(1.0, 0.0, mask, RewardConfig(penalty=0.5)), [1.0, 0.5, 0.5, 1.0, 1.0])
    # whole program blamed: paper and flat agree (T / T = 1)
    assert np.allclose(returns_of(-0.6, -0.3, [1, 1, 1], RewardConfig(fine_grained_scale="paper")), [-0.6] * 3)
    assert returns_of(1.0, 0.0, []).shape == (0,) and returns_of(1.0, 0.0, [0, 1]).dtype == np.float32


def test_greedy_baseline_remembers_the_latest_greedy_decode_per_problem():
    tracker = BaselineTracker("greedy")
    tracker.observe_greedy("a", -0.3)
    tracker.observe_sample("a", 1.0)  # a sample: not the greedy baseline
    tracker.observe_greedy("b", -1.0)
    tracker.observe_greedy("b", -0.6)  # the latest greedy decode wins
    assert (tracker.baseline("a"), tracker.baseline("b"), tracker.baseline("c")) == (-0.3, -0.6, 0.0)
    out = [returns_of(r, tracker.baseline(p), m) for r, p, m in
           zip([1.0, -0.6, -1.0], "abc", [np.zeros(4), np.array([0, 0, 1]), np.ones(2)])]
    assert [r.shape for r in out] == [(4,), (3,), (2,)]
    assert np.allclose(out[0], [1.3] * 4) and np.allclose(out[1], [0.0, 0.0, -0.3]) and np.allclose(out[2], [-1.3, -1.3])


def test_best_and_none_baselines():
    best = BaselineTracker("best")
    best.observe_greedy("p", -1.0)
    for reward in (0.35, -0.6):
        best.observe_sample("p", reward)
    assert best.baseline("p") == 0.35 and not best.has_baseline("q")
    restored = BaselineTracker.from_state_dict(best.state_dict())
    assert restored.baseline("p") == 0.35 and restored.mode == "best"
    none = BaselineTracker("none")
    none.observe("p", 1.0, greedy=True)
    assert none.baseline("p") == 0.0


def test_group_baselines_are_the_mean_of_the_other_samples_of_the_same_problem():
    rewards = [1.0, -0.3, -0.3, -1.0, 1.0, 1.0, 0.35]
    groups = ["a", "a", "a", "a", "b", "b", "c"]
    baselines = group_baselines(groups, rewards)
    assert baselines == pytest.approx([(-0.3 - 0.3 - 1.0) / 3, (1.0 - 0.3 - 1.0) / 3, (1.0 - 0.3 - 1.0) / 3,
                                       (1.0 - 0.3 - 0.3) / 3, 1.0, 1.0, 0.0])
    advantages = [r - b for r, b in zip(rewards, baselines)]
    assert advantages[0] > 0 > advantages[3]  # the pass is pushed up, the compile error down
    assert advantages[4] == advantages[5] == 0.0  # every sample passed: nothing to learn from this problem
    assert sum(advantages[:4]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="2 groups for 3 rewards"):
        group_baselines(["a", "b"], [1.0, 0.0, 0.0])


class Tokens:
    """A tokenizer of one id per character (enough for scoring without a fine-grained mask)."""

    all_special_ids: list = []


def graded(problem_id, outcome, group, passed=0, run=4, text="x = 1\n"):
    from types import SimpleNamespace

    program = SimpleNamespace(text=text, token_ids=list(range(len(text))), logprobs=[-1.0] * len(text),
                              truncated=False)
    return GradedSample(SimpleNamespace(problem_id=problem_id, program_prefix=""), [7], program,
                        verdict(outcome, run=run, passed=passed), group=group)


def test_batch_scorer_turns_a_batch_of_verdicts_into_trajectories():
    cfg = RewardConfig(baseline="group", baseline_cap=0.0, adaptive=False, fine_grained=False)
    samples = [graded("a", "passed", 0, passed=4), graded("a", "failed", 0), graded("b", "failed", 1),
               graded("b", "failed", 1), graded("b", "infra_error", 1)]
    batch = BatchScorer(cfg, Tokens()).score_batch(samples, policy_version=3, sampler_id="s")
    assert (batch.scored, batch.passed, batch.reward_sum) == (4, 1, pytest.approx(1.0 - 0.9))
    assert [t.problem_id for t in batch.trajectories] == ["a", "a", "b", "b"]  # the infra error has no reward
    # group baseline (the other sample of the problem), capped at 0: the pass keeps +1, its failing peer -0.3
    assert [t.baseline_reward for t in batch.trajectories] == pytest.approx([-0.3, 0.0, -0.3, -0.3])
    assert [t.returns[0] for t in batch.trajectories] == pytest.approx([1.3, -0.3, 0.0, 0.0])
    assert {(t.policy_version, t.sampler_id, len(t.returns)) for t in batch.trajectories} == {(3, "s", 6)}
    skipping = BatchScorer(cfg, Tokens(), skip_zero_returns=True).score_batch(samples)
    assert [t.problem_id for t in skipping.trajectories] == ["a", "a"] and skipping.scored == 4


def test_greedy_decodes_feed_the_greedy_baseline_only_when_it_is_chosen():
    greedy = [graded("a", "failed", 0, passed=2)]
    scorer = BatchScorer(RewardConfig(baseline="greedy"), Tokens())
    assert scorer.needs_greedy
    batch = scorer.score_batch([graded("a", "passed", 0, passed=4)], greedy)
    assert batch.trajectories[0].baseline_reward == pytest.approx(-0.3 + 1.3 * 0.5)
    assert not BatchScorer(RewardConfig(baseline="group"), Tokens()).needs_greedy


def test_a_named_outcome_reward_is_chosen_by_reward_function(monkeypatch):
    cfg = RewardConfig(function="strict")
    with pytest.raises(ValueError, match="no outcome reward named 'strict'"):
        BatchScorer(cfg, Tokens()).score_batch([graded("a", "failed", 0)])
    monkeypatch.setitem(REWARD_FUNCTIONS, "strict", lambda v: 2.0 if v.outcome == "passed" else -2.0)
    assert BatchScorer(cfg, Tokens()).score_batch([graded("a", "failed", 0, passed=3)]).trajectories[0].reward == -2.0
    coarse = BatchScorer(RewardConfig(function="coarse", adaptive=True), Tokens())  # the name wins over the flag
    assert coarse.score_batch([graded("a", "failed", 0, passed=3)]).trajectories[0].reward == -0.3


# ----------------------------------------------------------------------------------------------------- score


def test_score_combines_reward_blame_mask_and_returns():
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    program = "def f(x):\n    return x / 0\n"
    ids = tok(program)["input_ids"]  # ends with EOS, which covers no character
    v = runtime("ZeroDivisionError", "division by zero", 2)
    scored = score(v, program, ids, tok, RewardConfig())
    line = "    return x / 0"
    assert (scored.category, scored.blamed_line, scored.reward, scored.penalty) == ("line", 2, -0.6, 0.3)
    assert scored.mask.sum() == len(line.encode())
    returns = scored.returns(-0.3)
    assert returns.shape == (len(ids),) and returns.dtype == np.float32
    assert np.allclose(returns[scored.mask == 0], -0.3) and np.allclose(returns[scored.mask == 1], -0.6)
    paper = score(v, program, ids, tok, RewardConfig(fine_grained_scale="paper"))
    assert paper.penalty == pytest.approx(0.3 * len(ids) / len(line))
    assert np.allclose(paper.returns()[paper.mask == 1], -0.6 - 0.3 * len(ids) / len(line))
    off = score(v, program, ids, tok, RewardConfig(fine_grained=False))
    assert off.category == "line" and off.mask.sum() == 0 and np.allclose(off.returns(0.4), -1.0)

    failed = verdict("failed", run=4, passed=3)
    scored = score(failed, program, ids, tok, RewardConfig(adaptive=False))
    assert scored.reward == -0.3 and scored.adaptive_reward == pytest.approx(0.675) and scored.mask.sum() == 0
    assert score(failed, program, ids, tok).reward == pytest.approx(0.675)
    assert verdict_rewards(failed, program) == {
        "reward": -0.3, "adaptive_reward": pytest.approx(0.675), "fine_category": "ignore", "blamed_line": None}
    # Ids that do not spell the program: scored without the fine-grained term, and the reason is kept.
    odd = score(v, program, ids[:-5], tok, RewardConfig())
    assert odd.mask.sum() == 0 and "spell" in odd.mask_error and np.allclose(odd.returns(), -0.6)


def test_score_program_uses_the_prefix_and_the_truncation_flag():
    from types import SimpleNamespace

    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    problem = SimpleNamespace(program_prefix="def f(x):\n    y = x\n")
    text = "    return (y +"
    generated = SimpleNamespace(text=text, token_ids=tok(text, add_special_tokens=False)["input_ids"], truncated=True)
    program = problem.program_prefix + text
    cut = score_program(compile_verdict(program), problem, generated, tok)
    assert (cut.category, cut.reward) == ("whole", -1.0) and cut.mask.tolist() == [1.0] * len(text)
    generated.truncated = False
    ended = score_program(compile_verdict(program), problem, generated, tok)
    assert (ended.category, ended.blamed_line) == ("line", 3) and ended.mask.sum() == len(text)
    # A runtime error in the prefix (the prompt's own code) blames no sampled token.
    in_prefix = score_program(runtime("NameError", "name 'x' is not defined", 2), problem, generated, tok)
    assert (in_prefix.category, in_prefix.blamed_line) == ("line", 2) and in_prefix.mask.sum() == 0
