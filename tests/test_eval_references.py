"""Reference solutions of MBPP and HumanEval score pass@1 = 1.0 through the eval's own grading and aggregation,
programs mutated to return wrong answers score 0.0, and the eval's verdicts re-grade identically with
`launch.py execute`.

Uses ../shared/data through the `shared_data` fixture (skipped when absent).
"""
from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from configs.schema import SandboxConfig
from evaluation.command import write_outputs
from evaluation.evaluate import EvalResult, grade, summarise
from sandbox import LocalSandboxPool
from tasks import load_problems

REPO = Path(__file__).resolve().parent.parent
SAMPLE = 30
# Generous limits: correctness is the point, and two busy cores slow some MBPP references to seconds.
LIMITS = SandboxConfig(test_timeout_s=20.0, program_timeout_s=60.0)

# Appended to a program: the entry point now returns a wrong value of a plausible type (negated bool, int + 1,
# string + "?", one more list or tuple element, ...), so every test that checks its result fails.
WRONG_ANSWER_WRAPPER = '''

def _rltf_wrong(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "?"
    if isinstance(value, list):
        return value + [None]
    if isinstance(value, tuple):
        return value + (None,)
    return 0 if value is None else None

_rltf_original = {name}

def {name}(*args, **kwargs):
    return _rltf_wrong(_rltf_original(*args, **kwargs))
'''


def _entry_point(problem) -> str:
    """HumanEval names it; for MBPP, the first function the program defines that its first test calls."""
    if problem.tests.entry_point:
        return problem.tests.entry_point
    defined = [n.name for n in ast.parse(problem.solutions[0]).body if isinstance(n, ast.FunctionDef)]
    first_test = problem.tests.cases[0]
    called = sorted((first_test.find(name + "("), name) for name in defined if name + "(" in first_test)
    assert called, f"{problem.problem_id}: no function of the reference is called by {first_test!r}"
    return called[0][1]


def _sample(shared_data: Path) -> list:
    rng = random.Random(6)
    mbpp = load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"), split="test")
    humaneval = load_problems(str(shared_data / "humaneval" / "HumanEval.jsonl.gz"))
    return rng.sample(mbpp, SAMPLE) + rng.sample(humaneval, SAMPLE)


@pytest.fixture(scope="module")
def graded(shared_data):
    """References (sample_index 0) and their wrong-answer mutants, graded as the eval grades: grading tests."""
    problems = _sample(shared_data)
    references = [{"problem_id": p.problem_id, "sample_index": 0, "program": p.solutions[0], "truncated": False}
                  for p in problems]
    mutants = [{"problem_id": p.problem_id, "sample_index": 0,
                "program": p.solutions[0] + WRONG_ANSWER_WRAPPER.format(name=_entry_point(p)), "truncated": False}
               for p in problems]
    with LocalSandboxPool(2, LIMITS) as pool:
        ref_verdicts = grade(pool, problems, references, use_grading_tests=True)
        mutant_verdicts = grade(pool, problems, mutants, use_grading_tests=True)
    return problems, references, ref_verdicts, mutants, mutant_verdicts


@pytest.mark.parametrize("source", ["mbpp", "humaneval"])
def test_references_score_pass_at_1_of_one(graded, source):
    problems, references, verdicts, _, _ = graded
    keep = [i for i, p in enumerate(problems) if p.source == source]
    rep = summarise([problems[i] for i in keep], [references[i] for i in keep], [verdicts[i] for i in keep], [1])
    failures = {problems[i].problem_id: verdicts[i].summary() for i in keep if not verdicts[i].passed}
    assert rep["overall"]["problems"] == SAMPLE and failures == {}
    assert rep["overall"]["pass@k"]["1"] == 1.0
    assert rep["overall"]["outcome_fractions"]["passed"] == 1.0


@pytest.mark.parametrize("source", ["mbpp", "humaneval"])
def test_wrong_answer_mutants_score_pass_at_1_of_zero(graded, source):
    problems, _, _, mutants, verdicts = graded
    keep = [i for i, p in enumerate(problems) if p.source == source]
    rep = summarise([problems[i] for i in keep], [mutants[i] for i in keep], [verdicts[i] for i in keep], [1])
    survivors = [problems[i].problem_id for i in keep if verdicts[i].passed]
    assert rep["overall"]["problems"] == SAMPLE and survivors == []
    assert rep["overall"]["pass@k"]["1"] == 0.0
    assert rep["overall"]["infra_errors"] == 0
    # Wrong answers, not crashes: the mutation keeps the program runnable and only its results are wrong.
    assert rep["overall"]["outcomes"]["failed"] >= SAMPLE * 0.8


def test_written_verdicts_regrade_identically_with_execute(graded, shared_data, tmp_path):
    """The eval's output files for a mixed set (references and mutants, n = 2 per problem) and `launch.py
    execute --grading-tests` on its samples.jsonl agree verdict for verdict."""
    problems, references, ref_verdicts, mutants, mutant_verdicts = graded
    humaneval = [i for i, p in enumerate(problems) if p.source == "humaneval"][:12]
    samples, verdicts = [], []
    for i in humaneval:
        samples += [references[i], {**mutants[i], "sample_index": 1}]
        verdicts += [ref_verdicts[i], mutant_verdicts[i]]
    kept = [problems[i] for i in humaneval]
    result = EvalResult(summary={"report": summarise(kept, samples, verdicts, [1, 2]), "ks": [1, 2], "model": "refs",
                                 "model_path": "-", "problems": len(kept), "n": 2, "temperature": 0, "top_p": 1,
                                 "max_new_tokens": 0, "seed": 0, "grading_tests": True, "note": ""},
                        samples=samples, verdicts=verdicts)
    write_outputs(result, tmp_path, "references", "-")
    assert result.summary["report"]["overall"]["pass@k"] == {"1": 0.5, "2": 1.0}
    assert "| all | 12 | 24 | 50.00 | 100.00 |" in (tmp_path / "results.md").read_text()

    dataset = str(shared_data / "humaneval" / "HumanEval.jsonl.gz")
    regraded = tmp_path / "regraded.jsonl"
    cmd = [sys.executable, str(REPO / "launch.py"), "execute", "--problems", dataset, "--samples",
           str(tmp_path / "samples.jsonl"), "--grading-tests", "--workers", "2", "--out", str(regraded)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    ours = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in regraded.read_text().splitlines()]
    assert [v["sample_index"] for v in ours] == [0, 1] * len(humaneval)
    # execute's lines are its input rows (the samples) plus the verdict: the verdict fields agree
    verdict_fields = set(ours[0]) - {"wall_ms", "sample_index"}
    assert [{k: v for k, v in row.items() if k in verdict_fields} for row in ours] == \
           [{k: v for k, v in row.items() if k in verdict_fields} for row in theirs]
    assert [row["program"] for row in theirs] == [s["program"] for s in samples]
