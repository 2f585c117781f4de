"""Loading the real benchmarks (MBPP, HumanEval, APPS) into `Problem`s, format detection, splits, our own JSONL,
the one-sentence offline hub error, and malformed rows reported with file, line and field.

Expected counts are computed here from the raw files with plain json/gzip, independently of tasks/.
"""
from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path

import pytest

import tasks
from tasks import (
    DatasetUnavailableError,
    ProblemFormatError,
    load_problems,
    write_problems,
)


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ real data


def test_mbpp_full_counts_tests_and_splits(shared_data):
    path = shared_data / "mbpp" / "mbpp.jsonl"
    raw = {row["task_id"]: row for row in _jsonl(path)}
    problems = load_problems(str(path))
    assert len(problems) == len(raw) == 974
    for problem in problems:
        row = raw[problem.meta["task_id"]]
        assert problem.tests.kind == "assert"
        assert problem.tests.cases == row["test_list"]
        assert problem.tests.setup_code == row["test_setup_code"]
        if row["challenge_test_list"]:
            assert problem.grading_tests.cases == row["test_list"] + row["challenge_test_list"]
        else:
            assert problem.grading_tests is None
        assert problem.solutions == [row["code"].replace("\r\n", "\n")]
        assert problem.program_prefix == ""
        assert row["text"] in problem.prompt and all(t in problem.prompt for t in row["test_list"])
        assert problem.prompt.startswith("\nQUESTION:\n") and problem.prompt.endswith("\nANSWER:\n")
    assert sum(1 for p in problems if p.grading_tests is not None) == 11
    assert {p.meta["task_id"] for p in problems if p.tests.setup_code} == {367, 927}
    sizes = {split: len(load_problems(str(path), split=split)) for split in ("prompt", "test", "validation", "train")}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}


def test_mbpp_sanitized_counts_and_imports_in_header(shared_data):
    path = shared_data / "mbpp" / "sanitized-mbpp.json"
    raw = {row["task_id"]: row for row in json.loads(path.read_text())}
    problems = load_problems(str(path))
    assert len(problems) == len(raw) == 427
    for problem in problems:
        row = raw[problem.meta["task_id"]]
        assert problem.tests.cases == row["test_list"]
        assert problem.tests.header == "\n".join(row["test_imports"])
        assert row["prompt"] in problem.prompt
    assert sum(1 for p in problems if p.tests.header) == sum(1 for r in raw.values() if r["test_imports"]) > 0
    assert all(p.split == "test" for p in load_problems(str(path), split="test"))


def test_humaneval_program_is_prompt_plus_completion(shared_data):
    path = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    raw = {row["task_id"]: row for row in _jsonl(path)}
    problems = load_problems(str(path))
    assert len(problems) == len(raw) == 164
    for problem in problems:
        row = raw[problem.problem_id]
        assert problem.tests.kind == "check" and problem.tests.cases == [f"check({row['entry_point']})"]
        assert problem.tests.header == row["test"] and problem.tests.entry_point == row["entry_point"]
        assert problem.prompt == problem.program_prefix == row["prompt"]
        assert problem.solutions == [row["prompt"] + row["canonical_solution"]]
        assert problem.split == "test"
    # The mapping is runnable: whole solution + trusted header + the case (trusted data, plain exec).
    for problem in problems[:8]:
        namespace: dict = {}
        exec(problem.solutions[0], namespace)
        exec(problem.tests.header, namespace)
        exec(problem.tests.cases[0], namespace)


def _apps_expected_prompt(row: dict, io: dict) -> str:
    # RLTF-SPEC.md section 5, written out independently of tasks.prompts
    fmt = "Use Call-Based format" if io.get("fn_name") else "Use Standard Input format"
    return "\nQUESTION:\n" + row["question"] + "\n" + row["starter_code"] + "\n" + fmt + "\nANSWER:\n"


@pytest.mark.parametrize("name, count", [("apps_subset_intro_interview.jsonl", 100),
                                         ("apps_subset_competition.jsonl", 50)])
def test_apps_jsonl(shared_data, name, count):
    path = shared_data / "apps" / name
    raw = {int(row["problem_id"]): row for row in _jsonl(path)}
    problems = load_problems(str(path))
    assert len(problems) == len(raw) == count
    for problem in problems:
        row = raw[problem.meta["apps_id"]]
        io = json.loads(row["input_output"])
        assert len(problem.tests) == len(io["inputs"])
        assert problem.tests.kind == ("call" if "fn_name" in io else "stdio")
        if "fn_name" in io:
            assert problem.tests.entry_point == io["fn_name"]
            assert problem.tests.cases == [[i, o] for i, o in zip(io["inputs"], io["outputs"])]
        assert problem.prompt == _apps_expected_prompt(row, io)
        assert problem.solutions == json.loads(row["solutions"])
        assert problem.difficulty == row["difficulty"] and problem.split == "train"
    mix = Counter(p.difficulty for p in problems)
    assert mix == ({"introductory": 50, "interview": 50} if count == 100 else {"competition": 50})


