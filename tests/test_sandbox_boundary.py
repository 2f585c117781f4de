"""Attacks on the boundary between a program and the trusted grader (issue 12), against real problems.

Each program of tests/sandbox_boundary_attacks.py scores as not passed (never an infra_error, which would carry
no reward), for the right reason where that is deterministic; the grading process is unchanged (no file in its
working directory, no new thread or module, the same builtins); the problem's reference then passes on the same
worker, and a probe finds nothing left of the attack. `launch.py execute --rewards` grades them all and exits 0.
Programs acting on PID 1 run only after a probe confirmed the isolation (as in test_sandbox_hostile.py).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sandbox_as_user import ISOLATION_PROBE, confirmed_isolation, grader_state
from sandbox_boundary_attacks import (
    ATTACKS,
    CLEAN_PROBLEM,
    FORKED_CHILDREN_PROGRAM,
    program_for,
    samples_jsonl,
    target_problems,
)

from configs.schema import SandboxConfig
from sandbox import ForkServer
from tasks import write_problems
from tasks.problem import Problem
from tasks.problem import (
    TestSuite as Suite,  # aliased: pytest would try to collect Test*
)

LIMITS = SandboxConfig(test_timeout_s=1.0, program_timeout_s=4.0, memory_mb=256)
TOKEN = uuid.uuid4().hex
REPO = Path(__file__).resolve().parent.parent
BY_NAME = {a.name: a for a in ATTACKS}
MARKERS = [f"rltf_pwned_{TOKEN}", f"/tmp/rltf_pwned_{TOKEN}"]


@pytest.fixture(scope="module")
def targets(shared_data):
    return target_problems(shared_data)


@pytest.fixture(scope="module")
def server(targets):
    with ForkServer(LIMITS) as fs:
        probe = Problem(problem_id="probe", source="test", prompt="", tests=Suite(kind="assert", cases=["probe()"]))
        fs.confirmed, _ = confirmed_isolation(fs.run(probe, ISOLATION_PROBE), fs.info)
        # The references pass, and every module the trusted side imports for these tests is imported now.
        for problem in targets.values():
            assert fs.run(problem, problem.solutions[0]).passed, problem.problem_id
        yield fs


def test_every_threat_class_has_several_attacks():
    threats = {}
    for attack in ATTACKS:
        threats.setdefault(attack.threat, set()).add(attack.problem.split("/")[0])
    assert all(len([a for a in ATTACKS if a.threat == t]) >= 3 for t in threats), threats
    families = {source for sources in threats.values() for source in sources}
    assert {"mbpp", "HumanEval", "apps"} <= families


@pytest.mark.parametrize("name", [a.name for a in ATTACKS])
def test_attack_is_not_rewarded_and_leaves_the_grader_as_it_was(server, targets, name):
    attack = BY_NAME[name]
    if attack.destructive and not server.confirmed:
        pytest.skip("DESTRUCTIVE ATTACK SKIPPED: sandbox isolation not confirmed by the probe")
    problem = targets[attack.problem]
    before = grader_state(MARKERS)
    verdict = server.run(problem, program_for(attack, problem, TOKEN))
    assert not verdict.passed and verdict.outcome != "infra_error", verdict.summary()
    if attack.expect:
        assert (verdict.outcome, verdict.reason) == attack.expect, verdict.summary()
    # Trusted-side work is bounded: at most the program's own deadline, and far less for a reply's decoding.
    limit_s = LIMITS.test_timeout_s + 1.0 if attack.threat == "trusted_work" else LIMITS.program_timeout_s + 1.0
    assert verdict.wall_ms < 1000 * limit_s, verdict.summary()
    after = grader_state(MARKERS)
    # No new thread in the grader; threads left by earlier tests (Ray's, a thread pool's) may end meanwhile.
    assert set(after.pop("threads")) <= set(before.pop("threads")), "the attack left a thread in the grader"
    assert after == before
    assert server.run(problem, problem.solutions[0]).passed, "the next program does not grade normally"
    clean = server.run(targets[CLEAN_PROBLEM], targets[CLEAN_PROBLEM].solutions[0])
    assert clean.passed, f"the attack left traces: {clean.summary()}"


def test_forked_children_share_the_memory_limit(server, targets):
    """Three children of one program, 100 MB each, under a 256 MB limit: at most two hold their memory at once
    (cgroup: the OOM killer takes the others; without cgroups: fork is refused)."""
    problem = targets["mbpp/17"]
    with ForkServer(SandboxConfig(test_timeout_s=10.0, program_timeout_s=10.0, memory_mb=256)) as fs:
        verdict = fs.run(problem, FORKED_CHILDREN_PROGRAM)
        forked, ready, alive = ast.literal_eval(verdict.error.message)
        assert min(ready, alive) * 100 <= 256, verdict.summary()
        if fs.cgroup is not None:
            assert forked == 3 and fs.last_status["tree_peak_kb"] <= 256 << 10, fs.last_status
        else:
            assert forked == 0 and fs.info["single_process"]
        assert fs.run(problem, problem.solutions[0]).passed


def test_execute_with_rewards_grades_every_attack_and_exits_0(server, targets, tmp_path):
    attacks = [a for a in ATTACKS if server.confirmed or not a.destructive]
    problems = tmp_path / "problems.jsonl"
    write_problems(targets.values(), problems)
    samples = tmp_path / "samples.jsonl"
    samples.write_text(samples_jsonl(attacks, targets, TOKEN))
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), "execute", "--problems", str(problems),
                             "--samples", str(samples), "--rewards", "--workers", "2", "--test-timeout", "1",
                             "--program-timeout", "4"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # stdout holds verdict lines only
    assert len(lines) == len(attacks)
    for attack, line in zip(attacks, lines):
        assert line["outcome"] not in ("passed", "infra_error") and line["reward"] < 0, (attack.name, line)
        assert line["isolation"] == server.isolation_level
    assert sorted(p.name for p in tmp_path.iterdir()) == ["problems.jsonl", "samples.jsonl"]
    assert not any(Path(m).exists() for m in MARKERS)


@pytest.mark.timeout(120)
def test_a_process_that_stops_reading_cannot_hold_the_grader(server):
    """After its first answer the program stops reading its requests: the next one (4 MB of input, more than the
    socket buffers) cannot block the grader past the test's deadline."""
    big = "\n".join(["1"] * (2 << 20)) + "\n"
    problem = Problem(problem_id="big-input", source="test", prompt="", tests=Suite(kind="stdio", cases=[
        ["1\n1\n", "2\n"], [big, f"{2 << 20}\n"]]))
    program = ("import sys, time, wire\nprint(sum(map(int, sys.stdin.read().split())))\n"
               "wire.FrameReader.recv = lambda *a, **k: time.sleep(10 ** 6)\n")
    verdict = server.run(problem, program)
    assert (verdict.outcome, verdict.reason, verdict.tests_passed) == ("runtime_error", "timeout", 1), verdict.summary()
    assert verdict.wall_ms < 1000 * (LIMITS.program_timeout_s + 1.0)
    assert server.run(problem, "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n").passed
