"""Where the learner's batches come from: one object, chosen once per run from ``learner.rl`` / ``learner.online``.

    OnlineSource       samplers run the whole time; each step reads a batch from the online buffer and every
                       ``publish_every`` steps the new weights go to the samplers (RLTF)
    OfflineSource      the samplers fill the buffer once from the starting policy and stop; the learner then
                       trains on that fixed buffer (the offline ablation)
    SupervisedSource   no samplers: every micro-step is a supervised one (the supervised-only control)

A source talks to the run through the small `Run` interface (the `Controller` implements it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from actors.fleet import Fleet
from configs.schema import Config
from rewards.trajectory import Trajectory
from train.run_log import RunLog
from train.status import Phase


class Run(Protocol):
    cfg: Config
    step: int
    fleet: Fleet
    buffer: Any  # the OnlineBuffer actor
    log: RunLog

    async def start_sampling(self) -> None: ...

    async def publish(self) -> None: ...


@dataclass
class LearnerBatch:
    shards: Optional[list[list[Trajectory]]]  # one shard per learner rank; None: supervised micro-steps only

    def stats(self, version: int) -> dict[str, float]:
        """What the run's log records about the batch (nothing for a supervised-only step)."""
        if self.shards is None:
            return {}
        batch = [t for shard in self.shards for t in shard]
        return {"version": version,
                "batch_pass_rate": sum(t.outcome == "passed" for t in batch) / len(batch),
                "batch_mean_reward": sum(t.reward for t in batch) / len(batch),
                "batch_staleness": sum(version - t.policy_version for t in batch) / len(batch)}


class BatchSource:
    phase: Phase  # the run's phase while this source feeds the learner

    def __init__(self, run: Run) -> None:
        self.run = run

    @property
    def samples(self) -> bool:
        """Whether samplers run now (and `scale` may add some)."""
        return True

    async def start(self) -> None:
        """Before the first step after the warm start, and again after the learner group was restarted."""

    async def next_batch(self) -> Optional[LearnerBatch]:
        """The next step's batch; None while there is none yet."""
        raise NotImplementedError

    async def after_step(self, step: int) -> None:
        """After each optimizer step."""


class SupervisedSource(BatchSource):
    phase = Phase.SUPERVISED

    @property
    def samples(self) -> bool:
        return False

    async def next_batch(self) -> Optional[LearnerBatch]:
        return LearnerBatch(None)


class OnlineSource(BatchSource):
    phase = Phase.RL

    async def start(self) -> None:
        # After a learner restart too: its new rank 0 publishes the restored weights, so samplers run them.
        await self.run.start_sampling()

    async def next_batch(self) -> Optional[LearnerBatch]:
        """A batch from the buffer; None while it cannot give one (below min_fill)."""
        learner = self.run.cfg.learner
        await self.run.fleet.restart_dead()
        if self.run.fleet.stalled:  # every sampler is gone (a lost node): wait for one rather than train on stale data
            return None
        shards = await self.run.buffer.sample.remote(learner.batch_size * learner.grad_accum, learner.num_ranks)
        return None if shards is None else LearnerBatch(shards)

    async def after_step(self, step: int) -> None:
        learner = self.run.cfg.learner
        if (step - learner.warm_start_steps) % learner.publish_every == 0:
            await self.run.publish()


class OfflineSource(OnlineSource):
    def __init__(self, run: Run) -> None:
        super().__init__(run)
        self.filled = False  # the fixed buffer is full and the samplers are gone
        self.started = False

    @property
    def samples(self) -> bool:
        return not self.filled

    async def start(self) -> None:
        if not self.started:  # once: only the starting policy is published, not the weights of a learner restart
            self.started = True
            await super().start()

    async def next_batch(self) -> Optional[LearnerBatch]:
        if not self.filled:
            accepted = (await self.run.buffer.stats.remote()).accepted
            if accepted >= self.run.cfg.buffer.capacity:
                await self.run.fleet.retire_samplers()
                self.filled = True
                self.run.log.write({"kind": "event", "event": "offline_buffer_filled", "step": self.run.step,
                                    "accepted": accepted})
        return await super().next_batch()

    async def after_step(self, step: int) -> None:
        pass  # only the starting policy is ever published


def make_source(run: Run) -> BatchSource:
    learner = run.cfg.learner
    if not learner.rl:
        return SupervisedSource(run)
    return OnlineSource(run) if learner.online else OfflineSource(run)
