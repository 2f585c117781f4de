"""The controller: builds the actor graph from the config, drives the learner, keeps the samplers alive.

    problems ─> Sampler actors ─programs─> sandbox workers ─verdicts─> rewards ─trajectories─> OnlineBuffer
                    ^                                                                              │
                    └──── WeightStore (version v) <── publish every K steps ── LearnerRank x R <───┘

Everything here is a named actor in the run's Ray namespace (`ray list actors` shows the roles). The controller
is itself an async actor: its `run` is the learner loop, while `status` and `scale` answer at any time.
Data between the parts moves by actor calls and the object store, never through files; files are for
durability only (checkpoints, the buffer's log) and for people (metrics, plots).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import ray

from actors.buffer import OnlineBuffer
from actors.run_log import RunLog
from actors.sampler import Sampler
from cluster.metrics import RunMetrics
from configs import save_config
from configs.schema import Config
from learner import make_weight_sync
from learner.rank import LearnerRank
from learner.weight_sync import WeightStore, WeightSyncError

log = logging.getLogger(__name__)


class LearnerDied(RuntimeError):
    """A learner rank process ended; the run cannot go on without it."""


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*"))


class Controller:
    def __init__(self, cfg: Config, run_dir: str, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.ns = cfg.run.namespace
        self.samplers: dict[str, Any] = {}  # name -> actor handle
        self.sampler_runs: dict[str, Any] = {}  # name -> ObjectRef of its `run`
        self.next_sampler = 0
        self.target_samplers = cfg.sampler.num_samplers  # `scale` before RL starts only changes this
        self.pool_generation = 0
        self.step = 0
        self.version = 0
        self.phase = "starting"
        self.progress_: dict[str, Any] = {}
        self.restarts = 0
        self.started = self.train_started = self.last_checkpoint = time.time()
        self.offline_filled = False  # offline ablation: the fixed buffer is full and the samplers are gone
        self.metrics = RunMetrics(cfg.run.name, "controller")

    # --- building the graph --------------------------------------------------------------------------------
    def _name(self, role: str) -> str:
        return f"{self.cfg.run.name}:{role}"

    async def _build(self) -> None:
        from sandbox.pool import RaySandboxPool, create_sandbox_workers
        from tasks import load_problems

        cfg = self.cfg
        self.problems = load_problems(cfg.data.source, fmt=cfg.data.format, split=cfg.data.split, limit=cfg.data.limit)
        self.problems_ref = ray.put(self.problems)
        self.store = ray.remote(WeightStore).options(name=self._name("weights"), num_cpus=0).remote()
        self.sync = make_weight_sync(cfg.weights.transport, self.store)
        self.buffer = ray.remote(OnlineBuffer).options(
            # Killed, it restarts from its snapshot and log; calls made meanwhile are retried, not lost.
            name=self._name("buffer"), num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=64,
        ).remote(cfg.buffer, str(self.run_dir / "buffer"), cfg.run.seed)
        workers = create_sandbox_workers(cfg.sandbox.num_workers, cfg.sandbox, name_prefix=self._name("sandbox-"),
                                         namespace=self.ns, num_cpus=cfg.sandbox.num_cpus)
        self.pool = RaySandboxPool(workers, cfg.sandbox, name_prefix=self._name("sandbox-"), namespace=self.ns,
                                   num_cpus=cfg.sandbox.num_cpus)
        world = cfg.learner.num_ranks
        rank_cls = ray.remote(LearnerRank)
        self.ranks = [
            rank_cls.options(name=self._name(f"learner-{r}"), num_cpus=cfg.learner.num_cpus,
                             num_gpus=cfg.learner.num_gpus, resources=cfg.learner.resources).remote(cfg, r, world)
            for r in range(world)
        ]
        addr, port = await self.ranks[0].rendezvous_address.remote()
        infos = await asyncio.gather(*[r.setup.remote(addr, port, self.problems_ref) for r in self.ranks])
        self.log.write({"kind": "setup", "problems": len(self.problems), **infos[0]})

    def _add_sampler(self) -> str:
        cfg = self.cfg
        name = self._name(f"sampler-{self.next_sampler}")
        self.next_sampler += 1
        actor = ray.remote(Sampler).options(
            name=name, num_cpus=cfg.sampler.num_cpus, num_gpus=cfg.sampler.num_gpus, resources=cfg.sampler.resources,
            max_restarts=-1, max_concurrency=8,
        ).remote(cfg, name, self.problems_ref, self.buffer, self.pool, self.sync)
        self.samplers[name] = actor
        self.sampler_runs[name] = actor.run.remote()
        return name

    async def _remove_sampler(self, name: str, wait: bool = True) -> dict[str, Any]:
        """End a sampler. ``wait``: let it finish and push its in-flight batch first; otherwise end it at once
        (its batch in flight is lost)."""
        actor = self.samplers.pop(name)
        run_ref = self.sampler_runs.pop(name)
        status: dict[str, Any] = {}
        if wait:
            try:
                await actor.stop.remote()
                if run_ref is not None:
                    status = await run_ref
            except ray.exceptions.RayError:
                pass  # it died on its way out: nothing of it was accepted after its last acknowledged put
        ray.kill(actor, no_restart=True)
        return status

    async def _watch_samplers(self) -> None:
        """A sampler whose `run` ended with an error died, and Ray restarts its actor (``max_restarts``): once
        the new process answers, start its loop again."""
        for name, ref in list(self.sampler_runs.items()):
            if ref is not None:
                ready, _ = ray.wait([ref], timeout=0)
                if not ready:
                    continue
                try:
                    await ref
                    continue  # it returned by itself (stopped): nothing to restart
                except ray.exceptions.RayError as exc:
                    self.restarts += 1
                    log.warning("sampler %s died (%s); restarting its loop", name, type(exc).__name__)
                    self.log.write({"kind": "event", "event": "sampler_restart", "sampler": name})
                    self.sampler_runs[name] = None
            actor = self.samplers[name]
            try:  # is the restarted process up yet? (it loads the model in its constructor)
                await asyncio.wait_for(actor.status.remote(), timeout=1.0)
                # Its constructor got the sandbox pool of its first creation: hand it the current one.
                await actor.set_sandbox_pool.remote(self.pool, self.pool_generation)
            except (asyncio.TimeoutError, ray.exceptions.RayError):
                continue
            self.sampler_runs[name] = actor.run.remote()
            await self._membership_changed()  # its new process is not in the broadcast group yet

    # --- checkpoints ----------------------------------------------------------------------------------------
    async def _checkpoint(self) -> Path:
        directory = self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        self.last_checkpoint = time.time()
        state = {"step": self.step, "version": self.version, "phase": self.phase,
                 "train_s": round(self.last_checkpoint - self.train_started, 2)}
        await asyncio.gather(*[r.save_checkpoint.remote(str(directory), state) for r in self.ranks])
        await self.buffer.snapshot.remote(str(directory))
        (directory / "state.json").write_text(json.dumps(state))
        self.log.write({"kind": "event", "event": "checkpoint", "step": self.step, "path": str(directory)})
        return directory

    async def _restore(self) -> None:
        found = checkpoint_dirs(self.run_dir)
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint under {self.run_dir / 'checkpoints'}")
        latest = found[-1]
        await asyncio.gather(*[r.load_checkpoint.remote(str(latest)) for r in self.ranks])
        state = json.loads((latest / "state.json").read_text())
        self.step, self.version = state["step"], state["version"]
        # The buffer actor restored itself from the run's buffer/ (snapshot + log): record what it holds.
        seqs = await self.buffer.sequence_numbers.remote()
        self.log.write({"kind": "event", "event": "resumed", "step": self.step, "path": str(latest),
                        "buffer_size": len(seqs), "buffer_seq_sum": sum(seqs),
                        "buffer_accepted": (await self.buffer.stats.remote())["accepted"]})

    # --- the learner loop -----------------------------------------------------------------------------------
    async def _publish(self) -> None:
        try:
            info = await self.sync.publish(self.ranks[0], self.version + 1)
        except WeightSyncError:
            # A sampler of the broadcast group died or left: regroup the live ones and push again.
            self.log.write({"kind": "event", "event": "weight_group_failed", "step": self.step})
            await self._membership_changed()
            return
        if info is None:
            return
        self.version += 1
        self.log.write({"kind": "event", "event": "publish", "step": self.step, **info})

    async def _membership_changed(self) -> None:
        """Samplers came or went: the weight-sync strategy re-forms its members (the collective one a new group,
        then the current weights go out over it, so newcomers get them at once)."""
        group = await self.sync.set_members(self.ranks[0], list(self.samplers.values()))
        if group is not None:
            self.log.write({"kind": "event", "event": "weight_group", **group})
            await self._publish()

    async def _learner_step(self, shards: Optional[list]) -> dict[str, Any]:
        shards = shards or [None] * len(self.ranks)
        try:
            results = await asyncio.gather(*[r.train_step.remote(s) for r, s in zip(self.ranks, shards)])
        except ray.exceptions.RayActorError as exc:
            # A learner rank cannot be restarted in place (its peers hold a torch.distributed group with it):
            # end the run with a clear message; `train --resume` continues from the last checkpoint.
            raise LearnerDied(f"a learner rank died at step {self.step} ({type(exc).__name__}); the run stops. "
                              f"Continue with: python launch.py train --resume {self.run_dir}") from None
        self.step = results[0]["step"]
        self.metrics.record("rltf_learner_step_seconds", max(r["step_s"] for r in results), role="learner")
        return results[0]

    def _out_of_time(self) -> bool:
        limit = self.cfg.run.max_wall_s
        if limit and time.time() - self.train_started > limit:
            self.log.write({"kind": "event", "event": "max_wall_s reached", "step": self.step})
            return True
        return False

    async def _maybe_checkpoint(self, steps_done: int) -> None:
        learner = self.cfg.learner
        by_steps = learner.checkpoint_every and steps_done % learner.checkpoint_every == 0
        by_time = learner.checkpoint_every_s and time.time() - self.last_checkpoint >= learner.checkpoint_every_s
        if by_steps or by_time:
            await self._checkpoint()

    async def _end_offline_sampling(self) -> None:
        """Offline ablation: once the starting policy's samples fill the buffer, the samplers stop for good."""
        accepted = (await self.buffer.stats.remote())["accepted"]
        if accepted >= self.cfg.buffer.capacity:
            # End them at once: a sampler held by back-pressure would only finish its batch after the learner
            # reads, and the learner waits here. Its batch in flight is not needed.
            self.target_samplers = 0
            for name in list(self.samplers):
                await self._remove_sampler(name, wait=False)
            self.offline_filled = True
            self.log.write({"kind": "event", "event": "offline_buffer_filled", "step": self.step, "accepted": accepted})

    async def _start_phase(self) -> None:
        if not self.cfg.learner.rl:
            self.phase = "supervised"  # the control arm: no samplers, supervised steps only
            return
        # Samplers wait for the first published version before they generate anything. (With the collective
        # transport, creating them forms the first broadcast group, which publishes.)
        self.phase = "rl"
        version = self.version
        await self._apply_sampler_target()
        if self.version == version:  # the membership change did not publish
            await self._publish()

    async def _rl_step(self) -> Optional[dict[str, Any]]:
        """One optimizer step on a batch from the buffer (then publish); None while the buffer has no batch."""
        cfg = self.cfg.learner
        await self._watch_samplers()
        if not cfg.online and not self.offline_filled:
            await self._end_offline_sampling()
        shards = await self.buffer.sample.remote(cfg.batch_size * cfg.grad_accum, len(self.ranks))
        if shards is None:
            return None
        metrics = await self._learner_step(shards)
        batch = [t for shard in shards for t in shard]
        record = {
            "kind": "learner", "step": self.step, "version": self.version,
            "batch_pass_rate": sum(t.outcome == "passed" for t in batch) / len(batch),
            "batch_mean_reward": sum(t.reward for t in batch) / len(batch),
            "batch_staleness": sum(self.version - t.policy_version for t in batch) / len(batch),
            **metrics,
        }
        if cfg.online and (self.step - cfg.warm_start_steps) % cfg.publish_every == 0:
            await self._publish()
        return record

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.log = RunLog(self.run_dir)
        save_config(cfg, self.run_dir / "config.yaml")
        self.phase = "building"
        await self._build()
        if self.resume:
            await self._restore()
        self.train_started = self.last_checkpoint = time.time()  # `max_wall_s` counts training, not start-up
        ws = cfg.learner.warm_start_steps
        if self.step < ws:
            self.phase = "warm_start"
            while self.step < ws and not self._out_of_time():
                metrics = await self._learner_step(None)
                self.progress_ = {"phase": self.phase, **metrics}
                if self.step % 10 == 0 or self.step == ws:
                    self.log.write({"kind": "warm_start", **metrics})
        total = ws + cfg.learner.total_steps
        if self.step < total:
            await self._start_phase()
        last_tick = 0.0
        while self.step < total and not self._out_of_time():
            if cfg.learner.rl:
                record = await self._rl_step()
                if record is None:  # the buffer cannot give a batch yet
                    await asyncio.sleep(0.2)
                    if time.time() - last_tick > cfg.run.log_every_s:
                        last_tick = time.time()
                        await self._tick({})
                    continue
            else:
                metrics = await self._learner_step(None)
                record = {"kind": "learner", "step": self.step, **metrics}
                self.progress_ = {"phase": self.phase, **metrics}
            await self._maybe_checkpoint(self.step - ws)
            if cfg.learner.rl and (time.time() - last_tick > cfg.run.log_every_s or self.step == total):
                last_tick = time.time()
                record.update(await self._tick(record))
            self.log.write(record)
        return await self._finish()

    async def _sampler_statuses(self, timeout: float = 2.0) -> list[dict[str, Any]]:
        """Statuses of the samplers that answer in time. A sampler still waiting for resources (scaled up past
        what the cluster has) or restarting does not answer; it must not stall the learner loop."""
        if not self.samplers:
            return []
        tasks = [asyncio.ensure_future(a.status.remote()) for a in self.samplers.values()]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        return [t.result() for t in done if t.exception() is None]

    async def _tick(self, record: dict[str, Any]) -> dict[str, Any]:
        """Gather sampler and buffer statistics into the progress line."""
        statuses = await self._sampler_statuses()
        buffer = await self.buffer.stats.remote(self.version)
        samples = sum(s.samples for s in statuses)
        elapsed = time.time() - self.started
        progress = {
            "phase": self.phase, "step": self.step, "version": self.version, "elapsed_s": round(elapsed, 1),
            "samples": samples, "samples_per_s": samples / max(elapsed, 1e-9),
            "pass_rate": sum(s.passed for s in statuses) / max(samples, 1),
            "mean_reward": sum(s.reward_sum for s in statuses) / max(samples, 1),
            "buffer_size": buffer["size"], "buffer_capacity": buffer["capacity"], "buffer_unread": buffer["unread"],
            "policy_lag": buffer["staleness_mean"],
            "sampler_versions": {s.sampler_id: s.policy_version for s in statuses},
            "weight_sync_s": max((s.weight_sync_s[-1] for s in statuses if s.weight_sync_s), default=None),
            "loss": record.get("loss_rl"), "sampler_restarts": self.restarts,
        }
        self.progress_ = progress
        m = self.metrics
        m.record("rltf_pass_rate", progress["pass_rate"])
        m.record("rltf_mean_reward", progress["mean_reward"])
        m.record("rltf_buffer_size", buffer["size"], role="buffer")
        m.record("rltf_buffer_unread", buffer["unread"], role="buffer")
        m.record("rltf_buffer_staleness", buffer["staleness_mean"], role="buffer")
        m.record("rltf_learner_step", self.step, role="learner")
        m.record("rltf_learner_loss", record.get("loss_rl"), role="learner")
        m.record("rltf_actors", len(statuses), role="sampler")
        return progress

    async def _finish(self) -> dict[str, Any]:
        self.phase = "finishing"
        final = await self._tick({})
        # Stop the samplers, then close the buffer: a sampler blocked by back-pressure on its last batch is
        # released (that batch is not accepted) instead of waiting for a learner that has stopped reading.
        await asyncio.gather(*[a.stop.remote() for a in self.samplers.values()], return_exceptions=True)
        await self.buffer.close.remote()
        for name in list(self.samplers):
            await self._remove_sampler(name)
        seqs = await self.buffer.sequence_numbers.remote()
        self.log.write({"kind": "event", "event": "buffer_closed", "buffer_size": len(seqs),
                        "buffer_seq_sum": sum(seqs), "buffer_accepted": (await self.buffer.stats.remote())["accepted"]})
        found = checkpoint_dirs(self.run_dir)
        checkpoint = found[-1] if found and found[-1].name == f"step_{self.step:06d}" else await self._checkpoint()
        self.log.close()
        plots = self.log.plot()
        self.phase = "done"
        summary = {**final, "phase": "done", "checkpoint": str(checkpoint), "model_dir": str(checkpoint / "hf"),
                   "plots": [str(p) for p in plots], "run_dir": str(self.run_dir)}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def teardown(self) -> None:
        """End every actor of this run (after `run`), so that another run can use the cluster's CPUs."""
        for handle in [*self.samplers.values(), *self.ranks, *self.pool.handles, self.buffer, self.store]:
            ray.kill(handle, no_restart=True)
        self.samplers.clear()

    # --- live control ---------------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        return {**self.progress_, "phase": self.phase}

    async def _scale_sandbox(self, n: int) -> None:
        """Resize the sandbox pool. Samplers switch to the new pool between batches; workers being removed are
        ended only once every sampler has switched, so no batch loses its worker mid-grading."""
        from sandbox.pool import RaySandboxPool, create_sandbox_workers

        if n < 1:
            raise ValueError("at least one sandbox worker is needed")
        handles = list(self.pool.handles)
        prefix = self._name("sandbox-")
        if n > len(handles):
            handles += create_sandbox_workers(n - len(handles), self.cfg.sandbox,
                                              name_prefix=f"{prefix}g{self.pool_generation + 1}-",
                                              namespace=self.ns, num_cpus=self.cfg.sandbox.num_cpus)
        removed, handles = handles[n:], handles[:n]
        self.pool_generation += 1
        switching = set(self.samplers)  # samplers created from now on start with the new pool
        self.pool = RaySandboxPool(handles, self.cfg.sandbox, name_prefix=prefix, namespace=self.ns,
                                   num_cpus=self.cfg.sandbox.num_cpus)
        await asyncio.gather(*[a.set_sandbox_pool.remote(self.pool, self.pool_generation)
                               for a in self.samplers.values()], return_exceptions=True)
        deadline = time.time() + 120
        while removed and time.time() < deadline:
            statuses = await self._sampler_statuses()
            if all(st.pool_generation >= self.pool_generation
                   for st in statuses if st.sampler_id in switching):
                break
            await asyncio.sleep(0.5)
        for handle in removed:
            ray.kill(handle, no_restart=True)

    async def _apply_sampler_target(self) -> None:
        before = set(self.samplers)
        while len(self.samplers) < self.target_samplers:
            self._add_sampler()
        while len(self.samplers) > self.target_samplers:
            await self._remove_sampler(list(self.samplers)[-1])  # the newest first
        if set(self.samplers) != before:
            await self._membership_changed()

    async def status(self) -> dict[str, Any]:
        """Live state for `launch.py status`: recomputed now, not the last progress line."""
        progress = await self._tick({}) if self.phase in ("rl", "finishing") else dict(self.progress_)
        buffer = await self.buffer.stats.remote(self.version) if hasattr(self, "buffer") else {
            "size": 0, "capacity": self.cfg.buffer.capacity, "unread": 0, "staleness_mean": 0.0}
        return {
            **progress, "run": self.cfg.run.name, "phase": self.phase, "step": self.step, "version": self.version,
            "actors": {"controller": 1, "learner": len(getattr(self, "ranks", [])), "sampler": len(self.samplers),
                       "sandbox": len(self.pool.handles) if hasattr(self, "pool") else 0, "buffer": 1, "weights": 1},
            "buffer": buffer,
        }

    async def scale(self, num_samplers: Optional[int] = None, num_sandbox_workers: Optional[int] = None) -> dict[str, Any]:
        for name, value in (("samplers", num_samplers), ("sandbox workers", num_sandbox_workers)):
            if value is not None and value < 0:
                raise ValueError(f"the number of {name} must be >= 0, got {value}")
        if num_sandbox_workers is not None:
            await self._scale_sandbox(num_sandbox_workers)
        if num_samplers is not None:
            self.target_samplers = num_samplers
            # Not before RL (no weights worth sampling from yet), nor once an offline run's buffer is full.
            if self.phase == "rl" and not self.offline_filled:
                await self._apply_sampler_target()
        self.log.write({"kind": "event", "event": "scale", "samplers": len(self.samplers),
                        "sandbox_workers": len(self.pool.handles)})
        return {"samplers": sorted(self.samplers), "target_samplers": self.target_samplers,
                "sandbox_workers": len(self.pool.handles), "phase": self.phase}
