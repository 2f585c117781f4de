"""pass@k against direct combinatorics, and the report built from hand-made verdicts (no model, no sandbox)."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from evaluation.evaluate import EvalError, resolve_model, summarise
from evaluation.pass_at_k import markdown_table, parse_ks, pass_at_k, report, tally
from sandbox.verdict import Verdict
from tasks.problem import Problem
from tasks.problem import (
    TestSuite as Suite,  # aliased: pytest would try to collect a class named Test*
)


def _by_enumeration(n: int, c: int, k: int) -> float:
    """The definition itself: the fraction of k-subsets of n samples (c correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_estimator_equals_enumeration_of_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_by_enumeration(n, c, k), abs=1e-12), (n, c, k)


def test_edge_cases_and_unavailable_k():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0  # c = 0
    assert pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 10, 10) == 1.0  # c = n
    assert pass_at_k(10, 7, 4) == 1.0  # k > n - c: every 4-subset holds a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the plain pass rate
    assert pass_at_k(5, 2, 6) is None and pass_at_k(0, 0, 1) is None  # k > n: no estimate
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 0)


def test_stable_where_binomials_overflow_a_float():
    # C(1000, 100) is about 6e139 and C(2000, 1000) overflows a float: the product form must still be exact enough.
    for n, c, k in [(1000, 1, 100), (1000, 37, 100), (2000, 5, 1000), (200, 3, 80)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)


def test_parse_ks():
    assert parse_ks("10,1,5,5") == [1, 5, 10]
    for bad in ("", "0,1", "1,x", "-1"):
        with pytest.raises(ValueError, match="--k"):
            parse_ks(bad)


def _problem(pid: str, difficulty: str = "", kind: str = "") -> Problem:
    return Problem(problem_id=pid, source="hand", prompt="", tests=Suite(kind="assert", cases=["assert True"]),
                   difficulty=difficulty, meta={"template_kind": kind} if kind else {})


# Hand-made verdicts: problem -> outcomes of its samples (n = 4, except where the sandbox failed).
OUTCOMES = {
    "p0": ["passed", "passed", "passed", "passed"],  # c = n
    "p1": ["failed", "runtime_error", "compile_error", "failed"],  # c = 0
    "p2": ["passed", "failed", "passed", "passed"],  # k = 2 > n - c = 1
    "p3": ["failed", "passed", "infra_error", "compile_error"],  # n = 3 after dropping the sandbox failure
}


def test_report_of_hand_made_verdicts_matches_direct_computation():
    problems = [_problem("p0", "introductory", "supervised"), _problem("p1", "introductory", "tests-only"),
                _problem("p2", "interview", "tests-only"), _problem("p3", "interview", "supervised")]
    samples = [{"problem_id": pid, "sample_index": i} for pid, outs in OUTCOMES.items() for i in range(len(outs))]
    verdicts = [Verdict(problem_id=pid, outcome=o) for pid, outs in OUTCOMES.items() for o in outs]
    rep = summarise(problems, samples, verdicts, [1, 2, 4])

    def direct(pids, k):
        values = []
        for pid in pids:
            outs = [o for o in OUTCOMES[pid] if o != "infra_error"]
            n, c = len(outs), outs.count("passed")
            if k <= n:
                values.append(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))
        return float(sum(values) / len(values)) if values else None

    overall = rep["overall"]
    assert overall["problems"] == 4 and overall["samples"] == 15 and overall["infra_errors"] == 1
    assert overall["pass@k"]["1"] == pytest.approx(direct(OUTCOMES, 1))  # (1 + 0 + 3/4 + 1/3) / 4
    assert overall["pass@k"]["2"] == pytest.approx(direct(OUTCOMES, 2))
    # k = 4 > n = 3 for p3: the mean is over the three problems that have 4 samples, and it says so.
    assert overall["pass@k"]["4"] == pytest.approx(direct(["p0", "p1", "p2"], 4))
    assert overall["counted@k"] == {"1": 4, "2": 4, "4": 3}
    assert overall["outcomes"] == {"passed": 8, "failed": 4, "runtime_error": 1, "compile_error": 2}
    assert sum(overall["outcome_fractions"].values()) == pytest.approx(1.0)

    intro, interview = rep["by"]["difficulty"]["introductory"], rep["by"]["difficulty"]["interview"]
    assert intro["pass@k"]["1"] == pytest.approx(direct(["p0", "p1"], 1)) == pytest.approx(0.5)
    assert interview["pass@k"]["2"] == pytest.approx(direct(["p2", "p3"], 2))
    tests_only = rep["by"]["template_kind"]["tests-only"]
    assert tests_only["problems"] == 2 and tests_only["pass@k"]["1"] == pytest.approx(direct(["p1", "p2"], 1))

    table = markdown_table(rep, [1, 2, 4])
    assert "| all | 4 | 15 | 52.08 |" in table  # 100 * (1 + 0 + 0.75 + 1/3) / 4
    assert "(3 problems)" in table and "difficulty: interview" in table


def test_k_above_every_n_is_unavailable_not_computed():
    rep = report(tally(["a", "a", "b", "b"], ["passed", "failed", "failed", "failed"]), [1, 2, 3])
    assert rep["overall"]["pass@k"] == {"1": 0.25, "2": 0.5, "3": None}
    assert "| n/a |" in markdown_table(rep, [1, 2, 3])
    with pytest.raises(ValueError, match="unknown outcome"):
        tally(["a"], ["exploded"])


def test_resolve_model_finds_the_latest_checkpoint_of_a_run_dir(tmp_path):
    from learner.checkpoints import CheckpointState, RunCheckpoints

    run = tmp_path / "run"
    checkpoints = RunCheckpoints(run)
    for step in (9, 40, 100, 120):
        checkpoint = checkpoints.begin(step)
        checkpoint.hf_dir.mkdir()
        (checkpoint.hf_dir / "config.json").write_text("{}")
        if step != 120:  # step 120 is still being written (no state.json): never chosen
            checkpoints.commit(checkpoint, CheckpointState(step, 1, "rl", 0.0))
    assert [c.step for c in checkpoints.all()] == [9, 40, 100] and checkpoints.latest().state().step == 100
    assert resolve_model(str(run)) == str(run / "checkpoints" / "step_000100" / "hf")
    assert resolve_model(str(run / "checkpoints" / "step_000040")) == str(run / "checkpoints" / "step_000040" / "hf")
    hf = run / "checkpoints" / "step_000009" / "hf"
    assert resolve_model(str(hf)) == str(hf)
    assert resolve_model("tiny:gpt2") == "tiny:gpt2" and resolve_model("org/hub-name") == "org/hub-name"
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="not a saved model"):
        resolve_model(str(tmp_path / "empty"))
