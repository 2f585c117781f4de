"""The sandbox in Ray: worker actors (each owns one fork-server) and a dispatcher that spreads jobs over them.

This module imports Ray; `sandbox/__init__` does not import it, so the rest of the sandbox stays Ray-free.
A worker actor that dies (its process killed, its node lost) is replaced and its unfinished jobs are retried
once on the replacement; if that fails too, those jobs get ``infra_error`` verdicts, never a program failure.
A worker that cannot isolate programs (`SandboxUnavailable` in its constructor) is not retried: the pool raises
that error, with its explanation, to the caller, so a run stops instead of grading without isolation.
"""
from __future__ import annotations

import logging

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from cluster.dispatch import dispatch
from configs.schema import SandboxConfig
from sandbox.isolation import SandboxUnavailable
from sandbox.local_pool import default_num_workers, detach_grader_process, infra_error, run_job
from sandbox.verdict import Verdict
from tasks.problem import Problem

log = logging.getLogger(__name__)
_DEAD_ACTOR_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError)


class SandboxWorker:
    """One fork-server per actor; ``run_batch`` grades jobs one after another on it."""

    def __init__(self, limits: SandboxConfig | None = None):
        from sandbox.forkserver import ForkServer

        detach_grader_process()  # this actor's process does nothing but grade
        self.server = ForkServer(limits or SandboxConfig())

    def run_batch(self, jobs: list[tuple[Problem, str]], use_grading_tests: bool = False) -> list[Verdict]:
        return [run_job(self.server, problem, program, use_grading_tests) for problem, program in jobs]

    def info(self) -> dict:
        """The isolation this worker got (ForkServer.info) and its process id, for tests and the dashboard."""
        import os

        return {**self.server.info, "actor_pid": os.getpid()}


def _unavailable(exc: Exception) -> SandboxUnavailable | None:
    """The worker's own SandboxUnavailable when ``exc`` says its constructor raised one."""
    message = str(getattr(exc, "error_msg", "") or exc)
    marker = "SandboxUnavailable: "
    if getattr(exc, "actor_init_failed", False) and marker in message:
        return SandboxUnavailable(message[message.rindex(marker) + len(marker):].strip())
    return None


def create_sandbox_workers(n: int, limits: SandboxConfig | None = None, name_prefix: str | None = None,
                           namespace: str | None = None, num_cpus: float = 0.0, resources: dict | None = None,
                           wait: bool = True) -> list:
    """Start ``n`` worker actors (0: one per core). With ``name_prefix`` they are named ``<prefix><index>`` (in
    ``namespace``) so other processes can look them up. ``num_cpus`` is the Ray resource each reserves: 0 by
    default, because the workers mostly wait on their children and the samplers that call them are idle
    meanwhile; reserve cores on clusters where the sandbox should be spread out. ``wait``: return once every
    worker has its fork-server; SandboxUnavailable (with the worker's explanation) when one cannot isolate
    programs, so that a run stops before it grades anything."""
    limits = limits or SandboxConfig()
    n = n or default_num_workers(limits)
    handles = [_create_one(limits, f"{name_prefix}{i}" if name_prefix else None, namespace, num_cpus, resources)
               for i in range(n)]
    if wait:
        try:
            ray.get([h.info.remote() for h in handles])
        except _DEAD_ACTOR_ERRORS as exc:
            for handle in handles:
                ray.kill(handle, no_restart=True)
            raise _unavailable(exc) or exc
    return handles


def _create_one(limits: SandboxConfig, name: str | None, namespace: str | None, num_cpus: float,
                resources: dict | None = None):
    # ``resources``: custom Ray resources (sandbox.resources, e.g. {sandbox_slot: 1} on CPU sandbox nodes).
    options: dict = {"num_cpus": num_cpus, "max_concurrency": 1, "resources": dict(resources or {})}
    if name:
        options.update(name=name, namespace=namespace, get_if_exists=False)
    return ray.remote(SandboxWorker).options(**options).remote(limits)


class RaySandboxPool:
    """Dispatch jobs over worker actors: small batches, handed to whichever worker is free."""

    def __init__(self, handles: list, limits: SandboxConfig | None = None, batch_size: int = 8,
                 name_prefix: str | None = None, namespace: str | None = None, num_cpus: float = 0.0,
                 resources: dict | None = None):
        if not handles:
            raise ValueError("RaySandboxPool needs at least one worker handle")
        self.handles = list(handles)
        self.limits = limits or SandboxConfig()
        self.batch_size = max(1, batch_size)
        self._name_prefix, self._namespace, self._num_cpus = name_prefix, namespace, num_cpus
        self._resources = dict(resources or {})
        self.replaced = 0  # workers replaced after dying, for metrics

    def isolation_level(self) -> str:
        """The isolation the workers got (sandbox/isolation.py), e.g. "namespaces+cgroup-v1"; one value per
        distinct level, comma-separated. Blocks until every worker has started; raises SandboxUnavailable."""
        try:
            infos = ray.get([h.info.remote() for h in self.handles])
        except _DEAD_ACTOR_ERRORS as exc:
            raise _unavailable(exc) or exc
        return ",".join(sorted({info["level"] for info in infos}))

    def _replace(self, index: int) -> None:
        name = f"{self._name_prefix}{index}" if self._name_prefix else None
        try:
            ray.kill(self.handles[index], no_restart=True)
        except Exception:  # noqa: BLE001 - already dead is the usual case
            pass
        try:
            self.handles[index] = _create_one(self.limits, name, self._namespace, self._num_cpus, self._resources)
        except ValueError:  # the dead actor's name is not released yet
            self.handles[index] = _create_one(self.limits, f"{name}-r{self.replaced + 1}", self._namespace,
                                              self._num_cpus, self._resources)
        self.replaced += 1

    def run(self, jobs: list[tuple[Problem, str]], use_grading_tests: bool = False) -> list[Verdict]:
        """Verdicts in job order."""
        results: list[Verdict | None] = [None] * len(jobs)
        batches = [(list(range(i, min(i + self.batch_size, len(jobs)))), 1) for i in range(0, len(jobs), self.batch_size)]

        def submit(worker, batch):
            return worker.run_batch.remote([jobs[i] for i in batch[0]], use_grading_tests)

        def on_result(batch, verdicts):
            for i, verdict in zip(batch[0], verdicts):
                results[i] = verdict

        def on_error(worker: int, batch, exc: Exception):
            # A failed batch is an infrastructure failure, never a verdict: retried once, then infra_error; a worker
            # that cannot isolate programs ends the run with its explanation.
            unavailable = _unavailable(exc)
            if unavailable is not None:
                raise unavailable from None
            if isinstance(exc, _DEAD_ACTOR_ERRORS):
                log.warning("sandbox worker %d died (%s); replacing it", worker, type(exc).__name__)
                self._replace(worker)
            else:
                log.error("sandbox batch failed on worker %d: %s", worker, exc)
            indices, attempt = batch
            if attempt == 1:
                return indices, 2
            for i in indices:
                results[i] = infra_error(jobs[i][0], f"sandbox batch failed twice: {type(exc).__name__}")
            return None

        dispatch(self.handles, batches, submit, on_result, on_error)
        return results  # type: ignore[return-value]
