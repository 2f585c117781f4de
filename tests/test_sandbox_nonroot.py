"""The sandbox run by an ordinary user: full isolation through an unprivileged user namespace, the same verdicts.

As root, the tests run a system user (made here if missing); as an ordinary user, themselves. Skipped, with the
reason, when that user cannot run the project's Python or the kernel refuses unprivileged user namespaces.
tests/sandbox_as_user.py grades, as that user and with one worker pool per group: the whole hostile suite
(test_sandbox_hostile_programs.py and sandbox_boundary_attacks.py, the next program on the same worker after
each) and the references (MBPP 974, HumanEval 164, the APPS subset). The jobs file it reads holds the expected
answers and its path is on its command line: the programs that scan /proc/*/cmdline and read files find nothing.
"""
from __future__ import annotations

import ast
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from sandbox_as_user import ISOLATION_PROBE
from sandbox_boundary_attacks import (
    ATTACKS,
    CLEAN_PROBLEM,
    FORKED_CHILDREN_PROGRAM,
    program_for,
    samples_jsonl,
    target_problems,
)
from test_sandbox_hostile import (
    EXPECTED,
    GOOD,
    LIMITS,
    MARKERS,
    env,  # noqa: F401 (a fixture: the listener, victim files and markers)
    fill,
    host_snapshot,
    secret_problem,
)
from test_sandbox_hostile_programs import CHEATS, ESCAPES_AND_BOMBS, STDIO_CHEATS
from test_sandbox_references import APPS_SEVERAL_CORRECT_OUTPUTS

from tasks import load_problems
from tasks.problem import Problem
from tasks.problem import (
    TestSuite as Suite,  # aliased: pytest would try to collect Test*
)

REPO = Path(__file__).resolve().parent.parent
USER = "rltf-sandbox"
EXECUTE = ("import argparse, sys\nfrom sandbox import cli\nparser = argparse.ArgumentParser()\ncli.add_arguments(parser)\n"
           "sys.exit(cli.run(parser.parse_args()))\n")
TOKEN = uuid.uuid4().hex


def _as_user(user, args: list[str], cwd: Path, timeout: float, path: str = "/usr/bin:/bin"):
    environment = {"PATH": path, "PYTHONPATH": str(REPO), "HOME": str(cwd), "LANG": "C.UTF-8"}
    ids = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, **ids)


@pytest.fixture(scope="module")
def ordinary_user():
    """(user entry or None for the current user, a Python that user can run with the project, a work folder)."""
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(USER)
        except KeyError:
            if shutil.which("useradd") is None:
                pytest.skip("NON-ROOT SANDBOX TESTS SKIPPED: no ordinary user and no `useradd` to make one")
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                           check=True)
            user = pwd.getpwnam(USER)
    work = Path(tempfile.mkdtemp(prefix="rltf-as-user-"))  # pytest's own temporary folders are private to root
    if user is not None:
        os.chown(work, user.pw_uid, user.pw_gid)
    for python in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3", shutil.which("python3") or ""]):
        try:
            if python and _as_user(user, [python, "-c", "import sandbox, tasks"], work, 60).returncode == 0:
                break
        except PermissionError:  # e.g. an interpreter under root's private home
            continue
    else:
        pytest.skip("NON-ROOT SANDBOX TESTS SKIPPED: the ordinary user cannot run a Python that imports the project")
    probe = _as_user(user, ["unshare", "--user", "--map-root-user", "--pid", "--fork", "true"], work, 30)
    if probe.returncode != 0:
        pytest.skip(f"NON-ROOT SANDBOX TESTS SKIPPED: unprivileged user namespaces are off ({probe.stderr.strip()})")
    yield user, python, work
    shutil.rmtree(work, ignore_errors=True)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                found.append(int(entry))
        except OSError:
            continue
    return found


def _job(problem: Problem, program: str, following=(), destructive=False) -> dict:
    return {"problem": problem.to_dict(), "program": program, "destructive": destructive,
            "next": [{"problem": p.to_dict(), "program": prog} for p, prog in following]}


def _references(shared_data) -> list[Problem]:
    problems = load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"), split=None)
    problems += load_problems(str(shared_data / "humaneval" / "HumanEval.jsonl.gz"), split=None)
    for name in ("apps_subset_intro_interview.jsonl", "apps_subset_competition.jsonl", "original_layout"):
        problems += load_problems(str(shared_data / "apps" / name), split=None)
    return [p for p in problems if p.solutions]


