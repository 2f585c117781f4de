"""The trusted driver: runs a problem's tests against a program living in another process, and builds the Verdict.

Test code (MBPP asserts, HumanEval ``check``, APPS calls and outputs) runs here, unchanged, in a namespace whose
program names are stand-ins: calling one sends ``(function, plain arguments)`` to the program's process and gets
plain data back (sandbox/wire.py). The expected answers therefore never leave this process, every comparison is
between genuine built-in values, and nothing the program does to its own interpreter (patched builtins, lying
``__eq__``, ``sys.exit``, hooks, frame inspection) reaches the code that decides a test passed.
"""
from __future__ import annotations

import ast
import builtins
import functools
import importlib
import marshal
import re
import sys
import time
import warnings

from sandbox import compare, wire
from sandbox.forkserver import ChildGone, ChildTimeout
from sandbox.verdict import ProgramError, TestResult, Verdict

_BUILTIN_NAMES = frozenset(dir(builtins))
PROGRAM_FILE = "<program>"  # the file name of the program's code; tracebacks are filtered by it
MAX_PROGRAM_CHARS = 1 << 20
# Compiling a program may warn (invalid escape sequences, `is` with a literal): the program's business, not ours.
warnings.filterwarnings("ignore", module=re.escape(PROGRAM_FILE))
_exception_mirrors: dict[str, type] = {}


class ProgramRaised(Exception):
    """An exception raised inside the program; mirrors the program's exception type where it is a built-in one
    so test code that expects e.g. ValueError still catches it."""

    info: dict = {}


class _Stop(Exception):
    """Ends the test run: runtime error, timeout, dead process or bad result."""

    def __init__(self, reason: str, error: ProgramError | None, status: str = "error"):
        super().__init__(reason)
        self.reason, self.error, self.status = reason, error, status


