"""The `Verdict` contract: what running one program against one problem's tests produced.

Built by the sandbox's trusted side from plain data returned by the program's process; the program can never
write a verdict. Plain data only, so it crosses Ray actors and JSONL files unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["passed", "failed", "runtime_error", "compile_error", "infra_error"]
# `infra_error`: the sandbox itself failed (a worker died twice); never a property of the program, so rewards
# and pass@k drop such verdicts instead of scoring them.

Reason = Literal["", "timeout", "memory", "signal", "exit", "output_limit", "bad_result"]
REASONS: tuple[str, ...] = ("", "timeout", "memory", "signal", "exit", "output_limit", "bad_result")
# The reasons the program's process may report for its own error; the others only the trusted side decides.
CHILD_REASONS = frozenset({"", "memory", "exit", "output_limit", "bad_result"})


@dataclass
class ProgramError:
    """The first error the program raised. ``line`` is 1-based in the program as the model wrote it
    (after undoing any wrapping the sandbox applied); None when it cannot be placed in the program."""

    type: str
    message: str
    line: int | None = None
    # Traceback frames inside the program, outermost first: [line, function name] pairs.
    frames: list[list[Any]] = field(default_factory=list)


@dataclass
class TestResult:
    status: Literal["passed", "failed", "error", "timeout"]
    wall_ms: float = 0.0


@dataclass
class Verdict:
    problem_id: str
    outcome: Outcome
    reason: Reason = ""
    tests_run: int = 0
    tests_passed: int = 0
    tests_total: int = 0
    test_results: list[TestResult] = field(default_factory=list)
    error: ProgramError | None = None
    wall_ms: float = 0.0
    # How the program was confined (sandbox.isolation.level_name): e.g. "namespaces+cgroup-v1", "userns+rlimits",
    # "none". Every verdict records it, so results from an unconfined run are never mistaken for confined ones.
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def pass_ratio(self) -> float:
        return self.tests_passed / self.tests_run if self.tests_run else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The flat form written by `launch.py execute` and carried on trajectories."""
        err = self.error
        return {
            "problem_id": self.problem_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "tests_run": self.tests_run,
            "tests_passed": self.tests_passed,
            "tests_total": self.tests_total,
            "error_type": err.type if err else None,
            "error_message": err.message if err else None,
            "error_line": err.line if err else None,
            "wall_ms": round(self.wall_ms, 3),
            "isolation": self.isolation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Verdict":
        data = dict(data)
        data["test_results"] = [TestResult(**t) for t in data.get("test_results", [])]
        if data.get("error") is not None:
            data["error"] = ProgramError(**data["error"])
        return cls(**data)
