"""The sandbox's grading semantics on real fork-server processes: outcomes, reasons, error lines and frames,
the four test formats, timeouts, and the plain-data codec."""
from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

import pytest

from configs.schema import SandboxConfig
from sandbox import ForkServer, LocalSandboxPool, compare, run_program, wire
from tasks.problem import Problem
from tasks.problem import (
    TestSuite as Suite,  # aliased: pytest would try to collect Test*
)

LIMITS = SandboxConfig(test_timeout_s=1.0, program_timeout_s=2.5, memory_mb=512)


def problem(kind: str, cases: list, **suite_fields) -> Problem:
    return Problem(problem_id=f"t-{kind}", source="test", prompt="", tests=Suite(kind=kind, cases=cases,
                                                                                     **suite_fields))


ADD = problem("assert", ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"])


@pytest.fixture(scope="module")
def server():
    with ForkServer(LIMITS) as fs:
        yield fs


def test_correct_program_passes(server):
    v = server.run(ADD, "def add(a, b):\n    return a + b\n")
    assert (v.outcome, v.tests_run, v.tests_passed, v.tests_total) == ("passed", 3, 3, 3)
    assert v.passed and v.pass_ratio == 1.0 and v.wall_ms > 0


def test_failed_asserts_keep_running(server):
    v = server.run(ADD, "def add(a, b):\n    return 3\n")
    assert (v.outcome, v.tests_run, v.tests_passed) == ("failed", 3, 1)
    assert [t.status for t in v.test_results] == ["passed", "failed", "failed"]


def test_compile_error_has_line(server):
    v = server.run(ADD, "def add(a, b):\n    x = 1\n    return a +\n")
    assert v.outcome == "compile_error" and v.error.type == "SyntaxError" and v.error.line == 3
    v = server.run(ADD, "def add(a, b):\n  return a\n    return b\n")
    assert v.outcome == "compile_error" and v.error.type == "IndentationError" and v.error.line == 3


def test_runtime_error_stops_with_line_and_frames(server):
    program = "def helper(x):\n    return [1][x]\n\ndef add(a, b):\n    if a == 2:\n        return helper(5)\n    return a + b\n"
    v = server.run(ADD, program)
    assert (v.outcome, v.reason, v.tests_run, v.tests_passed) == ("runtime_error", "", 2, 1)
    assert v.error.type == "IndexError" and v.error.line == 2
    assert v.error.frames == [[6, "add"], [2, "helper"]]
    assert [t.status for t in v.test_results] == ["passed", "error"]


def test_error_at_top_level_and_missing_function(server):
    v = server.run(ADD, "x = 1\ny = x / 0\n")
    assert v.outcome == "runtime_error" and v.error.type == "ZeroDivisionError" and v.error.line == 2
    assert v.tests_run == 0
    v = server.run(ADD, "def plus(a, b):\n    return a + b\n")
    assert v.outcome == "runtime_error" and v.error.type == "NameError" and v.error.line is None


def test_per_test_and_program_timeouts(server):
    slow = "import time\ndef add(a, b):\n    if a == 2:\n        while True: pass\n    return a + b\n"
    v = server.run(ADD, slow)
    assert (v.outcome, v.reason, v.tests_run, v.tests_passed) == ("runtime_error", "timeout", 2, 1)
    assert v.test_results[-1].status == "timeout" and 900 < v.wall_ms < 2000
    # Each test fits its own limit, all of them together not: the whole-program limit stops it.
    many = problem("assert", [f"assert add({i}, 0) == {i}" for i in range(8)])
    v = server.run(many, "import time\ndef add(a, b):\n    time.sleep(0.6)\n    return a + b\n")
    assert (v.outcome, v.reason) == ("runtime_error", "timeout") and 3 <= v.tests_passed <= 4
    assert server.run(ADD, "def add(a, b): return a + b").passed  # and the server serves the next program


def test_exit_and_memory_reasons(server):
    for program in ("import sys\nsys.exit(0)\ndef add(a, b): return a + b",
                    "import os\ndef add(a, b): os._exit(0)"):
        v = server.run(ADD, program)
        assert (v.outcome, v.reason) == ("runtime_error", "exit"), program
    v = server.run(ADD, "def add(a, b):\n    return len(bytearray(2 << 30))\n")
    assert (v.outcome, v.reason, v.error.type) == ("runtime_error", "memory", "MemoryError")


def test_output_limit(server):
    limits = SandboxConfig(test_timeout_s=2.0, max_output_bytes=1000, max_file_bytes=1000)
    v = run_program(ADD, "def add(a, b):\n    print('x' * 100000)\n    return a + b\n", limits=limits)
    assert (v.outcome, v.reason) == ("runtime_error", "output_limit")
    echo = problem("stdio", [["", "y\n" * 600]])
    v = run_program(echo, "print('y\\n' * 600, end='')", limits=limits)
    assert (v.outcome, v.reason) == ("runtime_error", "output_limit")


def test_mbpp_setup_code_runs_after_program_and_objects_stay_in_the_child(server):
    tree = problem("assert", ["assert depth(root) == 3", "assert depth(leaf) == 1", "assert depth(root) == 2"],
                   setup_code="root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\nleaf = Node(9)\n")
    program = ("class Node:\n    def __init__(self, v):\n        self.v, self.left, self.right = v, None, None\n"
               "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), depth(n.right))\n")
    v = server.run(tree, program)
    assert (v.outcome, v.tests_passed) == ("failed", 2)


def test_program_objects_are_call_only_handles_that_never_equal_plain_values(server):
    program = ("class Five:\n    value = 5\n    def __eq__(self, other): return True\n"
               "    def __bool__(self): return True\n    def __str__(self): return 'five'\n"
               "def make(): return Five()\ndef gen(): return (i for i in range(3))\n"
               "def adder(n): return lambda x: x + n\n")
    expected = {"assert make() == 5": ("failed", None), "assert str(make()) == 'five'": ("failed", None),
                "assert adder(2)(3) == 5": ("passed", None),
                "assert make().value == 5": ("runtime_error", "AttributeError"),
                "assert list(gen()) == [0, 1, 2]": ("runtime_error", "TypeError"),
                "assert make()": ("runtime_error", "TypeError")}
    for case, (outcome, error) in expected.items():
        v = server.run(problem("assert", [case]), program)
        assert (v.outcome, v.error.type if v.error else None) == (outcome, error), (case, v.summary())


def test_builtin_named_function_is_tested_but_cannot_wrap_results(server):
    # MBPP 126 defines `sum` and tests it; but a program must not replace `sorted` used around its answer.
    v = server.run(problem("assert", ["assert sum(10, 15) == 6"]), "def sum(a, b):\n    return 6\n")
    assert v.passed
    cheat = "def f(x):\n    return 0\ndef sorted(x):\n    return [1, 2, 3]\n"
    v = server.run(problem("assert", ["assert sorted(f([3, 1, 2])) == [1, 2, 3]"]), cheat)
    assert v.outcome == "runtime_error" and v.error.type == "TypeError"  # the real sorted() on an int


def test_humaneval_check_with_prompt_helpers_and_program_exceptions(server):
    """The prompt's helpers run on the trusted side; a program exception is the program's runtime error even
    where the test would catch that exception type (no program exception becomes control flow here)."""
    header = ("import math\n\ndef check(candidate):\n    assert math.fabs(poly([1, 2], candidate([1, 2]))) < 1e-6\n"
              "    try:\n        candidate([])\n    except ValueError:\n        pass\n")
    prompt = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n"
    p = problem("check", ["check(find_zero)"], header=header, entry_point="find_zero")
    p.program_prefix = prompt
    program = prompt + "def find_zero(xs):\n    if not xs:\n        return 0.0\n    return -xs[0] / xs[1]\n"
    assert server.run(p, program).passed
    v = server.run(p, program.replace("return -xs[0] / xs[1]", "return 1.0"))
    assert (v.outcome, v.tests_passed) == ("failed", 0)
    v = server.run(p, program.replace("return 0.0", "raise ValueError('empty')"))
    assert v.outcome == "runtime_error" and v.error.type == "ValueError" and v.error.line == 5
    # Redefining the prompt's helper changes only the program's own copy.
    cheat = program.replace("return -xs[0] / xs[1]", "return 1.0") + "def poly(xs, x):\n    return 0\n"
    assert server.run(p, cheat).outcome == "failed"


def test_stdio_formats(server):
    p = problem("stdio", [["1 2\n", "3\n"], ["10 20\n", "30"], ["2.5 0.5\n", "3.0000001\n"]])
    assert server.run(p, "a, b = map(float, input().split())\nr = a + b\nprint(int(r) if r == int(r) else r)").passed
    assert server.run(p, "import sys\na, b = map(float, sys.stdin.buffer.read().split())\n"
                         "sys.stdout.write(f'{a + b:.7f}  \\n')").passed
    assert server.run(p, "a, b = map(float, open(0).read().split())\nprint(a + b)\nexit()\nprint('never')").passed
    v = server.run(p, "a, b = map(float, input().split())\nprint(a - b)")
    assert (v.outcome, v.tests_run, v.tests_passed) == ("failed", 3, 0)


def test_stdio_top_level_return_is_wrapped_and_lines_map_back(server):
    p = problem("stdio", [["5\n", "5\n"], ["0\n", "zero\n"]])
    program = "n = int(input())\nif n == 0:\n    print('zero')\n    return\nprint(n)\n"
    assert server.run(p, program).passed
    v = server.run(p, "n = int(input())\nif n:\n    return\nprint(1 / n)\n")
    assert v.outcome == "failed" or (v.outcome == "runtime_error" and v.error.line == 4)
    v = server.run(p, "n = int(input())\nif n == 0:\n    return\nprint(1 // (n - 5))\n")
    assert (v.outcome, v.error.type, v.error.line) == ("runtime_error", "ZeroDivisionError", 4)


def test_apps_call_based_with_solution_class(server):
    p = problem("call", [[[[1, 2, 3]], 6], [[[4]], [4]], [[[]], 0]], entry_point="total")
    assert server.run(p, "class Solution:\n    def total(self, xs):\n        return sum(xs)\n").passed
    assert server.run(p, "def total(xs):\n    return sum(xs)\n").passed
    v = server.run(p, "def total(xs):\n    return xs[0]\n")
    assert (v.outcome, v.tests_run, v.tests_passed, v.error.type) == ("runtime_error", 3, 1, "IndexError")


def test_grading_tests_are_used_only_when_asked(server):
    p = problem("assert", ["assert add(1, 1) == 2"])
    p.grading_tests = Suite(kind="assert", cases=["assert add(1, 1) == 2", "assert add(5, 5) == 10"])
    program = "def add(a, b):\n    return 2\n"
    assert server.run(p, program).passed
    assert server.run(p, program, use_grading_tests=True).outcome == "failed"


def test_local_pool_keeps_job_order():
    jobs = [(ADD, "def add(a, b): return a + b"), (ADD, "def add(a, b): return 0"), (ADD, "def add(a, b):")] * 3
    with LocalSandboxPool(2, LIMITS) as pool:
        verdicts = pool.run(jobs)
    assert [v.outcome for v in verdicts] == ["passed", "failed", "compile_error"] * 3


def test_local_pool_runs_two_workers_per_core_by_default():
    with LocalSandboxPool(0, LIMITS) as pool:
        assert len(pool.servers) == 2 * (os.cpu_count() or 1)
        assert all(v.passed for v in pool.run([(ADD, "def add(a, b): return a + b")] * 8))


def test_frame_reader_splits_frames_that_arrive_together_and_checks_size_and_deadline():
    def pair():
        ours, theirs = socket.socketpair()
        return wire.FrameReader(ours), theirs

    reader, theirs = pair()
    wire.send_msg(theirs, {"id": 1, "v": "a"})
    wire.send_msg(theirs, {"id": 2, "v": [1, 2]})
    assert reader.recv(1 << 10) == {"id": 1, "v": "a"}
    assert reader.recv(1 << 10) == {"id": 2, "v": [1, 2]}
    assert not reader.buffer
    reader, theirs = pair()
    theirs.sendall(struct.pack(">I", 1 << 20))  # a header announcing more than the limit: refused unread
    with pytest.raises(wire.WireError, match="exceeds"):
        reader.recv(1 << 10)
    reader, theirs = pair()
    theirs.sendall(struct.pack(">I", 100) + b'{"id": 3')  # a frame that never completes ends at the deadline
    with pytest.raises(TimeoutError):
        reader.recv(1 << 10, time.monotonic() + 0.2)
    theirs.close()
    with pytest.raises(wire.PeerClosed):
        reader.recv(1 << 10)


@pytest.mark.parametrize("value", [None, True, 3, -(10 ** 40), 2.5, float("inf"), "é", [1, (2, 3)], {1: {"a"}},
                                   {(1, 2): frozenset({3})}, b"\x00\xff", 1 + 2j, {"k": [None]}])
def test_wire_roundtrip_rebuilds_builtin_values(value):
    assert wire.decode(wire.encode(value)) == value
    assert type(wire.decode(wire.encode(value))) is type(value)


def test_wire_rejects_malformed_and_strips_subclasses():
    class Liar(int):
        def __eq__(self, other):
            return True

    back = wire.decode(wire.encode(Liar(7)))
    assert type(back) is int and back == 7 and back != 5
    for bad in ({"x": 1}, {"s": [[1]]}, {"d": [1]}, {"h": 1}, {"B": "__import__"}, {"B": "exec"}, {"t": 5}):
        with pytest.raises(wire.WireError):
            wire.decode(bad)
    with pytest.raises(TypeError):
        wire.encode(object())


def test_stdio_comparison_follows_the_apps_harness():
    assert compare.stdio_output_matches("1 2\n3\n", "1 2\n3")
    assert compare.stdio_output_matches("1  2 \n 3\n\n", "1 2\n3\n")
    assert compare.stdio_output_matches("1 2 3", "1\n2\n3")  # tokens
    assert compare.stdio_output_matches("0.3333333\n", "0.33333333\n")
    assert not compare.stdio_output_matches("0.34\n", "0.33\n")
    assert not compare.stdio_output_matches("1 2\n", "2 1\n")
    assert not compare.stdio_output_matches("", "0\n")
    assert compare.call_output_matches((1, 2), [1, 2]) and compare.call_output_matches(3, [3])
    assert not compare.call_output_matches(3, [4])


def test_server_dying_mid_job_is_an_infrastructure_failure_retried_once():
    """Killing the fork-server while a program runs must not score the program: the job is retried on a
    restarted server and gets its real verdict."""
    slow = "import time\ndef add(a, b):\n    time.sleep(0.4)\n    return a + b\n"
    with LocalSandboxPool(1, LIMITS) as pool:
        server = pool.servers[0]
        victim = server.proc.pid
        killer = threading.Timer(0.2, os.kill, (victim, signal.SIGKILL))
        killer.start()
        verdicts = pool.run([(ADD, slow), (ADD, "def add(a, b): return a + b")])
        killer.join()
        assert server.proc.pid != victim and server.alive()
    assert [v.outcome for v in verdicts] == ["passed", "passed"]


def test_large_stdio_input_and_output_round_trip(server):
    lines = [str(i) for i in range(200_000)]
    p = problem("stdio", [["\n".join(lines) + "\n", str(sum(range(200_000))) + "\n"]])
    assert server.run(p, "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n").passed
    text = "é\u0001" * 100_000  # non-ASCII and control characters: the reply grows when JSON-escaped
    p = problem("stdio", [["", text + "\n"]])
    assert server.run(p, f"print({text!r})\n").passed


def test_a_broken_problem_is_an_infra_error_never_the_programs(server):
    program = "def f(x):\n    return x\n"
    broken_header = problem("check", ["check(f)"], header="import no_such_module_rltf\n", entry_point="f")
    broken_prompt = problem("check", ["check(f)"], header="def check(c):\n    assert c(1) == 1\n", entry_point="f")
    broken_prompt.program_prefix = "HELPER = 1 / 0\n"
    for p in (broken_header, broken_prompt):
        v = server.run(p, program)
        assert (v.outcome, v.error.type) == ("infra_error", "BadProblem"), v.summary()
    # A header that needs a name the program does not define: the program's runtime error (no reward to dodge).
    v = server.run(problem("check", ["check(f)"], header="g = f\ndef check(c):\n    pass\n", entry_point="f"),
                   "def h(x):\n    return x\n")
    assert (v.outcome, v.error.type) == ("runtime_error", "NameError"), v.summary()
