"""The learner ranks of a run, driven in lock step from the controller: start, step, publish, checkpoint.

The ranks are one Ray placement group (all placed or none, packed onto as few nodes as possible), each with the
resources `cluster.placement` gives the learner role. Before anything touches CUDA, every rank is shown the
group's GPUs on its node and picks its own by index (its local rank), so NCCL can copy between them directly.
Ranks form a torch.distributed group that cannot take a replacement member in place, so a rank that dies ends
the group (`LearnerDied`); `train --resume` starts a new group from the last checkpoint.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Callable, Optional

import ray

from cluster.metrics import RunMetrics
from cluster.placement import PlacementError, actor_options, bundle, shared_visible_gpus
from configs.schema import Config
from learner.checkpoints import Checkpoint, CheckpointState
from learner.rank import LearnerRank


# An autoscaling cluster may need minutes to bring up GPU nodes; past this the run stops with a message.
PLACEMENT_TIMEOUT_S = 600.0


class LearnerDied(RuntimeError):
    """A learner rank process ended; the run cannot go on without it."""


class LearnerGroup:
    def __init__(self, cfg: Config, actor_name: Callable[[str], str], run_dir: str) -> None:
        self.cfg, self.actor_name, self.run_dir = cfg, actor_name, run_dir
        self.ranks: list[Any] = []
        self.placement_group: Any = None
        self.step = 0
        self.metrics = RunMetrics(cfg.run.name, "learner")

    @property
    def sender(self) -> Any:
        """The rank that publishes weights (rank 0)."""
        return self.ranks[0]

    async def place(self, timeout_s: float = PLACEMENT_TIMEOUT_S) -> list[dict[str, Any]]:
        """Reserve the ranks' resources as one placement group, create the rank actors in it, and have each take
        its GPU (`LearnerRank.take_gpu`). Returns what each rank took: node, GPU ids, local rank, device."""
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        world = self.cfg.learner.num_ranks
        request = bundle(self.cfg, "learner")
        strategies: list[Any] = [None] * world
        if request:  # a placement group needs something to reserve
            self.placement_group = placement_group([request] * world, strategy="PACK",
                                                   name=self.actor_name("learners"))
            try:
                await asyncio.wait_for(self.placement_group.ready(), timeout_s)
            except asyncio.TimeoutError:
                ray.util.remove_placement_group(self.placement_group)
                raise PlacementError(
                    f"{world} learner ranks of {request} each could not be placed within {timeout_s:.0f} s (cluster "
                    f"total: {ray.cluster_resources()}); `python launch.py plan` with this config and --address "
                    "shows where each actor would go") from None
            strategies = [PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=r)
                          for r in range(world)]
        rank_cls = ray.remote(LearnerRank)
        self.ranks = [rank_cls.options(name=self.actor_name(f"learner-{r}"), scheduling_strategy=strategies[r],
                                       **actor_options(self.cfg, "learner")).remote(self.cfg, r, world)
                      for r in range(world)]
        where = await asyncio.gather(*[r.where.remote() for r in self.ranks])
        visible = shared_visible_gpus(where)
        return list(await asyncio.gather(*[r.take_gpu.remote(v) for r, v in zip(self.ranks, visible)]))

    async def start(self, problems_ref: Any) -> dict[str, Any]:
        """Place the ranks, form their process group, load the policy and the engine on each."""
        devices = await self.place()
        addr, port = await self.sender.rendezvous_address.remote()
        infos = await asyncio.gather(*[r.setup.remote(addr, port, problems_ref) for r in self.ranks])
        return {**infos[0], "learner_devices": devices}

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

    async def save(self, checkpoint: Checkpoint, state: CheckpointState) -> list[str]:
        """Every rank writes its part; the files written (relative to the checkpoint), for `commit` to check."""
        parts = await asyncio.gather(*[r.save_checkpoint.remote(checkpoint, asdict(state)) for r in self.ranks])
        return sorted({f for files in parts for f in files})

    async def load(self, checkpoint: Checkpoint) -> None:
        await asyncio.gather(*[r.load_checkpoint.remote(checkpoint) for r in self.ranks])

    def kill(self) -> None:
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        if self.placement_group is not None:
            ray.util.remove_placement_group(self.placement_group)
            self.placement_group = None
