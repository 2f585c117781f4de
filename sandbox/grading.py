"""The trusted driver: runs a problem's tests against a program living in another process, and builds the Verdict.

Test code (MBPP asserts, HumanEval ``check``, APPS calls and outputs) runs here, unchanged, in a namespace the
grader builds (sandbox/namespace.py) where the program's solution names are call-only handles: calling one sends
``(function, plain arguments)`` to the program's process and gets plain data back (sandbox/wire.py). The expected
answers therefore never leave this process, every comparison is between genuine built-in values, and nothing
the program does to its own interpreter (patched builtins, lying ``__eq__``, ``sys.exit``, hooks, frame
inspection, forged replies) reaches the code that decides a test passed. Decoding and comparing a reply count
against the test's deadline (sandbox/remote.py).
"""
from __future__ import annotations

import functools
import marshal
import re
import time
import warnings
from dataclasses import dataclass

from sandbox import compare, namespace
from sandbox.remote import ProgramRaised, Remote, Stop, bad_result
from sandbox.verdict import ProgramError, TestResult, Verdict

PROGRAM_FILE = "<program>"  # the file name of the program's code; tracebacks are filtered by it
MAX_PROGRAM_CHARS = 1 << 20
# Compiling a program may warn (invalid escape sequences, `is` with a literal): the program's business, not ours.
warnings.filterwarnings("ignore", module=re.escape(PROGRAM_FILE))


@dataclass(frozen=True)
class Compiled:
    code: str  # the marshalled code object, hex
    offset: int  # lines the sandbox added before the program's first line
    lines: int  # lines of the program as written: error lines outside 1..lines are dropped


@functools.lru_cache(maxsize=4096)
def _compiled(source: str, filename: str):
    return compile(source, filename, "exec")


def _lines(program: str) -> int:
    return program.count("\n") + (0 if program.endswith("\n") else 1)


def compile_program(program: str, stdio: bool) -> Compiled | ProgramError:
    """Compile on the trusted side (compiling runs nothing). Stdio programs that only compile inside a function
    (top-level `return` or `nonlocal`) are wrapped in one, as the official APPS harness does."""
    try:
        return Compiled(marshal.dumps(compile(program, PROGRAM_FILE, "exec")).hex(), 0, _lines(program))
    except SyntaxError as exc:
        if not (stdio and ("outside function" in str(exc.msg) or "nonlocal" in str(exc.msg))):
            return _syntax_error(exc, 0)
    except (ValueError, MemoryError, RecursionError, OverflowError) as exc:  # null bytes, nested too deeply
        return ProgramError(type(exc).__name__, str(exc)[:500])
    wrapped = "def __rltf_main__():\n" + "".join("    " + ln for ln in program.splitlines(True))
    try:
        code = compile(wrapped + "\n__rltf_main__()\n", PROGRAM_FILE, "exec")
        return Compiled(marshal.dumps(code).hex(), 1, _lines(program))
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


def prepare(problem, program: str, *, use_grading_tests: bool = False) -> Verdict | Compiled:
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


def grade(channel, problem, compiled: Compiled, limits, *, use_grading_tests: bool = False) -> Verdict:
    """Run the tests against the program loaded in the process at the other end of ``channel``."""
    suite = problem.eval_tests if use_grading_tests else problem.tests
    verdict = Verdict(problem_id=problem.problem_id, outcome="failed", tests_total=len(suite.cases))
    program_deadline = time.monotonic() + limits.program_timeout_s
    # A stdio reply carries the output as hex, plus an error report.
    remote = Remote(channel, compiled.lines, limits.max_result_bytes, 2 * limits.max_output_bytes + (64 << 10))

    def next_test() -> None:
        remote.deadline = min(time.monotonic() + limits.test_timeout_s, program_deadline)

    try:
        next_test()
        stdio = suite.kind == "stdio"
        if suite.kind not in ("stdio", "call", "assert", "check"):
            raise _bad_problem(problem.problem_id, f"unknown test kind {suite.kind!r}")
        names, method_of, modules = ([], "", ()) if stdio else namespace.plan(problem, suite)
        loaded = remote.request({"op": "load", "code": compiled.code, "offset": compiled.offset, "stdio": stdio,
                                 "setup": _setup_code(suite.setup_code) if suite.setup_code else "",
                                 "names": names, "method_of": method_of}, "names")
        if stdio:
            _run_stdio(remote, suite, verdict, next_test)
        else:
            values = _program_values(remote, loaded["names"], names)
            try:
                ns = namespace.build(problem, suite, modules, values)
            except Exception as exc:  # the prompt's own definitions fail: the data's fault
                raise _bad_problem(problem.problem_id, f"its prompt's definitions raise {type(exc).__name__}: {exc}")
            _run_python(remote, ns, suite, verdict, next_test)
    except Stop as stop:
        _stopped(verdict, stop)
    except ProgramRaised as exc:
        _stopped(verdict, Stop(exc.reason, exc.error))
    except Exception as exc:  # noqa: BLE001 - a reply shaped to trip the trusted side: the program's fault
        _stopped(verdict, bad_result(f"{type(exc).__name__}: {exc}"))
    if verdict.outcome == "failed" and verdict.tests_passed == verdict.tests_total:
        verdict.outcome = "passed"
    return verdict


