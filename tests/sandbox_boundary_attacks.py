"""Programs that attack the boundary between the program's process and the trusted grader (issue 12's classes).

Data only; tests/test_sandbox_boundary.py runs them as root and tests/test_sandbox_nonroot.py as an ordinary
user. Each targets a real problem (MBPP, HumanEval, APPS call-based or stdin, from ../shared/data) or one built
from a real problem (``mbpp/2@all-map``, ``mbpp/2@set``: MBPP 2's tests in the ``all(map(...))`` and ``set(...)``
forms). HumanEval programs are completions: the runner prepends the prompt. Placeholders: @MARKER@ (a file name
that appears in the grader's working directory if code of the program ever runs there), @TOKEN@.

Each must score as not passed; where the outcome is deterministic, ``expect`` pins (outcome, reason).
``destructive`` programs act on PID 1 or the whole machine: they run only inside isolation a probe confirmed.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    name: str
    threat: str  # values | names | control_flow | trusted_work | verdict_fields | memory | infra | leak
    problem: str
    program: str
    expect: tuple[str, str] | None = None
    destructive: bool = False


RUNTIME, BAD = ("runtime_error", ""), ("runtime_error", "bad_result")

# Rewrites every reply the program's process sends (the process is the program's: it can).
_REWRITE_REPLIES = """
import wire
_send = wire.send_msg
def _rewrite(sock, obj):
    obj = rewrite(obj)
    if isinstance(obj, (bytes, bytearray)):
        sock.sendall(len(obj).to_bytes(4, 'big') + obj)
    else:
        _send(sock, obj)
