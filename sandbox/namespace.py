"""The trusted test namespace: which names the tests see, and where each one comes from.

Built by the grader for every program, never taken from the program:
- builtins: the grader's own ``builtins`` module (a program's ``def set`` or ``abs = ...`` is never seen);
- standard modules the tests use as modules (``sys.getsizeof`` in MBPP 596): the grader's own imports;
- the prompt's helper definitions (HumanEval/38's ``encode_cyclic``, /32's ``poly``), executed here from the
  problem's text, so a program that redefines them changes only its own copy;
- from the program, only the solution's names: the entry point (APPS may put it on ``class Solution``), and for
  MBPP-style asserts the names they reference that are none of the above (the objects MBPP's setup code builds
  are among them). When the asserts reference only built-in names (MBPP 126 tests its own ``sum``), the
  built-ins they call are the solution. Dunder names never.
The program's values arrive as plain data or call-only handles (sandbox/wire.py).
"""
from __future__ import annotations

import ast
import builtins
import functools
import importlib
import sys

BUILTIN_NAMES = frozenset(dir(builtins))
STDLIB_MODULES = frozenset(sys.stdlib_module_names)
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                ast.AnnAssign)


@functools.lru_cache(maxsize=4096)
def _uses(sources: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(names referenced, names called directly, names used only as the base of an attribute) in ``sources``."""
    referenced, called, bases = set(), set(), set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                referenced.add(node.id)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                bases.add(node.value.id)
    return frozenset(referenced), frozenset(called), frozenset(bases - called)


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _parse_prompt(prefix: str) -> ast.Module | None:
    """The prompt as Python; a prompt that ends inside the function to complete gets a body to parse."""
    for tail in ("", "\n    pass\n", "pass\n"):
        try:
            return ast.parse(prefix + tail)
        except SyntaxError:
            continue
    return None


@functools.lru_cache(maxsize=1024)
def prompt_helpers(prefix: str, entry_point: str) -> tuple[object, frozenset[str]]:
    """The prompt's top-level definitions other than the entry point, compiled, and the names they define."""
    tree = _parse_prompt(prefix) if prefix.strip() else None
    if tree is None:
        return None, frozenset()
    body = [node for node in tree.body if isinstance(node, _DEFINITIONS) and getattr(node, "name", None) != entry_point]
    module = ast.Module(body=body, type_ignores=[])
    names = _defined(module) - {entry_point}
    return (compile(module, "<prompt>", "exec") if body else None), frozenset(names)


@functools.lru_cache(maxsize=4096)
def _header_names(header: str) -> frozenset[str]:
    try:
        return frozenset(_defined(ast.parse(header)))
    except SyntaxError:
        return frozenset()


def plan(problem, suite) -> tuple[list[str], str, tuple[str, ...]]:
    """(the program's names the tests need, the class that may hold the entry point, standard modules to import)."""
    if suite.kind == "call":
        return [suite.entry_point], "Solution", ()
    referenced, called, bases = _uses((suite.header, *suite.cases))
    _, helper_names = prompt_helpers(problem.program_prefix, suite.entry_point)
    trusted = helper_names | _header_names(suite.header)
    modules = tuple(sorted(n for n in bases & STDLIB_MODULES if n not in trusted))
    if suite.kind == "check":
        return [suite.entry_point], "", modules
    names = {n for n in referenced - BUILTIN_NAMES - trusted - set(modules) if not n.startswith("__")}
    if suite.entry_point and not suite.entry_point.startswith("__"):
        names.add(suite.entry_point)
    if not names:  # the tests call only built-in names: those they call are the solution (MBPP 126: `sum`)
        names = {n for n in called & BUILTIN_NAMES if not n.startswith("_")}
    return sorted(names), "", modules


def build(problem, suite, modules: tuple[str, ...], program_values: dict) -> dict:
    """The namespace the test header and cases run in."""
    ns: dict = {"__name__": "__test__", "__builtins__": builtins}
    code, _ = prompt_helpers(problem.program_prefix, suite.entry_point)
    if code is not None:
        exec(code, ns)  # trusted: the problem's own text
    for name in modules:
        try:
            ns[name] = importlib.import_module(name)
        except ImportError:  # not on this machine: the test that uses it fails with a NameError
            pass
    ns.update(program_values)
    return ns
