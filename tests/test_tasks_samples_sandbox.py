"""Sample files in the forms users have (the project's, human-eval's, evalplus's), with the datasets' own ids,
graded in the real sandbox through its public Python API: the same verdicts as the project's form, and HumanEval's
canonical solutions, given as human-eval completions, all pass.

Uses the data in ../shared/data (skipped when absent).
"""
from __future__ import annotations

import gzip
import json

import pytest

from configs.schema import SandboxConfig
from sandbox import LocalSandboxPool
from tasks import load_problems, read_samples, result_row, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
LIMITS = SandboxConfig(test_timeout_s=20.0, program_timeout_s=60.0)  # correctness here, not speed limits


@pytest.fixture(scope="module")
def pool():
    with LocalSandboxPool(2, LIMITS) as p:
        yield p


def _grade(pool, samples):
    verdicts = pool.run([(s.problem, s.program) for s in samples])
    return [result_row(s, v.summary()) for s, v in zip(samples, verdicts)]


def test_mbpp_rows_with_their_own_integer_ids_grade_as_before(pool, shared_data, tmp_path):
    problems_file = shared_data / "mbpp" / "mbpp.jsonl"
    with open(problems_file, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][::25]  # 39 problems across the file
    problems = load_problems(str(problems_file), split=None)
    # each problem: its reference, and a wrong program (the reference with its first `return` answering None)
    programs = [(row["task_id"], code) for row in rows
                for code in (row["code"], row["code"].replace("return ", "return None #", 1))]
    forms = {
        "project": [{"problem_id": f"mbpp/{i}", "program": code} for i, code in programs],
        "mbpp int": [{"task_id": i, "completion": code, "k": n} for n, (i, code) in enumerate(programs)],
        "mbpp str": [{"task_id": str(i), "solution": code} for i, code in programs],
    }
    graded = {}
    for name, sample_rows in forms.items():
        write_jsonl(sample_rows, tmp_path / "samples.jsonl")
        graded[name] = _grade(pool, read_samples(tmp_path / "samples.jsonl", problems))
        assert [{k: row[k] for k in sample} for row, sample in zip(graded[name], sample_rows)] == sample_rows

    def verdicts(name):
        return [(r["outcome"], r["tests_run"], r["tests_passed"], r["error_type"]) for r in graded[name]]

    assert verdicts("mbpp int") == verdicts("mbpp str") == verdicts("project")
    outcomes = [r["outcome"] for r in graded["project"]]
    assert outcomes[::2] == ["passed"] * len(rows)  # every reference passes
    assert outcomes[1::2].count("passed") == 0  # no wrong program does
    assert [r["passed"] for r in graded["mbpp int"]] == [o == "passed" for o in outcomes]


def test_humaneval_canonical_completions_all_pass(pool, shared_data, tmp_path):
    source = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    problems = load_problems(str(source))
    human_eval = [{"task_id": r["task_id"], "completion": r["canonical_solution"]} for r in rows]
    evalplus = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]} for r in rows[::8]]
    empty = [{"task_id": r["task_id"], "completion": "    return None\n"} for r in rows[::8]]
    results = {}
    for name, sample_rows in (("human-eval", human_eval), ("evalplus", evalplus), ("empty", empty)):
        write_jsonl(sample_rows, tmp_path / f"{name}.jsonl.gz")
        results[name] = _grade(pool, read_samples(tmp_path / f"{name}.jsonl.gz", problems))
    assert len(results["human-eval"]) == 164
    assert [r["task_id"] for r in results["human-eval"]] == [r["task_id"] for r in rows]
    assert {r["task_id"]: r["outcome"] for r in results["human-eval"] if not r["passed"]} == {}
    assert all(r["passed"] for r in results["evalplus"])
    # the prompt (signature and docstring) earns nothing by itself: a stub body after it fails
    assert not any(r["passed"] for r in results["empty"])
