"""Fine-grained feedback (RLTF-SPEC.md section 3): which part of a program its error is to blame on.

`classify(verdict, program, truncated)` puts every verdict in one category:

- ``line``: the error can be pinned to one line: most syntax errors (the SyntaxError's line), ``No module
  named X`` / ``cannot import name X`` (the import line), nonlocal errors (the ``nonlocal`` line), and runtime
  errors with a traceback frame in the program (the innermost such frame).
- ``whole``: timeouts, RecursionError, memory kills, and a syntax error on the very last line of a program that
  the generation length limit cut off (``truncated=True``).
- ``ignore``: no useful location: tab/space inconsistency, unindent mismatch, unterminated triple-quoted string,
  duplicate argument, ``import *`` outside module level, empty error messages, crashes by signal, and
  ``failed`` / ``passed`` programs (also ``infra_error``, which has no reward at all).

The verdict's error line is already in the program's coordinates (the sandbox undoes its wrapping).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sandbox.verdict import ProgramError, Verdict

Category = Literal["line", "whole", "ignore"]

SYNTAX_ERROR_TYPES = frozenset({"SyntaxError", "IndentationError", "TabError"})
WHOLE_PROGRAM_ERROR_TYPES = frozenset({"RecursionError", "MemoryError"})
WHOLE_PROGRAM_REASONS = frozenset({"timeout", "memory"})
# Syntax errors whose reported line says nothing useful about where the model went wrong. Older Pythons spell
# the triple-quote case "EOF while scanning triple-quoted string literal".
_IGNORED_SYNTAX_MESSAGES = re.compile(
    r"inconsistent use of tabs and spaces"
    r"|unindent does not match any outer indentation level"
    r"|triple-quoted string literal"
    r"|duplicate argument"
    r"|import \* only allowed at module level",
    re.IGNORECASE,
)
_IMPORT_MESSAGE = re.compile(r"No module named '?([\w.]+)'?|cannot import name '?(\w+)'?")
_NONLOCAL_MESSAGE = re.compile(r"nonlocal '?(\w+)'?|'?(\w+)'? is (?:assigned to|used prior to) .*nonlocal")


@dataclass(frozen=True)
class Blame:
    category: Category
    line: int | None = None  # 1-based line of the program; set only for category "line"


IGNORE = Blame("ignore")
WHOLE = Blame("whole")


def count_lines(program: str) -> int:
    """Lines of the program as Python numbers them ("\\n"-separated; a final newline opens no new line)."""
    if not program:
        return 0
    return program.count("\n") + (0 if program.endswith("\n") else 1)


def last_code_line(program: str) -> int:
    """Number of the last line holding anything but whitespace (0 for a blank program)."""
    lines = program.split("\n")
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].strip():
            return index + 1
    return 0


def classify(verdict: Verdict, program: str, truncated: bool = False) -> Blame:
    """The fine-grained category of ``verdict`` and, for ``line``, the blamed line of ``program``.

    ``program`` is the whole executed program (``program_prefix + completion`` for causal LMs on HumanEval).
    ``truncated``: generation stopped at the length limit, not at end-of-sequence.
    """
    if verdict.outcome in ("passed", "failed", "infra_error"):
        return IGNORE
    err = verdict.error
    if verdict.reason in WHOLE_PROGRAM_REASONS or (err is not None and err.type in WHOLE_PROGRAM_ERROR_TYPES):
        return WHOLE
    if verdict.reason == "signal" or err is None:
        return IGNORE
    if err.type in SYNTAX_ERROR_TYPES or verdict.outcome == "compile_error":
        return _classify_syntax_error(err, program, truncated)
    return _classify_runtime_error(err, program)


def _classify_syntax_error(err: ProgramError, program: str, truncated: bool) -> Blame:
    last = last_code_line(program)
    if err.line is None:
        return IGNORE  # e.g. "source code cannot contain null bytes": no line to blame
    if truncated and err.line >= last:
        # The model was cut off mid-statement: the program as a whole ran out of room, no one line is wrong.
        return WHOLE
    if not err.message.strip() or _IGNORED_SYNTAX_MESSAGES.search(err.message):
        return IGNORE
    if "nonlocal" in err.message:
        return _in_program(_nonlocal_line(err, program), program)
    # Errors detected at end of input can be reported one past the last line: blame the last written line.
    return _in_program(min(err.line, last) if err.line > last else err.line, program)


def _classify_runtime_error(err: ProgramError, program: str) -> Blame:
    if not err.message.strip():
        return IGNORE
    line = err.line
    if line is None:  # the sandbox's line is the innermost program frame; fall back on the frames themselves
        line = next((frame[0] for frame in reversed(err.frames) if frame and frame[0] is not None), None)
    if line is None and err.type in ("ImportError", "ModuleNotFoundError"):
        line = _import_line(err.message, program)
    return _in_program(line, program)


def _in_program(line: int | None, program: str) -> Blame:
    if line is None or not 1 <= line <= count_lines(program):
        return IGNORE
    return Blame("line", line)


def _import_line(message: str, program: str) -> int | None:
    """The first import statement that names the module or name the ImportError message names."""
    match = _IMPORT_MESSAGE.search(message)
    if not match:
        return None
    wanted = match.group(1) or match.group(2)
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return None
    lines = [
        node.lineno for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(_names_module(a.name, wanted) for a in node.names))
        or (isinstance(node, ast.ImportFrom)
            and (_names_module(node.module or "", wanted) or any(a.name == wanted for a in node.names)))
    ]
    return min(lines, default=None)  # ast.walk is breadth-first: the minimum is the first in the text


def _names_module(imported: str, wanted: str) -> bool:
    # "No module named 'a.b'" for `import a.b.c`; "No module named 'a'" for `import a.b`.
    return imported == wanted or imported.startswith(wanted + ".") or wanted.startswith(imported + ".")


def _nonlocal_line(err: ProgramError, program: str) -> int | None:
    """The ``nonlocal`` statement naming the variable in the message, preferring the reported line."""
    match = _NONLOCAL_MESSAGE.search(err.message)
    name = (match.group(1) or match.group(2)) if match else None
    lines = program.split("\n")
    if err.line is not None and 1 <= err.line <= len(lines):
        text = lines[err.line - 1]
        if "nonlocal" in text and (name is None or re.search(rf"\b{re.escape(name)}\b", text)):
            return err.line
    if name is not None:
        pattern = re.compile(rf"^\s*nonlocal\b.*\b{re.escape(name)}\b")
        for number, text in enumerate(lines, start=1):
            if pattern.search(text):
                return number
    return err.line