def _program_values(remote: Remote, reply, requested: list[str]) -> dict:
    """The solution's names as the program's process reported them; only names that were asked for."""
    if type(reply) is not dict or set(reply) - set(requested):
        raise remote.stop(bad_result("the program's process reported names nobody asked for"))
    return {name: remote.decode(value) for name, value in reply.items()}


def _bad_problem(problem_id: str, message: str) -> Stop:
    """A malformed problem is the data's fault, never the program's: an infra_error naming the problem."""
    return Stop("", ProgramError("BadProblem", f"problem {problem_id}: {message}"), status="infra")


def _stopped(verdict: Verdict, stop: Stop) -> None:
    verdict.outcome = "infra_error" if stop.status == "infra" else "runtime_error"
    verdict.reason = stop.reason if stop.status != "infra" else ""
    verdict.error = stop.error


def _record(verdict: Verdict, status: str, started: float) -> None:
    verdict.tests_run += 1
    verdict.tests_passed += status == "passed"
    verdict.test_results.append(TestResult(status, (time.monotonic() - started) * 1000.0))


def _run_test(remote: Remote, verdict: Verdict, run) -> None:
    """One test: ``run()`` returns "passed" or "failed"; a stop or a program error ends the whole run."""
    started = time.monotonic()
    try:
        try:
            status = run()
        except ProgramRaised as exc:  # not caught by the test: the program's runtime error
            raise Stop(exc.reason, exc.error) from None
        except Exception as exc:  # the test itself raised on what the program returned (or a missing name)
            remote.check()
            raise Stop("", ProgramError(type(exc).__name__, str(exc)[:2000])) from None
        remote.check()
    except Stop as stop:
        if stop.status != "infra":
            _record(verdict, "timeout" if stop.status == "timeout" else "error", started)
        raise
    _record(verdict, status, started)


def _statement(code, ns) -> str:
    try:
        exec(code, ns)
    except AssertionError:
        return "failed"
    return "passed"


def _run_python(remote: Remote, ns: dict, suite, verdict: Verdict, next_test) -> None:
    if suite.header:
        next_test()
        try:
            status = _statement(_compiled(suite.header, "<test header>"), ns)
        except ProgramRaised as exc:
            raise Stop(exc.reason, exc.error) from None
        except NameError as exc:  # a name the program should define (never an infra error: no reward to dodge)
            raise Stop("", ProgramError("NameError", str(exc)[:2000])) from None
        except Exception as exc:  # the test's own set-up fails (a missing module, a bad line): the data's fault
            remote.check()
            raise _bad_problem(verdict.problem_id, f"its test header raises {type(exc).__name__}: {exc}") from None
        remote.check()
        if status != "passed":
            raise Stop("", ProgramError("TestHeaderError", "the test header failed an assertion"))
    for index, case in enumerate(suite.cases):
        next_test()
        if suite.kind == "call":
            _run_test(remote, verdict, functools.partial(_call_case, ns, suite, case, verdict.problem_id, index))
        else:
            _run_test(remote, verdict, functools.partial(_statement, _compiled(case, f"<test {index}>"), ns))


def _call_case(ns: dict, suite, case, problem_id: str, index: int) -> str:
    try:
        args, expected = case
    except (TypeError, ValueError):
        args = None
    if type(args) is not list:
        raise _bad_problem(problem_id, f"call test {index} is not an [args list, expected] pair")
    if suite.entry_point not in ns:
        raise NameError(f"name {suite.entry_point!r} is not defined")
    output = ns[suite.entry_point](*args)
    return "passed" if compare.call_output_matches(output, expected) else "failed"


def _run_stdio(remote: Remote, suite, verdict: Verdict, next_test) -> None:
    for index, case in enumerate(suite.cases):
        try:
            given, expected = case
        except (TypeError, ValueError):
            raise _bad_problem(verdict.problem_id, f"stdio test {index} is not an [input, output] pair") from None
        next_test()

        def run(given=given, expected=expected) -> str:
            reply = remote.request({"op": "stdio", "input": compare.as_text(given)}, "out", remote.max_stdio_reply)
            out = reply["out"]
            if type(out) is not str:
                raise remote.stop(bad_result("stdio reply without output"))
            try:
                text = bytes.fromhex(out).decode("utf-8", "replace")
            except ValueError:
                raise remote.stop(bad_result("malformed stdio output")) from None
            return "passed" if compare.stdio_output_matches(text, compare.as_text(expected)) else "failed"

        _run_test(remote, verdict, run)