def test_apps_original_layout(shared_data):
    root = shared_data / "apps" / "original_layout"
    problems = load_problems(str(root))
    dirs = sorted(d for d in root.iterdir() if (d / "question.txt").is_file())
    assert len(problems) == len(dirs) == 5
    for problem, directory in zip(problems, dirs):
        io = json.loads((directory / "input_output.json").read_text())
        assert problem.meta["apps_id"] == int(directory.name)
        assert len(problem.tests) == len(io["inputs"])
        assert problem.tests.kind == ("call" if "fn_name" in io else "stdio")
        starter = directory / "starter_code.py"
        assert problem.starter_code == (starter.read_text() if starter.is_file() else "")
        assert problem.difficulty == json.loads((directory / "metadata.json").read_text())["difficulty"]
    one = load_problems(str(root / "2404"))
    assert len(one) == 1 and one[0].tests.entry_point == "findKthPositive"
    # the same APPS problem through both layouts gets the same id and tests
    from_jsonl = [p for p in load_problems(str(shared_data / "apps" / "apps_subset_intro_interview.jsonl"))
                  if p.problem_id == one[0].problem_id]
    assert len(from_jsonl) == 1 and from_jsonl[0].tests == one[0].tests


def test_format_detection(shared_data):
    expected = {
        "mbpp/mbpp.jsonl": "mbpp",
        "mbpp/sanitized-mbpp.json": "mbpp-sanitized",
        "humaneval/HumanEval.jsonl.gz": "humaneval",
        "apps/apps_subset_competition.jsonl": "apps",
        "apps/original_layout": "apps-dir",
        "apps/original_layout/0001": "apps-dir",
    }
    assert {name: tasks.detect_format(shared_data / name) for name in expected} == expected
    with pytest.raises(ValueError, match="mbpp-sanitized, humaneval, apps, apps-dir"):
        tasks.detect_format(shared_data / "README.md")


def test_splits_and_limit(shared_data):
    path = str(shared_data / "mbpp" / "mbpp.jsonl")
    first = load_problems(path, split="train", limit=3)
    assert [p.meta["task_id"] for p in first] == [601, 602, 603]
    with pytest.raises(ValueError, match="no split 'heldout'.*prompt, test, validation, train"):
        load_problems(path, split="heldout")
    with pytest.raises(ValueError, match="has no problems in split 'test'; it has splits: train"):
        load_problems(str(shared_data / "apps" / "apps_subset_competition.jsonl"), split="test")


def test_own_jsonl_round_trip(shared_data, tmp_path):
    problems = (load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"), limit=20)
                + load_problems(str(shared_data / "apps" / "original_layout"))
                + load_problems(str(shared_data / "humaneval" / "HumanEval.jsonl.gz"), limit=3)
                + load_problems("synthetic:instances=1,heldout=1", limit=6))
    for name in ("problems.jsonl", "problems.jsonl.gz"):
        path = write_problems(problems, tmp_path / "out" / name)
        assert tasks.detect_format(path) == "rltf"
        assert load_problems(str(path)) == problems


# ------------------------------------------------------------------------------ hand-made rows and errors


def _mbpp_row(task_id: int) -> dict:
    return {"task_id": task_id, "text": "Add one.", "code": "def f(x):\r\n    return x + 1",
            "test_setup_code": "", "test_list": ["assert f(1) == 2", "assert f(2) == 3", "assert f(0) == 1"],
            "challenge_test_list": []}


def test_malformed_jsonl_row_names_file_line_field(tmp_path):
    rows = [_mbpp_row(601), _mbpp_row(602), _mbpp_row(603)]
    rows[2]["test_list"] = ["assert f(1) == 2", 7]
    path = _write_jsonl(tmp_path / "mbpp.jsonl", rows)
    with pytest.raises(ProblemFormatError) as info:
        load_problems(str(path))
    assert (info.value.where, info.value.line, info.value.field) == (str(path), 3, "test_list[1]")
    assert str(info.value).startswith(f"{path}, line 3, field 'test_list[1]'")

    del rows[2]["test_list"]
    with pytest.raises(ProblemFormatError, match=r"line 3, field 'test_list': missing"):
        load_problems(str(_write_jsonl(path, rows)), fmt="mbpp")

    path.write_text(json.dumps(_mbpp_row(601)) + "\n{not json\n")
    with pytest.raises(ProblemFormatError, match=r"mbpp.jsonl, line 2: not valid JSON"):
        load_problems(str(path), fmt="mbpp")


