"""Reference solutions of the real benchmarks pass in the sandbox; mutated ones do not.

Uses the data in ../shared/data (skipped when absent) through the project's loaders.
"""
from __future__ import annotations

import ast
import random
import subprocess
import sys
import warnings

import pytest

from configs.schema import SandboxConfig
from sandbox import LocalSandboxPool
from tasks import load_problems

# Compiling the references warns (invalid escapes in regex strings); that is the data's style, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")

# Generous limits: the reference check is about correctness, and MBPP 123 alone takes ~3-5 s on a busy core.
LIMITS = SandboxConfig(test_timeout_s=20.0, program_timeout_s=60.0)

# APPS problems whose reference solution prints another of several correct answers (APPS has no checker);
# each one was checked to print a different valid answer with a plain `python3` as well.
APPS_SEVERAL_CORRECT_OUTPUTS = {
    "apps/train/33", "apps/train/2378", "apps/train/2386", "apps/train/2398", "apps/train/2400",  # intro/interview
    "apps/train/2023", "apps/train/2029",  # competition
}


@pytest.fixture(scope="module")
def pool():
    with LocalSandboxPool(2, LIMITS) as p:
        yield p


def _failures(pool, problems):
    jobs = [(p, p.solutions[0]) for p in problems if p.solutions]
    verdicts = pool.run(jobs)
    return len(jobs), {p.problem_id: v.summary() for (p, _), v in zip(jobs, verdicts) if not v.passed}


def test_all_mbpp_references_pass(pool, shared_data):
    problems = load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"), split=None)
    count, failures = _failures(pool, problems)
    assert count == 974 and failures == {}


def test_mbpp_challenge_tests_pass(pool, shared_data):
    problems = [p for p in load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"), split=None) if p.grading_tests]
    verdicts = pool.run([(p, p.solutions[0]) for p in problems], use_grading_tests=True)
    assert len(problems) >= 5 and all(v.passed for v in verdicts)
    assert all(v.tests_total == len(p.grading_tests.cases) for p, v in zip(problems, verdicts))


def test_all_humaneval_canonical_solutions_pass(pool, shared_data):
    problems = load_problems(str(shared_data / "humaneval" / "HumanEval.jsonl.gz"), split=None)
    count, failures = _failures(pool, problems)
    assert count == 164 and failures == {}


def test_apps_references_pass_except_several_correct_outputs(pool, shared_data):
    problems = []
    for name in ("apps_subset_intro_interview.jsonl", "apps_subset_competition.jsonl", "original_layout"):
        problems += load_problems(str(shared_data / "apps" / name), split=None)
    assert {p.tests.kind for p in problems} == {"stdio", "call"}
    count, failures = _failures(pool, problems)
    assert count >= 150
    assert set(failures) == APPS_SEVERAL_CORRECT_OUTPUTS, failures
    assert all(f["outcome"] == "failed" for f in failures.values())  # wrong answer, not an error


# --- mutations --------------------------------------------------------------------------------------------------
_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
          ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}


def _mutants(code: str, rng: random.Random) -> dict[str, str]:
    """One mutant of each kind (where the program has a place for it): constant changed, operator swapped,
    a statement dropped (replaced by `pass`)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # MBPP code has regexes in plain strings
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(code)
    consts = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int]
    ops = [n for n in ast.walk(tree) if isinstance(n, (ast.BinOp, ast.Compare))
           and type(n.op if isinstance(n, ast.BinOp) else n.ops[0]) in _SWAPS]
    stmts = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    stmts = [s for f in stmts for s in f.body if not isinstance(s, (ast.FunctionDef, ast.Expr))]
    if consts:
        node = rng.choice(consts)
        node.value += 1
        out["constant"] = ast.unparse(tree)
        node.value -= 1
    if ops:
        node = rng.choice(ops)
        if isinstance(node, ast.BinOp):
            old, node.op = node.op, _SWAPS[type(node.op)]()
            out["operator"] = ast.unparse(tree)
            node.op = old
        else:
            old = node.ops[0]
            node.ops[0] = _SWAPS[type(old)]()
            out["operator"] = ast.unparse(tree)
            node.ops[0] = old
    if len(stmts) > 1:
        victim = rng.choice(stmts)
        for parent in ast.walk(tree):
            body = getattr(parent, "body", None)
            if isinstance(body, list) and victim in body:
                body[body.index(victim)] = ast.Pass()
                break
        out["dropped line"] = ast.unparse(tree)
    return out


def _fresh_interpreter_passes(program: str, tests: list[str], setup: str) -> bool | None:
    """Independent judge: a plain interpreter running program + setup + asserts; None on timeout."""
    try:
        result = subprocess.run([sys.executable, "-I", "-c", "\n".join([program, setup, *tests])],
                                capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    return result.returncode == 0


@pytest.mark.slow
def test_mutated_mbpp_references_do_not_pass(shared_data):
    rng = random.Random(0)
    problems = load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"), split=None)
    problems = [p for p in rng.sample(problems, 45) if p.problem_id != "mbpp/123"]
    jobs, labels = [], []
    for p in problems:
        for kind, program in _mutants(p.solutions[0], rng).items():
            jobs.append((p, program))
            labels.append(kind)
    with LocalSandboxPool(2, SandboxConfig(test_timeout_s=3.0, program_timeout_s=10.0)) as pool:
        verdicts = pool.run(jobs)
    judged = 0
    for (p, program), kind, verdict in zip(jobs, labels, verdicts):
        truth = _fresh_interpreter_passes(program, p.tests.cases, p.tests.setup_code)
        if truth is None:
            assert not verdict.passed
            continue
        judged += 1
        # Some mutants are equivalent to the original (a dropped dead line, a constant that does not matter):
        # those pass in both; every mutant the plain interpreter fails must fail in the sandbox too.
        assert verdict.passed == truth, (p.problem_id, kind, program, verdict.summary())
    failing = sum(not v.passed for v in verdicts)
    assert judged > 80 and failing > 0.6 * len(verdicts), (judged, failing, len(verdicts))
