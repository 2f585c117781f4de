"""The fleet manager: it owns the run's samplers and sandbox workers, and adds, removes, restarts and scales them.

Samplers are named ``<run>:sampler-<n>`` and restarted by Ray when their process dies (``max_restarts``); the
fleet notices and starts their loop again. The sandbox pool is replaced as a whole when it is resized: samplers
take the new pool between batches, and removed workers end only once every sampler has switched. Whenever the
set of samplers changes, ``on_samplers_changed`` runs (the weight-sync strategy re-forms its members).
Where these actors run is decided here, with the Ray resources of each role from `cluster.placement` (the same
table the learner group, the eval actors and `launch.py plan` use), so placement and recovery from a lost node
have one home.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from actors.sampler import Sampler, SamplerStatus
from cluster.placement import actor_options
from configs.schema import Config
from sandbox.pool import RaySandboxPool, create_sandbox_workers

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, cfg: Config, actor_name: Callable[[str], str],
                 on_samplers_changed: Callable[[], Awaitable[None]], on_event: Callable[[dict], None]) -> None:
        self.cfg, self.actor_name = cfg, actor_name
        self.on_samplers_changed, self.on_event = on_samplers_changed, on_event
        self.samplers: dict[str, Any] = {}  # name -> actor handle
        self._runs: dict[str, Any] = {}  # name -> ObjectRef of its `run`; None while its process restarts
        self._next_index = 0
        self.target = cfg.sampler.num_samplers  # `scale` before sampling starts only changes this
        self.restarts = 0
        self.pool: Any = None  # a RaySandboxPool once `start_sandbox` ran
        self.pool_generation = 0
        self._sampler_args: tuple = ()

    # --- sandbox workers ----------------------------------------------------------------------------------
    def _sandbox_pool(self, handles: list[Any]) -> RaySandboxPool:
        sandbox = self.cfg.sandbox
        return RaySandboxPool(handles, sandbox, name_prefix=self.actor_name("sandbox-"),
                              namespace=self.cfg.run.namespace, num_cpus=sandbox.num_cpus,
                              resources=sandbox.resources)

    def _new_sandbox_workers(self, n: int, prefix: str) -> list[Any]:
        sandbox = self.cfg.sandbox
        return create_sandbox_workers(n, sandbox, name_prefix=prefix, namespace=self.cfg.run.namespace,
                                      num_cpus=sandbox.num_cpus, resources=sandbox.resources)

    def start_sandbox(self) -> None:
        self.pool = self._sandbox_pool(self._new_sandbox_workers(self.cfg.sandbox.num_workers,
                                                                 self.actor_name("sandbox-")))

    async def scale_sandbox(self, n: int) -> None:
        """Resize the sandbox pool. Samplers switch to the new pool between batches; workers being removed are
        ended only once every sampler has switched, so no batch loses its worker mid-grading."""
        if n < 1:
            raise ValueError("at least one sandbox worker is needed")
        handles = list(self.pool.handles)
        if n > len(handles):
            handles += self._new_sandbox_workers(n - len(handles),
                                                 self.actor_name(f"sandbox-g{self.pool_generation + 1}-"))
        removed, handles = handles[n:], handles[:n]
        self.pool_generation += 1
        switching = set(self.samplers)  # samplers created from now on start with the new pool
        self.pool = self._sandbox_pool(handles)
        await asyncio.gather(*[a.set_sandbox_pool.remote(self.pool, self.pool_generation)
                               for a in self.samplers.values()], return_exceptions=True)
        deadline = time.time() + 120
        while removed and time.time() < deadline:
            if all(st.pool_generation >= self.pool_generation
                   for st in await self.statuses() if st.sampler_id in switching):
                break
            await asyncio.sleep(0.5)
        for handle in removed:
            ray.kill(handle, no_restart=True)

    # --- samplers -----------------------------------------------------------------------------------------
    def supply(self, problems_ref: Any, buffer: Any, weight_sync: Any) -> None:
        """What every sampler is created with (besides the current sandbox pool)."""
        self._sampler_args = (problems_ref, buffer, weight_sync)

    def _add_sampler(self) -> None:
        name = self.actor_name(f"sampler-{self._next_index}")
        self._next_index += 1
        problems_ref, buffer, weight_sync = self._sampler_args
        actor = ray.remote(Sampler).options(
            name=name, max_restarts=-1, max_concurrency=8, **actor_options(self.cfg, "sampler"),
        ).remote(self.cfg, name, problems_ref, buffer, self.pool, weight_sync)
        self.samplers[name] = actor
        self._runs[name] = actor.run.remote()

    async def _remove_sampler(self, name: str, wait: bool = True) -> None:
        """End a sampler. ``wait``: let it finish and push its in-flight batch first; otherwise end it at once
        (its batch in flight is lost)."""
        actor, run_ref = self.samplers.pop(name), self._runs.pop(name)
        if wait:
            try:
                await actor.stop.remote()
                if run_ref is not None:
                    await run_ref
            except ray.exceptions.RayError:
                pass  # it died on its way out: nothing of it was accepted after its last acknowledged put
        ray.kill(actor, no_restart=True)

    async def apply_target(self) -> None:
        """Add or remove samplers (the newest first) until there are ``target``."""
        before = set(self.samplers)
        while len(self.samplers) < self.target:
            self._add_sampler()
        while len(self.samplers) > self.target:
            await self._remove_sampler(list(self.samplers)[-1])
        if set(self.samplers) != before:
            await self.on_samplers_changed()

    async def retire_samplers(self) -> None:
        """End every sampler at once, for good (the offline ablation's buffer is full): a sampler held by
        back-pressure would only finish its batch after the learner reads, and the learner waits on this."""
        self.target = 0
        for name in list(self.samplers):
            await self._remove_sampler(name, wait=False)

    async def stop_samplers(self, close_buffer: Callable[[], Awaitable[Any]]) -> None:
        """End every sampler after its current batch. The buffer closes in between, so a sampler blocked by
        back-pressure on its last batch is released (that batch is not accepted) instead of waiting for a learner
        that has stopped reading."""
        await asyncio.gather(*[a.stop.remote() for a in self.samplers.values()], return_exceptions=True)
        await close_buffer()
        for name in list(self.samplers):
            await self._remove_sampler(name)

    async def restart_dead(self) -> None:
        """A sampler whose `run` ended with an error died, and Ray restarts its actor: once the new process
        answers, hand it the current sandbox pool and start its loop again."""
        for name, ref in list(self._runs.items()):
            if ref is not None:
                if not ray.wait([ref], timeout=0)[0]:
                    continue
                try:
                    await ref
                    continue  # it returned by itself (stopped): nothing to restart
                except ray.exceptions.RayError as exc:
                    self.restarts += 1
                    log.warning("sampler %s died (%s); restarting its loop", name, type(exc).__name__)
                    self.on_event({"kind": "event", "event": "sampler_restart", "sampler": name})
                    self._runs[name] = None
            actor = self.samplers[name]
            try:  # is the restarted process up yet? (it loads the model in its constructor)
                await asyncio.wait_for(actor.status.remote(), timeout=1.0)
                await actor.set_sandbox_pool.remote(self.pool, self.pool_generation)
            except (asyncio.TimeoutError, ray.exceptions.RayError):
                continue
            self._runs[name] = actor.run.remote()
            await self.on_samplers_changed()  # its new process is not in the weight-sync members yet

    async def statuses(self, timeout: float = 2.0) -> list[SamplerStatus]:
        """Statuses of the samplers that answer in time. A sampler still waiting for resources (scaled up past
        what the cluster has) or restarting does not answer; it must not stall the learner loop."""
        if not self.samplers:
            return []
        tasks = [asyncio.ensure_future(a.status.remote()) for a in self.samplers.values()]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        return [t.result() for t in done if t.exception() is None]

    @property
    def sandbox_workers(self) -> int:
        return len(self.pool.handles) if self.pool is not None else 0

    def kill(self) -> None:
        for handle in [*self.samplers.values(), *(self.pool.handles if self.pool is not None else [])]:
            ray.kill(handle, no_restart=True)
        self.samplers.clear()
