"""Converters from the public benchmarks' raw records (MBPP, MBPP sanitized, HumanEval, APPS) to `Problem`s.

Each converter takes one raw record plus a `RecordReader` location, validates the fields it uses, and maps them
onto the `TestSuite` forms documented in tasks/problem.py. Reading files and choosing the converter is
tasks/loaders.py's job.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.problem import Problem, TestSuite
from tasks.prompts import apps_prompt, humaneval_prompt, mbpp_prompt
from tasks.records import ProblemFormatError, RecordReader

MBPP_SPLITS = ("prompt", "test", "validation", "train")
HUMANEVAL_SPLITS = ("test",)
APPS_SPLITS = ("train", "test")


def mbpp_split(task_id: int) -> str:
    """The split of an MBPP task by id, as the MBPP paper defines it (the sanitized subset keeps the same ids)."""
    if task_id <= 10:
        return "prompt"
    if task_id <= 510:
        return "test"
    if task_id <= 600:
        return "validation"
    return "train"


def _unix_newlines(code: str) -> str:
    # MBPP's full file stores programs with \r\n: harmless to Python, but it would teach a policy to emit \r.
    return code.replace("\r\n", "\n")


def mbpp_problem(reader: RecordReader) -> Problem:
    """Full MBPP: tests are ``test_list``; non-empty ``challenge_test_list`` makes grading tests (both lists)."""
    task_id = reader.get("task_id", int)
    text = reader.get("text", str)
    code = reader.get("code", str)
    test_list = reader.str_list("test_list")
    if not test_list:
        raise reader.error("test_list", "empty: a problem needs at least one test")
    challenge = reader.str_list("challenge_test_list", default=[])
    setup = reader.get("test_setup_code", str, default="")
    tests = TestSuite(kind="assert", cases=list(test_list), setup_code=setup)
    grading = TestSuite(kind="assert", cases=test_list + challenge, setup_code=setup) if challenge else None
    return Problem(
        problem_id=f"mbpp/{task_id}",
        source="mbpp",
        prompt=mbpp_prompt(text, test_list),
        tests=tests,
        solutions=[_unix_newlines(code)],
        split=mbpp_split(task_id),
        grading_tests=grading,
        meta={"task_id": task_id},
    )


def mbpp_sanitized_problem(reader: RecordReader) -> Problem:
    """Sanitized MBPP: its ``test_imports`` go to the trusted ``header`` (the asserts use them, e.g. math.isclose)."""
    task_id = reader.get("task_id", int)
    text = reader.get("prompt", str)
    code = reader.get("code", str)
    test_list = reader.str_list("test_list")
    if not test_list:
        raise reader.error("test_list", "empty: a problem needs at least one test")
    imports = reader.str_list("test_imports", default=[])
    return Problem(
        problem_id=f"mbpp-sanitized/{task_id}",
        source="mbpp",
        prompt=mbpp_prompt(text, test_list),
        tests=TestSuite(kind="assert", cases=list(test_list), header="\n".join(imports)),
        solutions=[_unix_newlines(code)],
        split=mbpp_split(task_id),
        meta={"task_id": task_id, "variant": "sanitized"},
    )


def humaneval_problem(reader: RecordReader) -> Problem:
    """HumanEval: the program is prompt + completion; ``check(entry_point)`` from the ``test`` field grades it."""
    task_id = reader.get("task_id", str)
    prompt = reader.get("prompt", str)
    entry_point = reader.get("entry_point", str)
    if not entry_point.isidentifier():
        raise reader.error("entry_point", f"not a Python identifier: {entry_point!r}")
    test = reader.get("test", str)
    if "def check(" not in test:
        raise reader.error("test", "does not define check(candidate)")
    canonical = reader.get("canonical_solution", str, default="")
    return Problem(
        problem_id=task_id,
        source="humaneval",
        prompt=humaneval_prompt(prompt),
        tests=TestSuite(kind="check", cases=[f"check({entry_point})"], header=test, entry_point=entry_point),
        solutions=[prompt + canonical] if canonical else [],
        program_prefix=prompt,
        split="test",
        meta={"task_id": task_id},
    )


def _apps_case_text(value: Any, reader: RecordReader, field: str) -> str:
    # The official APPS harness joins list-of-lines inputs/outputs with "\n" for standard-input problems.
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    if isinstance(value, str):
        return value
    raise reader.error(field, f"expected a string or a list of strings, got {type(value).__name__}")


def apps_problem(reader: RecordReader, split: str, io: Any = ..., solutions: Any = ...) -> Problem | None:
    """APPS (hub JSONL form, or a decoded problem directory): call-based when ``fn_name`` exists, else stdio.

    Returns None for a problem without tests (APPS has a few, with an empty ``input_output``): there is nothing to
    train or grade on. ``io`` / ``solutions`` may be passed already decoded (directory layout).
    """
    raw_id = reader.get("problem_id", (int, str))
    try:
        number = int(raw_id)
    except ValueError:
        raise reader.error("problem_id", f"not an integer: {raw_id!r}") from None
    question = reader.get("question", str)
    if io is ...:
        io = reader.json_string("input_output", default=None)
    if io is None:
        return None
    if not isinstance(io, dict):
        raise reader.error("input_output", f"expected a JSON object, got {type(io).__name__}")
    inputs, outputs = io.get("inputs"), io.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise reader.error("input_output", "needs 'inputs' and 'outputs' lists")
    if len(inputs) != len(outputs):
        raise reader.error("input_output", f"{len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        return None
    if solutions is ...:
        solutions = reader.json_string("solutions", default=[])
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise reader.error("solutions", "expected a list of program strings")
    starter = reader.get("starter_code", str, default="") or ""
    difficulty = reader.get("difficulty", str, default="")
    fn_name = io.get("fn_name")
    if fn_name is not None:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise reader.error("input_output.fn_name", f"not a Python identifier: {fn_name!r}")
        # Stored exactly as APPS has them: comparison rules live in the sandbox, as in the official harness.
        tests = TestSuite(kind="call", cases=[[i, o] for i, o in zip(inputs, outputs)], entry_point=fn_name)
    else:
        cases = [
            [_apps_case_text(i, reader, f"input_output.inputs[{n}]"),
             _apps_case_text(o, reader, f"input_output.outputs[{n}]")]
            for n, (i, o) in enumerate(zip(inputs, outputs))
        ]
        tests = TestSuite(kind="stdio", cases=cases)
    meta: dict[str, Any] = {"apps_id": number}
    if reader.record.get("url"):
        meta["url"] = reader.record["url"]
    return Problem(
        problem_id=f"apps/{split}/{number}",
        source="apps",
        prompt=apps_prompt(question, starter, call_based=fn_name is not None),
        tests=tests,
        solutions=list(solutions),
        starter_code=starter,
        split=split,
        difficulty=difficulty,
        meta=meta,
    )


def is_apps_problem_dir(path: Path) -> bool:
    return (path / "question.txt").is_file()


def apps_dir_problem(problem_dir: Path, split: str) -> Problem | None:
    """One problem in APPS's original layout: question.txt, input_output.json, solutions.json, metadata.json and
    an optional starter_code.py. Errors name the problem directory and the file."""

    def load_json(name: str, default: Any) -> Any:
        path = problem_dir / name
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProblemFormatError(f"{problem_dir} (problem directory)", f"not valid JSON ({exc})",
                                     field=name) from exc

    where = f"{problem_dir} (problem directory)"
    try:
        number = int(problem_dir.name)
    except ValueError:
        raise ProblemFormatError(where, "the directory name must be the numeric APPS problem id") from None
    metadata = load_json("metadata.json", {})
    if not isinstance(metadata, dict):
        raise ProblemFormatError(where, "expected a JSON object", field="metadata.json")
    starter_path = problem_dir / "starter_code.py"
    record = {
        "problem_id": number,
        "question": (problem_dir / "question.txt").read_text(encoding="utf-8"),
        "difficulty": metadata.get("difficulty", ""),
        "url": metadata.get("url", ""),
        "starter_code": starter_path.read_text(encoding="utf-8") if starter_path.is_file() else "",
    }
    reader = RecordReader(record, where)
    io = load_json("input_output.json", None)
    solutions = load_json("solutions.json", [])
    # Map field errors about the decoded JSON back to the file they came from.
    try:
        return apps_problem(reader, split, io=io, solutions=solutions)
    except ProblemFormatError as exc:
        if exc.field and exc.field.startswith("input_output"):
            raise ProblemFormatError(where, exc.detail, field="input_output.json" + exc.field[12:]) from None
        if exc.field == "solutions":
            raise ProblemFormatError(where, exc.detail, field="solutions.json") from None
        raise
