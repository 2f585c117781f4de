"""The adversarial suite: every program of SANDBOX-THREATS.md scores as not passed, leaves the host as it was
(no files outside scratch, no processes left, a 127.0.0.1 listener opened here receives nothing, this process
alive) and the same worker then grades a correct program.

Escapes and bombs are destructive when they run unconfined, so they are marked ``hostile`` and run only after a
probe through the same sandbox has confirmed that the child is not root and is in its own PID namespace.
Cheats (programs trying to be graded as right) are harmless to the host and always run.
"""
from __future__ import annotations

import os
import socket
import sysconfig
import time
import uuid
from pathlib import Path

import pytest
from test_sandbox_hostile_programs import CHEATS, ESCAPES_AND_BOMBS, STDIO_CHEATS

from configs.schema import SandboxConfig
from sandbox import ForkServer
from tasks.problem import Problem
from tasks.problem import (
    TestSuite as Suite,  # aliased: pytest would try to collect Test*
)

LIMITS = SandboxConfig(test_timeout_s=1.0, program_timeout_s=3.0, memory_mb=512, max_output_bytes=1 << 16,
                       max_file_bytes=1 << 16)
TOKEN = uuid.uuid4().hex
SECRET = f"secret-{TOKEN}"  # the expected answer: it must never be reachable from the program
REPO = Path(__file__).resolve().parent.parent
MARKERS = [Path("/tmp") / f"rltf_pwned_{TOKEN}", Path.home() / f"rltf_pwned_{TOKEN}",
           Path(sysconfig.get_paths()["purelib"]) / f"rltf_pwned_{TOKEN}.py", REPO / "tests" / f"rltf_pwned_{TOKEN}.py",
           Path("/dev/shm") / f"rltf_pwned_{TOKEN}"]
SANDBOX_UID_MIN = 1_000_000
GOOD = "def f(x):\n    return 'secret-' + x\n"


def secret_problem(kind: str = "assert") -> Problem:
    if kind == "stdio":
        tests = Suite(kind="stdio", cases=[[TOKEN + "\n", SECRET + "\n"], ["a\n", "secret-a\n"]])
    else:
        tests = Suite(kind="assert", cases=[f"assert f({TOKEN!r}) == {SECRET!r}", "assert f('a') == 'secret-a'"])
    return Problem(problem_id=f"hostile-{kind}", source="test", prompt="", tests=tests)


def sandbox_processes() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            if uid >= SANDBOX_UID_MIN:
                pids.append(int(entry))
    return pids


def files_of_sandbox_uids() -> list[str]:
    """Files a sandboxed program could have made in the host's writable places: they would carry its uid.
    (Comparing whole listings is unreliable on a machine where other processes use /tmp too.)"""
    found = []
    for folder in ("/tmp", "/var/tmp", "/dev/shm", str(Path.home()), str(REPO / "tests")):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid >= SANDBOX_UID_MIN:
                    found.append(entry.path)
            except OSError:
                continue
    return found


def host_snapshot() -> dict:
    return {
        "sandbox_owned_files": files_of_sandbox_uids(),
        "markers": [m.exists() for m in MARKERS],
        "victim": VICTIM.read_text() if VICTIM.exists() else None,
        "secret_file": SECRET_FILE.read_text() if SECRET_FILE.exists() else None,
    }


VICTIM = Path("/tmp") / f"rltf_victim_{TOKEN}"
SECRET_FILE = Path("/tmp") / f"rltf_tests_{TOKEN}.json"


@pytest.fixture(scope="module")
def env():
    # A world-writable host file a program would love to overwrite, and the "test file" holding the answer.
    VICTIM.write_text("untouched")
    VICTIM.chmod(0o666)
    SECRET_FILE.write_text(f'{{"expected": "{SECRET}"}}')
    SECRET_FILE.chmod(0o644)
    os.environ["RLTF_EXPECTED_ANSWER"] = SECRET  # in this process's environment too
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    server = ForkServer(LIMITS)
    try:
        yield {"server": server, "listener": listener, "port": listener.getsockname()[1]}
    finally:
        server.close()
        listener.close()
        os.environ.pop("RLTF_EXPECTED_ANSWER", None)
        for path in (VICTIM, SECRET_FILE, *MARKERS):
            if path.exists():
                path.unlink()