def _mirror(info: dict) -> ProgramRaised:
    name = str(info.get("type", "Exception"))
    base = getattr(builtins, name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or base is Exception:
        base = None
    cls = _exception_mirrors.get(name) if base else ProgramRaised
    if cls is None:
        cls = _exception_mirrors[name] = type(name, (base, ProgramRaised), {})
    exc = cls(info.get("message", ""))
    exc.info = info
    return exc


def _program_error(info: dict) -> ProgramError:
    frames = info.get("frames") if isinstance(info.get("frames"), list) else []
    return ProgramError(type=str(info.get("type", "Exception")), message=str(info.get("message", "")),
                        line=info.get("line") if type(info.get("line")) is int else None,
                        frames=[[f[0] if type(f[0]) is int else None, str(f[1])[:200]]
                                for f in frames[:200] if isinstance(f, list) and len(f) == 2])


class _Remote:
    """Sends operations on program objects to the program's process, under the current test's deadline."""

    def __init__(self, channel):
        self.channel = channel
        self.deadline = 0.0

    def __call__(self, op: str, handle: wire.Handle, args: list):
        try:
            encoded = wire.encode(args)
        except (TypeError, ValueError) as exc:
            raise _Stop("", ProgramError("SandboxUnsupported", f"test passes a value the sandbox cannot send: {exc}"),
                        status="infra") from None
        reply = self.request({"op": op, "target": {"h": handle.ref}, "args": encoded})
        return self.value(reply)

    def request(self, msg: dict) -> dict:
        try:
            reply = self.channel.request(msg, self.deadline)
        except ChildTimeout:
            raise _Stop("timeout", ProgramError("Timeout", "the program did not answer in time"), "timeout") from None
        except ChildGone as exc:
            raise _Stop("exit", ProgramError("ProcessExited", str(exc))) from None
        except wire.WireError as exc:
            raise _Stop("bad_result", ProgramError("BadResult", str(exc))) from None
        if "error" in reply and reply["error"] and not isinstance(reply["error"], dict):
            raise _Stop("bad_result", ProgramError("BadResult", "malformed error reply"))
        return reply

    def value(self, reply: dict):
        if isinstance(reply.get("error"), dict):
            info = reply["error"]
            if info.get("reason") in ("memory", "exit", "output_limit", "bad_result"):
                raise _Stop(info["reason"], _program_error(info))
            raise _mirror(info)
        if "v" not in reply:
            raise _Stop("bad_result", ProgramError("BadResult", "reply without a value"))
        try:
            return wire.decode(reply["v"], self.handle)
        except wire.WireError as exc:
            raise _Stop("bad_result", ProgramError("BadResult", str(exc))) from None

    def handle(self, ref: int, type_name: str) -> wire.Handle:
        return wire.Handle(ref, type_name, self)


@functools.lru_cache(maxsize=4096)
def _compiled(source: str, filename: str):
    return compile(source, filename, "exec")


@functools.lru_cache(maxsize=4096)
def _referenced_names(sources: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        names.update(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))
    return frozenset(names)


def _test_namespace(remote: _Remote, names: dict, suite, test_sources: list[str]) -> dict:
    """Program names the tests may use. Names that shadow built-ins are left out unless they are what is being
    tested (MBPP task 126 defines `sum`): otherwise `def sorted(x): return 0` would fool `sorted(f(x)) == ...`.
    Modules are the trusted side's own imports, never the program's (which it may have patched)."""
    referenced = _referenced_names(tuple(test_sources))
    own = {n for n, d in names.items() if n not in _BUILTIN_NAMES and isinstance(d, dict) and d.get("k") != "module"}
    targets_builtin_only = not (own & referenced)
    ns: dict = {"__name__": "__test__", "__builtins__": builtins}
    for name, desc in names.items():
        if type(name) is not str or not isinstance(desc, dict) or desc.get("k") == "module":
            continue
        if name in _BUILTIN_NAMES and name != suite.entry_point and not (
                suite.kind == "assert" and targets_builtin_only):
            continue
        try:
            ns[name] = wire.decode(desc.get("v"), remote.handle)
        except wire.WireError as exc:
            raise _Stop("bad_result", ProgramError("BadResult", str(exc))) from None
    for name in referenced - ns.keys() - _BUILTIN_NAMES:
        if name in sys.stdlib_module_names:
            ns[name] = importlib.import_module(name)
    return ns


def _run_statement(code, ns) -> str:
    try:
        exec(code, ns)
    except _Stop:
        raise
    except ProgramRaised as exc:
        info = exc.info
        raise _Stop(info.get("reason") or "", _program_error(info)) from None
    except AssertionError:
        return "failed"
    except Exception as exc:  # the test itself raised on what the program returned (or a missing name)
        raise _Stop("", ProgramError(type(exc).__name__, str(exc)[:2000])) from None
    return "passed"


def compile_program(program: str, stdio: bool) -> tuple[str, int] | ProgramError:
    """Compile on the trusted side (compiling runs nothing): the marshalled code object as hex and the line offset
    to undo, or the compile error. Stdio programs that only compile inside a function (top-level `return` or
    `nonlocal`) are wrapped in one, as the official APPS harness does."""
    try:
        return marshal.dumps(compile(program, PROGRAM_FILE, "exec")).hex(), 0
    except SyntaxError as exc:
        if not (stdio and ("outside function" in str(exc.msg) or "nonlocal" in str(exc.msg))):
            return _syntax_error(exc, 0)
    except (ValueError, MemoryError, RecursionError, OverflowError) as exc:  # null bytes, nested too deeply
        return ProgramError(type(exc).__name__, str(exc)[:500])
    wrapped = "def __rltf_main__():\n" + "".join("    " + ln for ln in program.splitlines(True))
    try:
        return marshal.dumps(compile(wrapped + "\n__rltf_main__()\n", PROGRAM_FILE, "exec")).hex(), 1
    except SyntaxError as exc:
        return _syntax_error(exc, 1)
    except (ValueError, MemoryError, RecursionError, OverflowError) as exc:
        return ProgramError(type(exc).__name__, str(exc)[:500])


def _syntax_error(exc: SyntaxError, offset: int) -> ProgramError:
    line = (exc.lineno - offset) if exc.lineno else None
    return ProgramError(type(exc).__name__, str(exc.msg)[:500], line if line and line >= 1 else None)


@functools.lru_cache(maxsize=1024)
def _setup_code(source: str) -> str:
    return marshal.dumps(compile(source, "<setup>", "exec")).hex()


def prepare(problem, program: str, *, use_grading_tests: bool = False) -> Verdict | tuple[str, int]:
    """Before any process exists: a finished Verdict (no tests, compile error) or the compiled program."""
    suite = problem.eval_tests if use_grading_tests else problem.tests
    if not suite.cases:
        return Verdict(problem_id=problem.problem_id, outcome="infra_error", tests_total=0,
                       error=ProgramError("NoTests", f"problem {problem.problem_id} has no tests"))
    if len(program) > MAX_PROGRAM_CHARS:
        return Verdict(problem_id=problem.problem_id, outcome="compile_error", tests_total=len(suite.cases),
                       error=ProgramError("ProgramTooLong", f"{len(program)} characters (limit {MAX_PROGRAM_CHARS})"))
    compiled = compile_program(program, suite.kind == "stdio")
    if isinstance(compiled, ProgramError):
        return Verdict(problem_id=problem.problem_id, outcome="compile_error", tests_total=len(suite.cases),
                       error=compiled)
    return compiled


def grade(channel, problem, compiled: tuple[str, int], limits, *, use_grading_tests: bool = False) -> Verdict:
    """Run the tests against the program loaded in the process at the other end of ``channel``."""
    suite = problem.eval_tests if use_grading_tests else problem.tests
    verdict = Verdict(problem_id=problem.problem_id, outcome="failed", tests_total=len(suite.cases))
    start = time.monotonic()
    program_deadline = start + limits.program_timeout_s
    remote = _Remote(channel)

    def test_deadline() -> float:
        return min(time.monotonic() + limits.test_timeout_s, program_deadline)

    try:
        remote.deadline = test_deadline()
        code, offset = compiled
        loaded = remote.request({"op": "load", "code": code, "offset": offset, "stdio": suite.kind == "stdio",
                                 "setup": _setup_code(suite.setup_code) if suite.setup_code else ""})
        if loaded.get("error"):
            remote.value(loaded)  # raises the _Stop / mirror for the load-time error
        names = loaded.get("names")
        if not isinstance(names, dict):
            raise _Stop("bad_result", ProgramError("BadResult", "malformed load reply"))
        if suite.kind == "stdio":
            _run_stdio(remote, suite, verdict, test_deadline)
        else:
            _run_python(remote, names, suite, verdict, test_deadline)
    except _Stop as stop:
        _stopped(verdict, stop)
    except ProgramRaised as exc:  # raised while loading (top-level code or setup)
        _stopped(verdict, _Stop(exc.info.get("reason") or "", _program_error(exc.info)))
    except Exception as exc:  # noqa: BLE001 - a reply shaped to trip the trusted side: the program's fault
        _stopped(verdict, _Stop("bad_result", ProgramError("BadResult", f"{type(exc).__name__}: {exc}"[:500])))
    if verdict.outcome == "failed" and verdict.tests_passed == verdict.tests_total:
        verdict.outcome = "passed"
    return verdict


def _bad_problem(problem_id: str, message: str) -> _Stop:
    """A malformed problem is the data's fault, never the program's: an infra_error naming the problem."""
    return _Stop("", ProgramError("BadProblem", f"problem {problem_id}: {message}"), status="infra")


def _stopped(verdict: Verdict, stop: _Stop) -> None:
    verdict.outcome = "infra_error" if stop.status == "infra" else "runtime_error"
    verdict.reason = stop.reason if stop.status != "infra" else ""
    verdict.error = stop.error


def _record(verdict: Verdict, status: str, started: float) -> None:
    verdict.tests_run += 1
    verdict.tests_passed += status == "passed"
    verdict.test_results.append(TestResult(status, (time.monotonic() - started) * 1000.0))


def _run_python(remote, names, suite, verdict, test_deadline) -> None:
    if suite.kind == "assert":
        sources = [suite.header, *suite.cases]
    elif suite.kind == "check":
        sources = [suite.header, *suite.cases]
    elif suite.kind == "call":
        sources = [suite.entry_point, "Solution"]
    else:
        raise _bad_problem(verdict.problem_id, f"unknown test kind {suite.kind!r}")
    ns = _test_namespace(remote, names, suite, [s for s in sources if s])
    if suite.header:
        remote.deadline = test_deadline()
        if _run_statement(_compiled(suite.header, "<test header>"), ns) != "passed":
            raise _Stop("", ProgramError("TestHeaderError", "the test header failed an assertion"))
    for index, case in enumerate(suite.cases):
        started = time.monotonic()
        remote.deadline = test_deadline()
        try:
            if suite.kind == "call":
                status = _run_call(ns, suite, case, verdict.problem_id, index)
            else:
                status = _run_statement(_compiled(case, f"<test {index}>"), ns)
        except _Stop as stop:
            if stop.status != "infra":
                _record(verdict, stop.status, started)
            raise
        _record(verdict, status, started)


def _run_call(ns, suite, case, problem_id, index) -> str:
    try:
        args, expected = case
    except (TypeError, ValueError):
        raise _bad_problem(problem_id, f"call test {index} is not an [args, expected] pair") from None
    fn = ns.get(suite.entry_point)
    try:
        if fn is None and "Solution" in ns:
            fn = getattr(ns["Solution"](), suite.entry_point)
        if fn is None:
            raise NameError(f"name {suite.entry_point!r} is not defined")
        output = fn(*args)
    except _Stop:
        raise
    except ProgramRaised as exc:
        raise _Stop(exc.info.get("reason") or "", _program_error(exc.info)) from None
    except Exception as exc:
        raise _Stop("", ProgramError(type(exc).__name__, str(exc)[:2000])) from None
    return "passed" if compare.call_output_matches(output, expected) else "failed"


def _run_stdio(remote, suite, verdict, test_deadline) -> None:
    for index, case in enumerate(suite.cases):
        try:
            given, expected = case
        except (TypeError, ValueError):
            raise _bad_problem(verdict.problem_id, f"stdio test {index} is not an [input, output] pair") from None
        started = time.monotonic()
        remote.deadline = test_deadline()
        try:
            reply = remote.request({"op": "stdio", "input": compare.as_text(given)})
            if isinstance(reply.get("error"), dict):
                remote.value(reply)
            out = reply.get("out")
            if type(out) is not str:
                raise _Stop("bad_result", ProgramError("BadResult", "stdio reply without output"))
        except ProgramRaised as exc:
            _record(verdict, "error", started)
            raise _Stop(exc.info.get("reason") or "", _program_error(exc.info)) from None
        except _Stop as stop:
            _record(verdict, stop.status if stop.status != "infra" else "error", started)
            raise
        _record(verdict, "passed" if compare.stdio_output_matches(out, compare.as_text(expected)) else "failed",
                started)
