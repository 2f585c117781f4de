"""Grade sandbox jobs as the user running this script and report verdicts, isolation and the grader's own state.

Started by tests/test_sandbox_nonroot.py as an ordinary user (standard library and the project only, so that a
system Python can run it): ``python sandbox_as_user.py JOBS.json OUT.json``. JOBS holds a ``probe`` job,
``markers`` (paths that must not appear) and ``groups``, each ``{"limits": SandboxConfig fields, "warm_up": [jobs],
"jobs": [jobs]}``, a job being ``{"problem": Problem dict, "program": str, "next": [jobs], "destructive": bool}``.
Each group is graded by one LocalSandboxPool of 2 workers; each worker takes every other job and, right after it,
that job's ``next`` jobs on the same worker (the next program must grade normally). Destructive jobs run only
when the probe, run through the first pool, confirmed the isolation.
"""
from __future__ import annotations

import ast
import builtins
import json
import os
import sys
import threading

ISOLATION_PROBE = """
import os
def probe():
    status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines() if ':' in line)
    raise ValueError(repr([os.getuid(), os.getppid(), status['CapEff'].strip(), status['Seccomp'].strip()]))
"""


def grader_state(markers=()) -> dict:
    """What must be the same before and after grading hostile programs, in the grading process itself."""
    return {"threads": sorted(t.ident for t in threading.enumerate()), "modules": sorted(sys.modules),
            "builtins": {k: id(v) for k, v in vars(builtins).items()}, "cwd": sorted(os.listdir(".")),
            "markers": [os.path.exists(m) for m in markers]}


def confirmed_isolation(verdict, info: dict) -> tuple[bool, list]:
    """The probe's report: not a capable user, in its own PID namespace (parent is PID 1), under seccomp."""
    try:
        uid, ppid, cap_eff, seccomp = ast.literal_eval(verdict.error.message)
    except (AttributeError, ValueError, SyntaxError):
        return False, []
    ok = ppid == 1 and int(cap_eff, 16) == 0 and seccomp == "2" and bool(info.get("pid1"))
    return ok, [uid, ppid, cap_eff, seccomp]


def _load(job):
    from tasks.problem import Problem

    return Problem.from_dict(job["problem"]), job["program"]


def _grade_group(pool, jobs: list, confirmed: bool) -> list:
    from sandbox.local_pool import run_job

    results: list = [None] * len(jobs)

    def lane(index: int) -> None:
        server = pool.servers[index]
        for i in range(index, len(jobs), 2):
            job = jobs[i]
            if job.get("destructive") and not confirmed:
                results[i] = {"skipped": "isolation not confirmed"}
                continue
            cwd = sorted(os.listdir("."))
            verdict = run_job(server, *_load(job), False)
            following = [run_job(server, *_load(n), False).summary() for n in job.get("next", [])]
            results[i] = {"verdict": verdict.summary(), "next": following, "status": server.last_status,
                          "cwd_changed": sorted(os.listdir(".")) != cwd}

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(len(pool.servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main(jobs_path: str, out_path: str) -> int:
    from configs.schema import SandboxConfig
    from sandbox import LocalSandboxPool

    with open(jobs_path) as fh:
        spec = json.load(fh)
    markers = spec.get("markers", [])
    report = {"uid": os.getuid(), "groups": []}
    for index, group in enumerate(spec["groups"]):
        with LocalSandboxPool(2, SandboxConfig(**group["limits"])) as pool:
            if index == 0:
                verdict = pool.run([_load(spec["probe"])])[0]
                report["confirmed"], report["probe"] = confirmed_isolation(verdict, pool.isolation)
                report["isolation"], report["level"] = pool.isolation, pool.isolation_level
            pool.run([_load(job) for job in group.get("warm_up", [])])
            before = grader_state(markers)
            results = _grade_group(pool, group["jobs"], report["confirmed"])
            after = grader_state(markers)
        report["groups"].append({"results": results, "grader_unchanged": {k: before[k] == after[k] for k in before}})
    with open(out_path, "w") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
