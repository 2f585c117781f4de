"""The training core: one async Ray actor that builds the run, warm-starts the learner, runs the loop, finishes.

    problems ─> Sampler actors ─programs─> sandbox workers ─verdicts─> rewards ─trajectories─> OnlineBuffer
                    ^                                                                              │
                    └──── WeightStore (version v) <── publish every K steps ── LearnerGroup <──────┘

    run():  build  ->  restore (--resume)  ->  warm start  ->  loop (batch, step, publish, checkpoint)  ->  finish

Each switch is one object chosen when the run is built: where batches come from (`train.sources`), how weights
reach the samplers (`learner.WEIGHT_SYNCS`); the fleet of samplers and sandbox workers is `actors.fleet.Fleet`,
the learner ranks `learner.group.LearnerGroup`, the checkpoint layout `learner.checkpoints`. Every actor is named
``<run>:<role>`` in the run's Ray namespace; `status` and `scale` answer at any time while `run` loops.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any, Optional

import ray

from actors.buffer import BufferStats, OnlineBuffer
from actors.fleet import Fleet
from cluster.metrics import RunMetrics
from cluster.storage import RunStorage
from configs import save_config
from configs.schema import Config
from evaluation.heldout import HeldOutEval, load_heldout
from learner import make_weight_sync
from learner.checkpoints import BUFFER_SNAPSHOT, Checkpoint, CheckpointState, RunCheckpoints
from learner.group import LearnerGroup
from learner.weight_sync import WeightStore, WeightSyncError
from train.run_log import RunLog
from train.sources import make_source
from train.status import Phase, Progress, RunStatus, RunSummary, SamplingStats

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, cfg: Config, location: str, resume: bool = False) -> None:
        """``location``: the run's folder in its storage (a path or a URI, `cluster.storage`)."""
        self.cfg, self.location, self.resume = cfg, location, resume
        self.storage = RunStorage(location)
        self.phase = Phase.STARTING
        self.step = self.version = 0
        self.version_steps: dict[int, int] = {}  # weight version -> the learner step it was published at
        self.heldout: Optional[HeldOutEval] = None
        self.last_heldout: dict[str, Any] = {}
        self.started = self.train_started = self.last_checkpoint = time.time()
        self.progress_ = Progress(Phase.STARTING.value)
        self.log = RunLog(self.storage)
        self.metrics = RunMetrics(cfg.run.name, "controller")
        self.checkpoints = RunCheckpoints(self.storage)
        latest = self.checkpoints.latest() if resume else None
        self.store = ray.remote(WeightStore).options(name=self.actor_name("weights"), num_cpus=0).remote()
        self.weight_sync = make_weight_sync(cfg.weights.transport, self.store)
        self.buffer = ray.remote(OnlineBuffer).options(
            # Killed, it restarts from its snapshot and log; calls made meanwhile are retried, not lost.
            name=self.actor_name("buffer"), num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=64,
        ).remote(cfg.buffer, str(self.storage.local_dir() / "buffer"), cfg.run.seed,
                 latest and (latest.storage, latest.file_name(BUFFER_SNAPSHOT)))
        self.learners = LearnerGroup(cfg, self.actor_name, location)
        self.fleet = Fleet(cfg, self.actor_name, self.samplers_changed, self.log.write)
        self.source = make_source(self)

    def actor_name(self, role: str) -> str:
        return f"{self.cfg.run.name}:{role}"

    # --- the core -------------------------------------------------------------------------------------------
    async def run(self) -> RunSummary:
        await self._build()
        if self.resume:
            await self._restore()
        self.train_started = self.last_checkpoint = time.time()  # `max_wall_s` counts training, not start-up
        await self._warm_start()
        await self._loop()
        return await self._finish()

    async def _build(self) -> None:
        from tasks import load_problems

        cfg = self.cfg
        self.phase = Phase.BUILDING
        save_config(cfg, self.log.run_dir / "config.yaml")
        problems = load_problems(cfg.data.source, fmt=cfg.data.format, split=cfg.data.split, limit=cfg.data.limit,
                                 skip_invalid=cfg.data.skip_invalid)
        if cfg.eval.every_steps and cfg.learner.rl and cfg.learner.online:  # evaluated by the online samplers
            self.heldout = HeldOutEval(cfg, load_heldout(cfg), self._heldout_record,
                                       lambda version: self.version_steps.get(version, self.step))
        problems_ref = ray.put(problems)
        self.fleet.start_sandbox()
        self.fleet.supply(problems_ref, self.buffer, self.weight_sync)
        info = await self.learners.start(problems_ref)
        self.log.write({"kind": "setup", "problems": len(problems), **info})

    async def _warm_start(self) -> None:
        """Supervised steps on reference solutions, up to ``learner.warm_start_steps``."""
        steps = self.cfg.learner.warm_start_steps
        if self.step >= steps:
            return
        self.phase = Phase.WARM_START
        while self.step < steps and not self._out_of_time():
            metrics = await self._learner_step(None)
            self.progress_ = Progress(self.phase.value, self.step, self.version, learner=metrics)
            if self.step % 10 == 0 or self.step == steps:
                self.log.write({"kind": "warm_start", **metrics})

    async def _loop(self) -> None:
        learner = self.cfg.learner
        total = learner.warm_start_steps + learner.total_steps
        if self.step >= total:
            return
        self.phase = self.source.phase
        await self.source.start()
        await self._maybe_evaluate()
        last_tick = 0.0
        while self.step < total and not self._out_of_time():
            batch = await self.source.next_batch()
            if batch is None:  # the buffer cannot give a batch yet
                await asyncio.sleep(0.2)
                if time.time() - last_tick > self.cfg.run.log_every_s:
                    last_tick = time.time()
                    await self._tick()
                continue
            metrics = await self._learner_step(batch.shards)
            record = {"kind": "learner", "step": self.step, **batch.stats(self.version), **metrics}
            await self.source.after_step(self.step)
            await self._maybe_evaluate()
            await self._maybe_checkpoint(self.step - learner.warm_start_steps)
            if not self.source.samples:
                self.progress_ = Progress(self.phase.value, self.step, self.version, learner=metrics)
            elif time.time() - last_tick > self.cfg.run.log_every_s or self.step == total:
                last_tick = time.time()
                record.update((await self._tick(metrics)).flat())
            self.log.write(record)

    async def _finish(self) -> RunSummary:
        self.phase = Phase.FINISHING
        if self.heldout is not None:  # the end's evaluation, by the samplers before they stop
            await self.heldout.wait()
            await self._maybe_evaluate(final=True)
            await self.heldout.wait()
        final = await self._tick()
        await self.fleet.stop_samplers(self.buffer.close.remote)
        seqs = await self.buffer.sequence_numbers.remote()
        self.log.write({"kind": "event", "event": "buffer_closed", "buffer_size": len(seqs),
                        "buffer_seq_sum": sum(seqs), "buffer_accepted": (await self.buffer.stats.remote()).accepted})
        checkpoint = self.checkpoints.latest()
        if checkpoint is None or checkpoint.step != self.step:
            checkpoint = await self._checkpoint()
        self.log.close()
        plots = [self.storage.url(str(p.relative_to(self.log.run_dir))) for p in self.log.plot()]
        self.phase = Phase.DONE
        summary = RunSummary(dataclasses.replace(final, phase=Phase.DONE.value),
                             checkpoint.location if checkpoint else None, checkpoint.hf_location if checkpoint else None,
                             plots, self.location)
        (self.log.run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        self.log.sync()
        return summary

    # --- the parts the loop and the sources use -------------------------------------------------------------
    async def _learner_step(self, shards: Optional[list]) -> dict[str, Any]:
        metrics = await self.learners.train_step(shards)
        self.step = metrics["step"]
        return metrics

    async def start_sampling(self) -> None:
        """Start the samplers; they wait for the first published version before they generate anything."""
        version = self.version
        await self.fleet.apply_target()
        if self.version == version:  # the membership change did not publish (the object store needs none)
            await self.publish()

    async def publish(self) -> None:
        """Send the learner's current weights to the samplers as the next version."""
        try:
            info = await self.weight_sync.publish(self.learners.sender, self.version + 1)
        except WeightSyncError:
            # A receiver died or left: re-form the members from the live samplers, which publishes again.
            self.log.write({"kind": "event", "event": "weight_group_failed", "step": self.step})
            await self.samplers_changed()
            return
        if info is not None:
            self.version += 1
            self.version_steps[self.version] = self.step
            self.log.write({"kind": "event", "event": "publish", "step": self.step, **info})

    async def samplers_changed(self) -> None:
        members = await self.weight_sync.set_members(self.learners.sender, list(self.fleet.samplers.values()))
        if members is not None:  # newcomers have no weights until the current ones go out again
            self.log.write({"kind": "event", "event": "weight_group", **members})
            await self.publish()

    async def _maybe_evaluate(self, final: bool = False) -> None:
        """Start a held-out evaluation of the current weights when one is due (`evaluation.heldout`)."""
        rl_steps = self.step - self.cfg.learner.warm_start_steps
        if self.heldout is None or not self.fleet.samplers or not self.heldout.due(rl_steps, self.step, final):
            return
        if self.version_steps.get(self.version) != self.step:  # the samplers evaluate what the learner has now
            await self.publish()
        self.heldout.start(list(self.fleet.samplers.values()), rl_steps, self.step, self.version)

    def _heldout_record(self, record: dict[str, Any]) -> None:
        if record["kind"] == "eval":
            self.last_heldout = {k: v for k, v in record.items() if k == "step" or k.startswith("eval_pass@")}
        self.log.write(record)
        self.log.sync()

    def _out_of_time(self) -> bool:
        limit = self.cfg.run.max_wall_s
        if limit and time.time() - self.train_started > limit:
            self.log.write({"kind": "event", "event": "max_wall_s reached", "step": self.step})
            return True
        return False

    # --- checkpoints ----------------------------------------------------------------------------------------
    async def _maybe_checkpoint(self, steps_done: int) -> None:
        learner = self.cfg.learner
        by_steps = learner.checkpoint_every and steps_done % learner.checkpoint_every == 0
        by_time = learner.checkpoint_every_s and time.time() - self.last_checkpoint >= learner.checkpoint_every_s
        if by_steps or by_time:
            await self._checkpoint()

    async def _checkpoint(self) -> Optional[Checkpoint]:
        """Save a whole checkpoint, or report why it could not be written and keep the last good one."""
        self.last_checkpoint = time.time()
        state = CheckpointState(self.step, self.version, self.phase.value,
                                round(self.last_checkpoint - self.train_started, 2))
        checkpoint = None
        try:
            checkpoint = self.checkpoints.begin(self.step)
            parts = await self.learners.save(checkpoint, state)
            await self.buffer.snapshot.remote(checkpoint.storage, checkpoint.file_name(BUFFER_SNAPSHOT))
            checkpoint = self.checkpoints.commit(checkpoint, state, parts)
        except OSError as exc:  # CheckpointWriteError, StorageError: they name the path
            if checkpoint is not None:
                self.checkpoints.abort(checkpoint)
            kept = self.checkpoints.latest()
            log.error("checkpoint of step %d failed: %s; the last good one is %s", self.step, exc,
                      kept.location if kept else "none")
            self.log.write({"kind": "event", "event": "checkpoint_failed", "step": self.step, "error": str(exc),
                            "kept": kept.location if kept else None})
            return kept
        self.log.write({"kind": "event", "event": "checkpoint", "step": self.step, "path": checkpoint.location})
        self.log.sync()
        return checkpoint

    async def _restore(self) -> None:
        latest = self.checkpoints.latest()
        if latest is None:
            raise FileNotFoundError(f"--resume: no whole checkpoint under {self.checkpoints.root}")
        await self.learners.load(latest)
        state = latest.state()
        self.step, self.version = state.step, state.version
        # The buffer actor restored itself from the run's buffer/ (snapshot + log): record what it holds.
        seqs = await self.buffer.sequence_numbers.remote()
        self.log.write({"kind": "event", "event": "resumed", "step": self.step, "path": latest.location,
                        "buffer_size": len(seqs), "buffer_seq_sum": sum(seqs),
                        "buffer_accepted": (await self.buffer.stats.remote()).accepted})

    # --- progress, status, scale ----------------------------------------------------------------------------
    async def _tick(self, learner_metrics: Optional[dict[str, Any]] = None) -> Progress:
        """Gather sampler and buffer statistics into the progress (and the run's metrics)."""
        statuses = await self.fleet.statuses()
        buffer: BufferStats = await self.buffer.stats.remote(self.version)
        samples = sum(s.samples for s in statuses)
        elapsed = time.time() - self.started
        sampling = SamplingStats(
            samples=samples, samples_per_s=samples / max(elapsed, 1e-9),
            pass_rate=sum(s.passed for s in statuses) / max(samples, 1),
            mean_reward=sum(s.reward_sum for s in statuses) / max(samples, 1),
            buffer_size=buffer.size, buffer_capacity=buffer.capacity, buffer_unread=buffer.unread,
            policy_lag=buffer.staleness_mean, sampler_versions={s.sampler_id: s.policy_version for s in statuses},
            weight_sync_s=max((s.weight_sync_s[-1] for s in statuses if s.weight_sync_s), default=None),
            sampler_restarts=self.fleet.restarts,
        )
        self.progress_ = Progress(self.phase.value, self.step, self.version, round(elapsed, 1),
                                  learner_metrics or {}, sampling, self.last_heldout)
        m = self.metrics
        m.record("rltf_pass_rate", sampling.pass_rate)
        m.record("rltf_mean_reward", sampling.mean_reward)
        m.record("rltf_buffer_size", buffer.size, role="buffer")
        m.record("rltf_buffer_unread", buffer.unread, role="buffer")
        m.record("rltf_buffer_staleness", buffer.staleness_mean, role="buffer")
        m.record("rltf_learner_step", self.step, role="learner")
        m.record("rltf_learner_loss", (learner_metrics or {}).get("loss_rl"), role="learner")
        m.record("rltf_actors", len(statuses), role="sampler")
        return self.progress_

    def progress(self) -> Progress:
        return dataclasses.replace(self.progress_, phase=self.phase.value)

    async def status(self) -> RunStatus:
        """Live state for `launch.py status`: recomputed now, not the last progress line."""
        sampling = self.phase in (Phase.RL, Phase.FINISHING)
        progress = await self._tick() if sampling else self.progress()
        buffer = await self.buffer.stats.remote(self.version)
        actors = {"controller": 1, "learner": len(self.learners.ranks), "sampler": len(self.fleet.samplers),
                  "sandbox": self.fleet.sandbox_workers, "buffer": 1, "weights": 1}
        return RunStatus(self.cfg.run.name, progress, actors, buffer)

    async def scale(self, num_samplers: Optional[int] = None, num_sandbox_workers: Optional[int] = None) -> dict:
        for name, value in (("samplers", num_samplers), ("sandbox workers", num_sandbox_workers)):
            if value is not None and value < 0:
                raise ValueError(f"the number of {name} must be >= 0, got {value}")
        if num_sandbox_workers is not None:
            await self.fleet.scale_sandbox(num_sandbox_workers)
        if num_samplers is not None:
            self.fleet.target = num_samplers
            # Not before RL (no weights worth sampling from yet), nor once an offline run's buffer is full.
            if self.phase == Phase.RL and self.source.samples:
                await self.fleet.apply_target()
        self.log.write({"kind": "event", "event": "scale", "samplers": len(self.fleet.samplers),
                        "sandbox_workers": self.fleet.sandbox_workers})
        return {"samplers": sorted(self.fleet.samplers), "target_samplers": self.fleet.target,
                "sandbox_workers": self.fleet.sandbox_workers, "phase": self.phase.value}

    def teardown(self) -> None:
        """End every actor of this run (after `run`), so that another run can use the cluster's CPUs."""
        self.fleet.kill()
        self.learners.kill()
        for handle in (self.buffer, self.store):
            ray.kill(handle, no_restart=True)