@pytest.mark.hostile
def test_hostile_suite_and_references_as_an_ordinary_user(ordinary_user, env, shared_data):  # noqa: F811
    user, python, work = ordinary_user
    targets = target_problems(shared_data)
    clean = (targets[CLEAN_PROBLEM], targets[CLEAN_PROBLEM].solutions[0])
    suites = (("assert", ESCAPES_AND_BOMBS), ("assert", CHEATS), ("stdio", STDIO_CHEATS))
    threats = [(name, kind, program) for kind, programs in suites for name, program in programs.items()]
    hostile = [_job(secret_problem(kind), fill(program, env), [(secret_problem(), GOOD)], name in ESCAPES_AND_BOMBS)
               for name, kind, program in threats]
    hostile += [_job(targets[a.problem], program_for(a, targets[a.problem], TOKEN),
                     [(targets[a.problem], targets[a.problem].solutions[0]), clean], a.destructive) for a in ATTACKS]
    references = _references(shared_data)
    limits = {k: getattr(LIMITS, k) for k in ("test_timeout_s", "program_timeout_s", "memory_mb", "max_output_bytes",
                                              "max_file_bytes")}
    spec = {"probe": _job(Problem(problem_id="probe", source="test", prompt="", tests=Suite(kind="assert", cases=[
                "probe()"])), ISOLATION_PROBE),
            "markers": [str(m) for m in MARKERS] + [f"rltf_pwned_{TOKEN}"],
            "groups": [{"limits": limits, "jobs": hostile,
                        "warm_up": [_job(p, p.solutions[0]) for p in targets.values()]},
                       {"limits": {"test_timeout_s": 20.0, "program_timeout_s": 60.0},
                        "jobs": [_job(p, p.solutions[0]) for p in references]},
                       {"limits": {"test_timeout_s": 10.0, "program_timeout_s": 10.0, "memory_mb": 256},
                        "jobs": [_job(targets["mbpp/17"], FORKED_CHILDREN_PROGRAM)]}]}
    jobs_file, report_file = work / f"jobs-{TOKEN}.json", work / "report.json"
    jobs_file.write_text(json.dumps(spec))
    before = host_snapshot()
    uid = os.getuid() if user is None else user.pw_uid
    run = _as_user(user, [python, str(REPO / "tests" / "sandbox_as_user.py"), str(jobs_file), str(report_file)],
                   work, 600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["uid"] != 0 and report["confirmed"], report["probe"]
    assert report["level"].startswith("userns+") and report["isolation"]["drop"] == "capabilities", report["isolation"]
    if user is not None:
        assert _processes_of(uid) == [], "processes of the program outlived the grader"
    assert host_snapshot() == before
    with pytest.raises(BlockingIOError):
        env["listener"].accept()

    hostile_results, reference_results, (memory_result,) = (group["results"] for group in report["groups"])
    for group in report["groups"]:
        assert all(group["grader_unchanged"].values()), group["grader_unchanged"]
    expected = [EXPECTED.get(name) for name, _, _ in threats] + [a.expect for a in ATTACKS]
    names = [name for name, _, _ in threats] + [a.name for a in ATTACKS]
    assert len(hostile_results) == len(names) and len(reference_results) == len(references)
    for name, want, result in zip(names, expected, hostile_results):
        verdict = result["verdict"]
        assert verdict["outcome"] not in ("passed", "infra_error"), (name, verdict)
        assert verdict["isolation"] == report["level"] and not result["cwd_changed"], name
        if want:
            assert (verdict["outcome"], verdict["reason"]) == want, (name, verdict)
        assert all(n["outcome"] == "passed" for n in result["next"]), (name, result["next"])
    # The program's children together stay within its memory limit (here: no cgroup, so no second process).
    forked, ready, alive = ast.literal_eval(memory_result["verdict"]["error_message"])
    assert min(ready, alive) * 100 <= 256 and (forked == 0 or report["isolation"]["cgroup"]), memory_result
    failing = {p.problem_id: r["verdict"] for p, r in zip(references, reference_results)
               if r["verdict"]["outcome"] != "passed"}
    assert set(failing) == APPS_SEVERAL_CORRECT_OUTPUTS, failing
    assert sum(p.source == "mbpp" for p in references) == 974
    assert sum(p.source == "humaneval" for p in references) == 164


def test_execute_as_an_ordinary_user_records_the_isolation_and_auto_never_falls_back(ordinary_user, shared_data):
    user, python, work = ordinary_user
    targets = target_problems(shared_data)
    problems, samples = work / "problems.jsonl", work / "samples.jsonl"
    picked = [a for a in ATTACKS if a.threat in ("values", "names")][:6]
    problems.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in targets.values()))
    samples.write_text(samples_jsonl(picked, targets, TOKEN))
    # `launch.py execute`'s own module: the user's Python here may lack the training stack launch.py also loads.
    command = [python, "-c", EXECUTE, "--problems", str(problems), "--samples", str(samples)]
    result = _as_user(user, command, work, 300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["outcome"] != "passed" for line in lines] == [True] * len(picked)
    assert {line["isolation"] for line in lines} <= {"userns+rlimits", "userns+cgroup-v1", "userns+cgroup-v2"}

    # Namespaces refused (an `unshare` that always fails): stop with what is missing, never grade unconfined.
    fake = work / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "unshare").write_text("#!/bin/sh\necho 'unshare: Operation not permitted' >&2\nexit 1\n")
    (fake / "unshare").chmod(0o755)
    result = _as_user(user, command, work, 120, path=f"{fake}:/usr/bin:/bin")
    assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
    assert "cannot isolate programs" in result.stderr and "--isolation none" in result.stderr
    result = _as_user(user, command + ["--isolation", "none"], work, 120, path=f"{fake}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr[-2000:]
    assert {json.loads(line)["isolation"] for line in result.stdout.splitlines()} == {"none"}
