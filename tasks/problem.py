"""The `Problem` contract: one programming problem with its unit tests, as every part of the system sees it.

Plain data only (str, int, float, bool, None, lists and dicts of them) so that a `Problem` crosses Ray actor
boundaries and JSON files unchanged. Loaders in `tasks/` build these; the sandbox runs `TestSuite`s; nothing
else defines a problem type.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TestKind = Literal["assert", "stdio", "call", "check"]


@dataclass
class TestSuite:
    """The unit tests of a problem, in one of four forms.

    - ``assert``: ``cases`` are assert statements (MBPP), e.g. ``"assert add(1, 2) == 3"``.
    - ``stdio``: ``cases`` are ``[stdin_text, expected_stdout_text]`` pairs (APPS standard-input problems).
    - ``call``: ``cases`` are ``[args_list, expected_value]`` pairs for the function ``entry_point`` (APPS call-based).
    - ``check``: ``header`` defines ``check(candidate)`` (HumanEval); ``cases`` is ``["check(<entry_point>)"]``.

    ``setup_code`` is test-side code that must run in the program's namespace after the program (MBPP's
    ``test_setup_code`` builds objects from classes the program defines). ``header`` is trusted test-side code
    (imports, helper definitions, HumanEval's ``check``) that never runs inside the program's process.
    """

    kind: TestKind
    cases: list[Any]
    setup_code: str = ""
    header: str = ""
    entry_point: str = ""

    def __len__(self) -> int:
        return len(self.cases)


@dataclass
class Problem:
    """A programming problem.

    ``prompt`` is the model input in the family's prompt format. The program that gets executed is
    ``program_prefix + completion``: HumanEval and generated ("synthetic") completions continue a function
    signature (the prefix), while MBPP / APPS have an empty prefix and the completion is the whole program.
    ``solutions`` are whole programs (prefix included): the completion to learn is
    ``solution[len(program_prefix):]``.
    ``tests`` give the training reward; ``grading_tests`` (when not None) are stronger tests used only for
    evaluation, never shown to training.
    """

    problem_id: str
    source: str  # "mbpp" | "humaneval" | "apps" | "synthetic" | ...
    prompt: str
    tests: TestSuite
    solutions: list[str] = field(default_factory=list)
    starter_code: str = ""
    program_prefix: str = ""
    split: str = "train"
    difficulty: str = ""
    grading_tests: TestSuite | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_reference(self) -> bool:
        """Whether supervised training may learn from a reference solution (``meta["supervised"]`` False
        withholds them: the problem has tests only, and only RL can learn from it)."""
        return bool(self.solutions) and self.meta.get("supervised") is not False

    @property
    def eval_tests(self) -> TestSuite:
        """Tests to grade with when evaluating: the stronger grading tests where they exist."""
        return self.grading_tests if self.grading_tests is not None else self.tests

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Problem":
        data = dict(data)
        data["tests"] = TestSuite(**data["tests"])
        if data.get("grading_tests") is not None:
            data["grading_tests"] = TestSuite(**data["grading_tests"])
        return cls(**data)
