"""The learner ranks of a run, driven in lock step from the controller: start, step, publish, checkpoint.

Ranks form a torch.distributed group that cannot take a replacement member in place, so a rank that dies ends
the group (`LearnerDied`); `train --resume` starts a new group from the last checkpoint.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import ray

from cluster.metrics import RunMetrics
from configs.schema import Config
from learner.checkpoints import Checkpoint, CheckpointState
from learner.rank import LearnerRank


class LearnerDied(RuntimeError):
    """A learner rank process ended; the run cannot go on without it."""


class LearnerGroup:
    def __init__(self, cfg: Config, actor_name: Callable[[str], str], run_dir: Path) -> None:
        self.cfg, self.actor_name, self.run_dir = cfg, actor_name, run_dir
        self.ranks: list[Any] = []
        self.step = 0
        self.metrics = RunMetrics(cfg.run.name, "learner")

    @property
    def sender(self) -> Any:
        """The rank that publishes weights (rank 0)."""
        return self.ranks[0]

    async def start(self, problems_ref: Any) -> dict[str, Any]:
        """Create the rank actors, form their process group, load the policy and the engine on each."""
        learner, world = self.cfg.learner, self.cfg.learner.num_ranks
        rank_cls = ray.remote(LearnerRank)
        self.ranks = [
            rank_cls.options(name=self.actor_name(f"learner-{r}"), num_cpus=learner.num_cpus,
                             num_gpus=learner.num_gpus, resources=learner.resources).remote(self.cfg, r, world)
            for r in range(world)
        ]
        addr, port = await self.sender.rendezvous_address.remote()
        infos = await asyncio.gather(*[r.setup.remote(addr, port, problems_ref) for r in self.ranks])
        return infos[0]

    async def train_step(self, shards: Optional[list[list[Any]]]) -> dict[str, Any]:
        """One optimizer step on every rank: ``shards`` (one list of trajectories per rank) for an RL step, None
        for a supervised-only one. Rank 0's metrics."""
        shards = shards or [None] * len(self.ranks)
        try:
            results = await asyncio.gather(*[r.train_step.remote(s) for r, s in zip(self.ranks, shards)])
        except ray.exceptions.RayActorError as exc:
            raise LearnerDied(f"a learner rank died at step {self.step} ({type(exc).__name__}); the run stops. "
                              f"Continue with: python launch.py train --resume {self.run_dir}") from None
        self.step = results[0]["step"]
        self.metrics.record("rltf_learner_step_seconds", max(r["step_s"] for r in results))
        return results[0]

    async def save(self, checkpoint: Checkpoint, state: CheckpointState) -> None:
        await asyncio.gather(*[r.save_checkpoint.remote(str(checkpoint.path), asdict(state)) for r in self.ranks])

    async def load(self, checkpoint: Checkpoint) -> None:
        await asyncio.gather(*[r.load_checkpoint.remote(str(checkpoint.path)) for r in self.ranks])

    def kill(self) -> None:
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