wire.send_msg = _rewrite
"""
# Replaces the error report of every exception the program raises.
_FORGE_ERROR = "import child\nchild._Session.error = lambda self, exc: {report}\n"
_RAISE_17 = "def square_perimeter(a):\n    raise ValueError('no')\n"


def _forged_error(name: str, report: str, expect=BAD) -> Attack:
    return Attack(name, "verdict_fields", "mbpp/17", _FORGE_ERROR.format(report=report) + _RAISE_17, expect)


_VALID_REPORT = "{'type': 'E', 'message': 'm', 'line': 1, 'frames': [], 'reason': ''}"

ATTACKS = [
    # 1. Values that are not values: builtins and program objects must stay in the program's process.
    Attack("he38_exec_decoder_with_code_encoder", "values", "HumanEval/38",
           "    return s\n\ndef encode_cyclic(s):\n    return \"open('@MARKER@', 'w').write('pwned')\"\n\n"
           "decode_cyclic = exec\n", RUNTIME),
    Attack("he50_eval_decoder", "values", "HumanEval/50",
           "    return s\n\ndef encode_shift(s):\n    return \"__import__('os').mkdir('@MARKER@') or s\"\n\n"
           "decode_shift = eval\n", RUNTIME),
    Attack("mbpp17_input_as_solution", "values", "mbpp/17", "square_perimeter = input\n", RUNTIME),
    Attack("mbpp2_print_as_solution", "values", "mbpp/2", "similar_elements = print\n", ("failed", "")),
    Attack("mbpp17_returns_builtins", "values", "mbpp/17",
           "def square_perimeter(a):\n    return [open, exec, setattr, __import__, type]\n", ("failed", "")),
    Attack("mbpp17_forged_builtin_tag", "values", "mbpp/17", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n        obj['v'] = {'B': 'exec'}\n"
           "    if isinstance(obj.get('names'), dict):\n"
           "        obj['names'] = {k: {'B': 'exec'} for k in obj['names']}\n    return obj\n"
           "def square_perimeter(a):\n    return 4 * a\n", BAD),
    Attack("apps2402_solution_returns_type", "values", "apps/train/2402",
           "class Solution:\n    def reverseWords(self, s):\n"
           "        return type('S', (str,), {'__eq__': lambda a, b: True, '__hash__': str.__hash__})\n"
           "", ("failed", "")),
    Attack("apps2403_method_is_builtin", "values", "apps/train/2403",
           "class Solution:\n    checkPerfectNumber = staticmethod(exec)\n", RUNTIME),
    # 2. Names the tests look up: builtins, modules and prompt helpers are the grader's own.
    Attack("mbpp596_fake_sys_class", "names", "mbpp/596",
           "class sys:\n    getsizeof = staticmethod(lambda x: 0)\ndef tuple_size(t):\n    return 0\n", ("failed", "")),
    Attack("mbpp596_patched_sys_module", "names", "mbpp/596",
           "import sys\nsys.getsizeof = lambda x: 0\ndef tuple_size(t):\n    return 0\n", ("failed", "")),
    Attack("he38_identity_helper", "names", "HumanEval/38",
           "    return s\n\ndef encode_cyclic(s):\n    return s\n", ("failed", "")),
    Attack("he50_identity_helper", "names", "HumanEval/50",
           "    return s\n\ndef encode_shift(s):\n    return s\n", ("failed", "")),
    Attack("he32_poly_always_zero", "names", "HumanEval/32",
           "    return 0.0\n\ndef poly(xs, x):\n    return 0\n", ("failed", "")),
    Attack("he38_forged_extra_names", "names", "HumanEval/38", "    return s\n" + _REWRITE_REPLIES +
           "def rewrite(obj):\n    if isinstance(obj.get('names'), dict):\n"
           "        obj['names']['encode_cyclic'] = obj['names'].get('decode_cyclic')\n"
           "        obj['names']['__builtins__'] = {'d': []}\n    return obj\n", BAD),
    Attack("mbpp2_replaces_set_and_tuple", "names", "mbpp/2",
           "def set(x):\n    return 1\ntuple = lambda *a: (4, 5)\ndef similar_elements(a, b):\n    return 0\n",
           ("failed", "")),
    # 3. Control flow mirrored into the grader: program exceptions are reported, never re-raised as such.
    Attack("all_map_stop_iteration", "control_flow", "mbpp/2@all-map",
           "def similar_elements(a, b):\n    raise StopIteration\n", RUNTIME),
    Attack("all_map_fake_stop_iteration_class", "control_flow", "mbpp/2@all-map",
           "class StopIteration(Exception):\n    pass\ndef similar_elements(a, b):\n    raise StopIteration()\n"
           "", RUNTIME),
    Attack("he53_stop_iteration", "control_flow", "HumanEval/53", "    raise StopIteration\n", RUNTIME),
    Attack("he53_generator_exit", "control_flow", "HumanEval/53", "    raise GeneratorExit\n", RUNTIME),
    Attack("he53_keyboard_interrupt", "control_flow", "HumanEval/53", "    raise KeyboardInterrupt\n", RUNTIME),
    Attack("mbpp17_assertion_error_is_not_a_failed_assert", "control_flow", "mbpp/17",
           "def square_perimeter(a):\n    raise AssertionError\n", RUNTIME),
    Attack("mbpp17_system_exit_in_call", "control_flow", "mbpp/17",
           "def square_perimeter(a):\n    raise SystemExit(0)\n", ("runtime_error", "exit")),
    Attack("apps2404_stop_iteration", "control_flow", "apps/train/2404",
           "class Solution:\n    def findKthPositive(self, arr, k):\n        raise StopIteration\n", RUNTIME),
    Attack("apps2361_stdio_stop_iteration", "control_flow", "apps/train/2361", "input()\nraise StopIteration\n"
           "", RUNTIME),
    # 4. Work charged to nobody: decoding and comparing replies is bounded and counts against the deadline.
    Attack("hash_flood_set", "trusted_work", "mbpp/2", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n"
           "        obj['v'] = {'s': [{'i': format(k * (2 ** 61 - 1), 'x')} for k in range(1, 30000)]}\n"
           "    return obj\n"
           "def similar_elements(a, b):\n    return (4, 5)\n", BAD),
    Attack("hash_flood_dict_keys", "trusted_work", "mbpp/17", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n"
           "        obj['v'] = {'d': [[{'i': format(k * (2 ** 61 - 1), 'x')}, 0] for k in range(1, 30000)]}\n"
           "    return obj\ndef square_perimeter(a):\n    return 4 * a\n", BAD),
    Attack("hash_flood_tuples", "trusted_work", "apps/train/2404", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n"
           "        obj['v'] = {'f': [{'t': [{'i': format(k * (2 ** 61 - 1), 'x')}]} for k in range(1, 20000)]}\n"
           "    return obj\nclass Solution:\n    def findKthPositive(self, arr, k):\n        return 9\n", BAD),
    Attack("colliding_ints_in_a_list_the_test_makes_a_set", "trusted_work", "mbpp/2@set",
           "def similar_elements(a, b):\n    return [k * (2 ** 61 - 1) for k in range(3, 30000)]\n", BAD),
    Attack("slowloris_reply", "trusted_work", "mbpp/17",
           "import wire, time\ndef trickle(sock, obj):\n    data = wire._ENCODER.encode(obj).encode()\n"
           "    sock.sendall(len(data).to_bytes(4, 'big'))\n    for i in range(len(data)):\n"
           "        sock.sendall(data[i:i + 1])\n        time.sleep(0.3)\nwire.send_msg = trickle\n"
           "def square_perimeter(a):\n    return 4 * a\n", ("runtime_error", "timeout")),
    Attack("colliding_set_built_by_the_program", "trusted_work", "mbpp/2",
           "def similar_elements(a, b):\n    return {k * (2 ** 61 - 1) for k in range(1, 20000)}\n",
           ("runtime_error", "timeout")),
    Attack("forged_deep_nesting", "trusted_work", "mbpp/17", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n"
           "        return ('{\"id\":%d,\"v\":' % obj['id'] + '[' * 5000 + ']' * 5000 + '}').encode()\n    return obj\n"
           "def square_perimeter(a):\n    return 4 * a\n", BAD),
    Attack("forged_huge_int", "trusted_work", "mbpp/17", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n        obj['v'] = {'i': 'f' * 400000}\n    return obj\n"
           "def square_perimeter(a):\n    return 4 * a\n", BAD),
    Attack("forged_long_decimal", "trusted_work", "mbpp/17", _REWRITE_REPLIES +
           "def rewrite(obj):\n    if 'v' in obj:\n"
           "        return ('{\"id\":%d,\"v\":' % obj['id'] + '4' * 300000 + '}').encode()\n"
           "    return obj\ndef square_perimeter(a):\n    return 4 * a\n", BAD),
    Attack("many_elements", "trusted_work", "mbpp/17", "def square_perimeter(a):\n    return [0] * 400000\n", BAD),
    Attack("oversized_reply", "trusted_work", "HumanEval/53", "    return 'x' * (3 << 20)\n", BAD),
    Attack("stdio_output_flood", "trusted_work", "apps/train/2362", "print('x' * (3 << 20))\n",
           ("runtime_error", "output_limit")),
    Attack("stale_frames_from_a_thread", "trusted_work", "mbpp/17", _REWRITE_REPLIES +
           "import threading, time\nsent = []\n"
           "def rewrite(obj):\n    sent.append(dict(obj))\n    return obj\n"
           "def replay():\n    time.sleep(0.05)\n    for old in list(sent):\n        wire.send_msg(SOCK[0], old)\n"
           "SOCK = []\nimport gc, socket\nSOCK += [o for o in gc.get_objects() if isinstance(o, socket.socket)][:1]\n"
           "def square_perimeter(a):\n    threading.Thread(target=replay).start()\n    time.sleep(0.1)\n"
           "    return 4 * a\n", BAD),
    # 5. Verdict fields the program controls: validated, truncated, reasons from a fixed set.
    _forged_error("reason_not_a_string", "{'type': 'E', 'message': 'm', 'reason': 123}"),
    _forged_error("reason_outside_the_set", "{'type': 'E', 'message': 'm', 'reason': 'passed'}"),
    _forged_error("reason_claims_timeout", "{'type': 'E', 'message': 'm', 'reason': 'timeout'}"),
    _forged_error("type_not_a_string", "{'type': None, 'message': 'm', 'reason': ''}"),
    _forged_error("message_not_a_string", "{'type': 'E', 'message': {'a': 1}, 'reason': ''}"),
    _forged_error("line_not_an_int", "{'type': 'E', 'message': 'm', 'line': True, 'reason': ''}"),
    _forged_error("frames_garbage", "{'type': 'E', 'message': 'm', 'frames': [[1, 2, 3]], 'reason': ''}"),
    _forged_error("report_not_a_dict", "['E', 'm']"),
    _forged_error("huge_type_and_message",
                  "{'type': 'E' * 100000, 'message': '\\x00\\x1b[2J' * 10000, 'line': 10 ** 6, 'reason': ''}",
                  RUNTIME),
    # 6. Memory over the whole tree (see test_forked_children_share_the_memory_limit for the measurement).
    Attack("threads_allocating", "memory", "mbpp/17",
           "import threading\ndef square_perimeter(a):\n    keep = []\n"
           "    ts = [threading.Thread(target=lambda: keep.append(b'x' * (100 << 20))) for _ in range(4)]\n"
           "    [t.start() for t in ts]\n    [t.join() for t in ts]\n    return len(keep)\n", ("failed", "")),
    Attack("memfd_outside_every_limit", "memory", "mbpp/17",
           "import os\ndef square_perimeter(a):\n    fd = os.memfd_create('x')\n    os.ftruncate(fd, 1 << 30)\n"
           "    return 4 * a\n", RUNTIME),
    Attack("scratch_then_heap", "memory", "mbpp/17",
           "import os\ndef square_perimeter(a):\n    with open('fill', 'wb') as fh:\n"
           "        fh.write(b'x' * (60 << 10))\n"
           "    return len(b'y' * (2 << 30))\n", ("runtime_error", "memory")),
    # 8. The sandbox's own failures have no reward: a program must not be able to cause one.
    # (the outcome of signals to PID 1 depends on the level: refused for another uid, ignored by a namespace's init)
    Attack("sigint_to_the_server", "infra", "mbpp/17",
           "import os, signal\ndef square_perimeter(a):\n    os.kill(1, signal.SIGINT)\n    return 0\n"
           "", destructive=True),
    Attack("sigalrm_to_the_server", "infra", "mbpp/17",
           "import os, signal\ndef square_perimeter(a):\n    os.kill(1, signal.SIGALRM)\n    return 0\n"
           "", destructive=True),
    Attack("prlimit_the_server", "infra", "mbpp/17",
           "import resource\ndef square_perimeter(a):\n    resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3))\n"
           "    resource.prlimit(1, resource.RLIMIT_NPROC, (0, 0))\n    return 0\n", RUNTIME, destructive=True),
    Attack("starve_the_server", "infra", "mbpp/17",
           "import os\ndef square_perimeter(a):\n    os.setpriority(os.PRIO_PROCESS, 1, 19)\n"
           "    os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0))\n    return 0\n", RUNTIME, destructive=True),
    Attack("read_server_memory", "infra", "mbpp/17",
           "def square_perimeter(a):\n    return open('/proc/1/mem', 'rb').read(1)\n", RUNTIME),
    Attack("undeletable_scratch", "infra", "mbpp/17",
           "import os\ndef square_perimeter(a):\n    if not os.path.exists('a'):\n        for i in range(3000):\n"
           "            open(f'f{i}', 'w').close()\n        os.makedirs('a/b/c')\n"
           "        for d in ('a/b/c', 'a/b', 'a'):\n"
           "            os.chmod(d, 0)\n    return 0\n",
           ("failed", "")),
    # 9. Nothing of one program reaches the next (the clean-environment probe runs after every attack).
    Attack("leave_traces", "leak", "mbpp/17",
           "import os, socket\nKEEP = []\ndef square_perimeter(a):\n"
           "    open(os.path.expanduser('~/trace'), 'w').write('x')\n"
           "    if KEEP:\n        return 0\n    KEEP.append(socket.socket(socket.AF_UNIX))\n"
           "    KEEP[0].bind('\\0rltf-trace')\n"
           "    KEEP[0].listen()\n"
           "    try:\n        pid = os.fork()\n    except OSError:\n        pid = None\n    if pid == 0:\n"
           "        os.setsid()\n"
           "        import time\n        time.sleep(60)\n    return 0\n", ("failed", "")),
    Attack("stdio_leaves_files", "leak", "apps/train/2361",
           "import os\nfor d in (os.environ.get('TMPDIR', '.'), '/tmp', '/var/tmp', '/dev/shm', '.'):\n    try:\n"
           "        open(os.path.join(d, 'trace'), 'w').write('x')\n    except OSError:\n        pass\n"
           "", ("failed", "")),
    Attack("he53_leaves_a_writer_thread", "leak", "HumanEval/53",
           "    import threading, time\n    def later():\n        time.sleep(0.2)\n"
           "        open('late', 'w').write('x')\n"
           "    threading.Thread(target=later).start()\n    return x + y + 1\n", ("failed", "")),
]

# Three children of one program, 100 MB each: reports [children forked, children that had their memory, children
# alive at the end]. Under a 256 MB limit at most two can hold their memory at once.
FORKED_CHILDREN_PROGRAM = """
import os, time
def square_perimeter(a):
    r, w = os.pipe()
    kids = []
    for _ in range(3):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            block = b'x' * (100 << 20)
            os.write(w, b'1')
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    if kids:
        time.sleep(1.5)
    os.set_blocking(r, False)
    try:
        ready = len(os.read(r, 16))
    except BlockingIOError:
        ready = 0
    alive = sum(os.waitpid(k, os.WNOHANG) == (0, 0) for k in kids)
    raise ValueError(repr([len(kids), ready, alive]))