def test_malformed_item_in_json_list_reports_its_line(tmp_path):
    items = [{"task_id": i, "prompt": "p", "code": "c", "test_imports": [], "test_list": ["assert True"],
              "source_file": "x"} for i in (11, 12)]
    items[1]["task_id"] = "twelve"
    path = tmp_path / "sanitized.json"
    path.write_text(json.dumps(items, indent=4))
    expected_line = path.read_text().splitlines().index("    {", 2) + 1  # the second item's opening brace
    with pytest.raises(ProblemFormatError) as info:
        load_problems(str(path))
    assert (info.value.line, info.value.field) == (expected_line, "task_id")


def _apps_row(problem_id: int, io, solutions='["print(1)"]') -> dict:
    return {"problem_id": problem_id, "question": "Print one.", "solutions": solutions,
            "input_output": io if isinstance(io, str) else json.dumps(io), "difficulty": "introductory",
            "url": "", "starter_code": ""}


def test_apps_rows_normalised_skipped_and_rejected(tmp_path):
    rows = [
        _apps_row(1, {"inputs": [["1 2", "3"], "4\n"], "outputs": [["3", "x"], "4\n"]}),
        _apps_row(2, ""),  # no tests at all: nothing to train or grade on
        _apps_row(3, {"fn_name": "f", "inputs": [[1, 2]], "outputs": [[3]]}, solutions=""),
    ]
    problems = load_problems(str(_write_jsonl(tmp_path / "test.jsonl", rows)))
    assert [p.problem_id for p in problems] == ["apps/test/1", "apps/test/3"]  # split from the file name
    assert problems[0].tests.cases == [["1 2\n3", "3\nx"], ["4\n", "4\n"]]  # as the official harness joins
    assert problems[1].tests.cases == [[[1, 2], [3]]] and problems[1].solutions == []

    bad = [_apps_row(5, {"inputs": ["1"], "outputs": ["1"]}), _apps_row(6, '{"inputs": [')]
    with pytest.raises(ProblemFormatError, match=r"line 2, field 'input_output': not a valid JSON string"):
        load_problems(str(_write_jsonl(tmp_path / "a.jsonl", bad)), fmt="apps")
    bad[1] = _apps_row(6, {"inputs": ["1", "2"], "outputs": ["1"]})
    with pytest.raises(ProblemFormatError, match=r"line 2, field 'input_output': 2 inputs but 1 outputs"):
        load_problems(str(_write_jsonl(tmp_path / "a.jsonl", bad)), fmt="apps")


def test_apps_dir_error_names_problem_dir_and_file(tmp_path):
    problem_dir = tmp_path / "test" / "0042"
    problem_dir.mkdir(parents=True)
    (problem_dir / "question.txt").write_text("Echo.")
    (problem_dir / "input_output.json").write_text(json.dumps({"inputs": ["a"], "outputs": ["a"]}))
    (problem_dir / "solutions.json").write_text('["print(input())"]')
    (problem_dir / "metadata.json").write_text('{"difficulty": "interview"}')
    [problem] = load_problems(str(tmp_path / "test"))
    assert (problem.problem_id, problem.split, problem.difficulty) == ("apps/test/42", "test", "interview")

    (problem_dir / "input_output.json").write_text(json.dumps({"inputs": ["a", 3], "outputs": ["a", "b"]}))
    with pytest.raises(ProblemFormatError) as info:
        load_problems(str(problem_dir))
    assert str(problem_dir) in info.value.where and info.value.field == "input_output.json.inputs[1]"


def test_humaneval_row_without_entry_point(tmp_path):
    row = {"task_id": "HumanEval/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
           "test": "def check(candidate):\n    assert candidate() == 1\n"}
    path = _write_jsonl(tmp_path / "he.jsonl", [row])
    with pytest.raises(ProblemFormatError, match=r"line 1, field 'entry_point': missing"):
        load_problems(str(path), fmt="humaneval")


def test_own_jsonl_rejects_bad_test_kind(tmp_path):
    problem = load_problems("synthetic:instances=1,heldout=1", limit=1)[0].to_dict()
    problem["tests"]["kind"] = "magic"
    path = _write_jsonl(tmp_path / "own.jsonl", [problem])
    with pytest.raises(ProblemFormatError, match=r"line 1, field 'tests.kind'"):
        load_problems(str(path))


def test_unknown_sources_and_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file or directory"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown problem format 'csv'; known formats: mbpp"):
        load_problems(str(tmp_path), fmt="csv")
    (tmp_path / "plain.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="cannot detect the problem format"):
        load_problems(str(tmp_path / "plain.txt"))


@pytest.mark.parametrize("name", ["openai/openai_humaneval", "google-research-datasets/mbpp", "codeparrot/apps"])
def test_hub_name_offline_is_one_quick_sentence(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the offline guard: no connection is attempted
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        load_problems(name)
    assert time.monotonic() - start < 2.0
    message = str(info.value)
    assert f"'{name}' is not available offline" in message and "\n" not in message
    assert info.value.__cause__ is None
