"""Running many programs at once without Ray: N fork-servers driven from N threads, and a one-off helper.

The threads only wait on sockets (the programs run in the fork-servers' children), so one Python process keeps
N servers busy. A server that dies mid-job is restarted and the job retried once; a second failure becomes an
``infra_error`` verdict, never a program failure.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from configs.schema import SandboxConfig
from sandbox.forkserver import ForkServer, ServerDied
from sandbox.verdict import ProgramError, Verdict
from tasks.problem import Problem

log = logging.getLogger(__name__)


# One program's grading alternates between three processes (this thread, the fork-server, the program), so one
# worker per core leaves cores idle between the steps. MBPP references on 2 cores (bench/sandbox_throughput.py):
# 2 workers 298-392 programs/s, 4 workers 363-539 (the machine's own variation), 6-8 no better than 4.
LOCAL_WORKERS_PER_CORE = 2


def default_num_workers(limits: SandboxConfig, per_core: int = 1) -> int:
    """``limits.num_workers``, or (0) ``per_core`` workers per CPU core: one for Ray sandbox actors (processes of
    their own, sharing the node with samplers), `LOCAL_WORKERS_PER_CORE` for the threads of `LocalSandboxPool`."""
    return limits.num_workers if limits.num_workers > 0 else per_core * (os.cpu_count() or 1)


def detach_grader_process() -> str:
    """For a process whose job is grading (`launch.py execute`, a Ray sandbox worker): standard input becomes
    /dev/null and the working directory a fresh scratch directory (removed at exit), so that even code that
    should never run in the grader could not read a terminal or drop files where the user works."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.path[:] = [os.path.abspath(p) if p in ("", ".") else p for p in sys.path]  # imports keep their base
    scratch = tempfile.mkdtemp(prefix="rltf-grader-")
    os.chdir(scratch)
    atexit.register(shutil.rmtree, scratch, True)
    return scratch


def run_job(server: ForkServer, problem: Problem, program: str, use_grading_tests: bool) -> Verdict:
    """One job on one server, with the restart-and-retry-once rule."""
    for attempt in (1, 2):
        try:
            return server.run(problem, program, use_grading_tests=use_grading_tests)
        except ServerDied as exc:
            log.warning("sandbox server failed on %s (attempt %d): %s", problem.problem_id, attempt, exc)
            try:
                server.restart()
            except Exception as restart_exc:  # noqa: BLE001 - reported as the verdict's error below
                exc = restart_exc
            if attempt == 2:
                return infra_error(problem, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


def infra_error(problem: Problem, message: str) -> Verdict:
    suite = problem.tests
    return Verdict(problem_id=problem.problem_id, outcome="infra_error", tests_total=len(suite.cases),
                   error=ProgramError("SandboxFailure", message))


class LocalSandboxPool:
    """``run(jobs)`` grades ``(problem, program)`` pairs (whole programs, as for `run_program`) on
    ``num_workers`` fork-servers (0: two per core); verdicts in job order."""

    def __init__(self, num_workers: int = 0, limits: SandboxConfig | None = None):
        self.limits = limits or SandboxConfig()
        n = num_workers or default_num_workers(self.limits, LOCAL_WORKERS_PER_CORE)
        if n < 1:
            raise ValueError(f"num_workers must be >= 1, got {n}")
        self.servers: list[ForkServer] = []
        try:
            for _ in range(n):
                self.servers.append(ForkServer(self.limits))
        except BaseException:
            self.close()
            raise
        self._free: queue.Queue[ForkServer] = queue.Queue()
        for server in self.servers:
            self._free.put(server)
        self._executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox")
        self._closed = False

    @property
    def isolation(self) -> dict:
        """What the servers actually got (see ForkServer.info)."""
        return dict(self.servers[0].info) if self.servers else {}

    @property
    def isolation_level(self) -> str:
        """e.g. "namespaces+cgroup-v1" or "userns+rlimits" (sandbox/isolation.py); every Verdict records it too."""
        return ",".join(sorted({server.isolation_level for server in self.servers}))

    def _one(self, job: tuple[Problem, str], use_grading_tests: bool) -> Verdict:
        server = self._free.get()
        try:
            return run_job(server, job[0], job[1], use_grading_tests)
        finally:
            self._free.put(server)

    def run(self, jobs: list[tuple[Problem, str]], use_grading_tests: bool = False, progress=None) -> list[Verdict]:
        """Grade all jobs. ``progress(done, total)`` is called from worker threads after each verdict."""
        if self._closed:
            raise RuntimeError("LocalSandboxPool is closed")
        total, done, lock = len(jobs), [0], threading.Lock()

        def task(job):
            verdict = self._one(job, use_grading_tests)
            if progress is not None:
                with lock:
                    done[0] += 1
                    progress(done[0], total)
            return verdict

        return list(self._executor.map(task, jobs))

    def close(self) -> None:
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=True)
        for server in self.servers:
            server.close()
        self.servers = []
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_shared: dict = {}
_shared_lock = threading.Lock()


def run_program(problem: Problem, program: str, *, limits: SandboxConfig | None = None,
                use_grading_tests: bool = False) -> Verdict:
    """Grade one program on a module-level fork-server (started on first use, one per distinct limits).

    ``program`` is the whole program as it runs (for HumanEval: ``problem.program_prefix + completion``); error
    lines in the verdict count from its first line."""
    limits = limits or SandboxConfig()
    key = repr(limits)
    with _shared_lock:
        server = _shared.get(key)
        if server is None:
            server = _shared[key] = ForkServer(limits)
            if len(_shared) == 1:
                atexit.register(_close_shared)
    return run_job(server, problem, program, use_grading_tests)


def _close_shared() -> None:
    with _shared_lock:
        for server in _shared.values():
            server.close()
        _shared.clear()