"""

# The probe that runs after every attack: the next program finds a clean scratch directory, no other process of
# the program and no listening abstract socket (or it cannot look: also clean).
CLEAN_PROBLEM = "probe/clean"
CLEAN_PROGRAM = """
import os
def clean():
    found = sorted(set(os.listdir('.')) - {'stdout.txt'})
    try:
        found += [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]
        found += [ln for ln in open('/proc/net/unix').read().splitlines() if 'rltf-trace' in ln]
    except OSError:
        pass
    return found
"""


def target_problems(data_dir) -> dict:
    """The problems the attacks aim at, by id: real ones from ``data_dir`` and the two built here."""
    from tasks import load_problems
    from tasks.problem import Problem, TestSuite

    wanted = {a.problem for a in ATTACKS}
    found = {}
    for source in ("mbpp/mbpp.jsonl", "humaneval/HumanEval.jsonl.gz", "apps/apps_subset_intro_interview.jsonl"):
        found.update({p.problem_id: p for p in load_problems(str(data_dir / source), split=None)
                      if p.problem_id in wanted or p.problem_id == "mbpp/2"})
    cases = [(((3, 4, 5, 6), (5, 7, 4, 10)), (4, 5)), (((1, 2, 3, 4), (5, 4, 3, 7)), (3, 4)),
             (((11, 12, 14, 13), (17, 15, 14, 13)), (13, 14))]
    found["mbpp/2@set"] = Problem(
        problem_id="mbpp/2@set", source="mbpp", prompt="", solutions=found["mbpp/2"].solutions,
        tests=TestSuite(kind="assert",
                        cases=[f"assert set(similar_elements(*{c[0]!r})) == set({c[1]!r})" for c in cases]))
    found["mbpp/2@all-map"] = Problem(
        problem_id="mbpp/2@all-map", source="mbpp", prompt="", solutions=found["mbpp/2"].solutions,
        tests=TestSuite(kind="assert",
                        cases=[f"assert all(map(lambda c: similar_elements(*c[0]) == c[1], {cases!r}))"]))
    found[CLEAN_PROBLEM] = Problem(problem_id=CLEAN_PROBLEM, source="test", prompt="", solutions=[CLEAN_PROGRAM],
                                   tests=TestSuite(kind="assert", cases=["assert clean() == []"]))
    missing = wanted - set(found)
    assert not missing, f"attack targets missing from the data: {missing}"
    return found


def program_for(attack: Attack, problem, token: str) -> str:
    """The whole program as it runs (HumanEval: prompt + the attack's completion), placeholders filled."""
    program = problem.program_prefix + attack.program
    return program.replace("@MARKER@", f"rltf_pwned_{token}").replace("@TOKEN@", token)


def samples_jsonl(attacks: list, targets: dict, token: str) -> str:
    """`launch.py execute`'s samples file for ``attacks``."""
    import json

    return "".join(json.dumps({"problem_id": a.problem, "program": program_for(a, targets[a.problem], token)}) + "\n"
                   for a in attacks)
