"""Problem ids as users have them, resolved to the project's `Problem`.

Besides the project's own ids (``mbpp/11``, ``mbpp-sanitized/11``, ``HumanEval/0``, ``apps/train/4000``), a
problem answers to its dataset's own: MBPP's integer ``task_id`` (or its string form, or evalplus's ``Mbpp/11``),
and APPS's ``problem_id`` (an integer or a string, leading zeros allowed as in APPS's folder names). HumanEval's
own id is the project's. An id that names two problems (APPS ``4000`` when both splits are loaded) is refused,
never guessed: a sample graded against the wrong problem's tests is a wrong reward.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from tasks.problem import Problem

_DIGITS = re.compile(r"[0-9]+")
SHOWN = 3  # closest ids named in an error


class ProblemIdError(ValueError):
    """An id that names no problem (the message names the closest ids that exist), more than one, or is no id."""


def native_ids(problem: Problem) -> list[str]:
    """The ids the problem's dataset gives it, as looked up (numbers as decimal strings without leading zeros)."""
    task_id = problem.meta.get("task_id")
    if problem.source == "mbpp" and isinstance(task_id, int):
        return [str(task_id), f"Mbpp/{task_id}"]
    apps_id = problem.meta.get("apps_id")
    if problem.source == "apps" and isinstance(apps_id, int):
        return [str(apps_id)]
    return []


def _numeric(key: str) -> bool:
    return _DIGITS.fullmatch(key) is not None


class ProblemIndex:
    """Look problems up by any of their ids: ``ProblemIndex(problems).resolve(11)`` -> the problem ``mbpp/11``."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        self._by_id: dict[str, list[Problem]] = {}
        self._by_native: dict[str, list[Problem]] = {}
        for problem in self.problems:
            self._by_id.setdefault(problem.problem_id, []).append(problem)
            for key in native_ids(problem):
                self._by_native.setdefault(key, []).append(problem)

    def __len__(self) -> int:
        return len(self.problems)

    def resolve(self, raw_id: Any) -> Problem:
        """The one problem ``raw_id`` names; `ProblemIdError` otherwise."""
        if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
            raise ProblemIdError(f"a problem id is a string or an integer, got {type(raw_id).__name__} {raw_id!r}")
        text = str(raw_id)
        found = self._by_id.get(text)
        if found is None:
            key = str(int(text)) if _numeric(text) else text
            found = self._by_native.get(key)
        if not found:
            closest = ", ".join(self.closest(raw_id)) or "none (no problems are loaded)"
            raise ProblemIdError(f"problem id {raw_id!r} matches none of the {len(self)} problems; closest ids: "
                                 f"{closest}")
        if len(found) > 1:
            names = ", ".join(p.problem_id for p in found[:SHOWN])
            raise ProblemIdError(f"problem id {raw_id!r} is ambiguous: it names {len(found)} problems ({names}); "
                                 "use the project's id")
        return found[0]

    def closest(self, raw_id: Any, n: int = SHOWN) -> list[str]:
        """The ids nearest to ``raw_id``, each with its project id when it is a dataset's own: numerically for a
        number (MBPP 9999 -> 974), by spelling otherwise (``mbpp/O11`` -> ``mbpp/11``)."""
        text = str(raw_id)
        numbers = {int(k) for k in self._by_native if _numeric(k)} if _numeric(text) else set()
        if numbers:
            keys = [str(k) for k in sorted(numbers, key=lambda k: (abs(k - int(text)), k))[:n]]
        else:
            candidates = list(self._by_id) + [k for k in self._by_native if not _numeric(k)]
            keys = (difflib.get_close_matches(text, candidates, n=n, cutoff=0.6)
                    or difflib.get_close_matches(text, candidates, n=n, cutoff=0.0))
        return [self._label(k) for k in keys]

    def _label(self, key: str) -> str:
        if key in self._by_id:
            return repr(key)
        owners = ", ".join(p.problem_id for p in self._by_native[key])
        return f"{int(key) if _numeric(key) else key!r} ({owners})"