@pytest.fixture(scope="module")
def confirmed(env):
    """The probe: through the same sandbox, the child must not be root and must be in its own PID namespace."""
    probe = ("import os\ndef f(x):\n    raise ValueError(repr([os.getuid(), os.geteuid(), os.getppid(), "
             "os.getpid()]))\n")
    verdict = env["server"].run(secret_problem(), probe)
    try:
        uid, euid, ppid, _pid = eval(verdict.error.message, {})  # plain literals written by the probe
    except Exception:  # noqa: BLE001
        pytest.skip(f"HOSTILE TESTS SKIPPED: the isolation probe did not answer ({verdict.summary()})")
    if uid == 0 or euid == 0 or ppid != 1 or not env["server"].info.get("pid1"):
        pytest.skip(f"HOSTILE TESTS SKIPPED: sandbox isolation not confirmed (uid={uid}, euid={euid}, ppid={ppid}); "
                    "destructive programs are never run unconfined")
    return env


def fill(program: str, env: dict) -> str:
    return (program.replace("@PORT@", str(env["port"])).replace("@TOKEN@", TOKEN)
            .replace("@VICTIM@", str(VICTIM)).replace("@SECRET_FILE@", str(SECRET_FILE))
            .replace("@MARKERS@", repr([str(m) for m in MARKERS])))


# Where the outcome is deterministic, it must also be for the right reason.
EXPECTED = {
    "busy_loop": ("runtime_error", "timeout"), "sleep_forever": ("runtime_error", "timeout"),
    "catch_sigxcpu_sigterm": ("runtime_error", "timeout"), "huge_allocation": ("runtime_error", "memory"),
    "stdout_flood": ("runtime_error", "output_limit"), "ctypes_segfault": ("runtime_error", "signal"),
    "huge_return": ("runtime_error", "bad_result"), "deeply_nested_return": ("runtime_error", "bad_result"),
    "sys_exit_top_level": ("runtime_error", "exit"), "os_exit": ("runtime_error", "exit"),
    "unclosed_triple_quote": ("compile_error", ""), "always_equal": ("failed", ""),
}


def check_hostile(env: dict, program: str, kind: str = "assert", name: str = "") -> None:
    server: ForkServer = env["server"]
    before = host_snapshot()
    server_pid = server.proc.pid
    verdict = server.run(secret_problem(kind), fill(program, env))
    assert not verdict.passed, verdict.summary()
    assert verdict.outcome != "infra_error", verdict.summary()
    if name in EXPECTED:
        assert (verdict.outcome, verdict.reason) == EXPECTED[name], verdict.summary()
    time.sleep(0.05)
    assert sandbox_processes() == [], "processes left behind"
    assert host_snapshot() == before, "the host changed"
    with pytest.raises(BlockingIOError):
        env["listener"].accept()
    # The same worker process grades the next program.
    assert server.proc.pid == server_pid and server.alive()
    assert server.run(secret_problem(), GOOD).passed


@pytest.mark.hostile
@pytest.mark.parametrize("name", sorted(ESCAPES_AND_BOMBS))
def test_escapes_and_bombs(confirmed, name):
    check_hostile(confirmed, ESCAPES_AND_BOMBS[name], name=name)


@pytest.mark.hostile
def test_late_daemon_is_gone(confirmed):
    """A double-forked setsid() daemon that would write later: killed with the program, nothing appears."""
    check_hostile(confirmed, ESCAPES_AND_BOMBS["double_fork_daemon"])
    time.sleep(1.0)
    assert not any(m.exists() for m in MARKERS) and sandbox_processes() == []


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheats_do_not_pass(env, name):
    check_hostile(env, CHEATS[name], name=name)


@pytest.mark.parametrize("name", sorted(STDIO_CHEATS))
def test_stdio_cheats_do_not_pass(env, name):
    check_hostile(env, STDIO_CHEATS[name], kind="stdio", name=name)


def test_child_environment_is_clean(env):
    seen = Problem(problem_id="env", source="test", prompt="", tests=Suite(kind="assert", cases=[
        "assert set(f()) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'PYTHONHASHSEED'}"]))
    assert env["server"].run(seen, "import os\ndef f():\n    return sorted(os.environ)\n").passed


def test_humaneval_program_defining_check_is_not_trusted(env):
    header = "def check(candidate):\n    assert candidate(2) == 4\n"
    p = Problem(problem_id="he", source="test", prompt="", tests=Suite(kind="check", cases=["check(double)"],
                                                                       header=header, entry_point="double"))
    program = "def double(x):\n    return 0\ndef check(candidate):\n    return True\n"
    assert env["server"].run(p, program).outcome == "failed"
    assert env["server"].run(p, "def double(x):\n    return 2 * x\n").passed
