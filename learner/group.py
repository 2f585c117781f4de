"""The learner ranks of a run, driven in lock step from the controller: start, step, publish, checkpoint.

The ranks are one Ray placement group (a bundle each, all placed or none, packed onto as few nodes as possible),
each with the resources `cluster.placement` gives the learner role. Before anything touches CUDA, every rank is
shown the group's GPUs on its node and picks its own by index (its local rank), so NCCL can copy between them
directly. Ranks form a torch.distributed group that cannot take a replacement member in place: a rank that dies
(its process killed, its node lost) ends the whole group, and any call on the group then raises `LearnerDied`.
The controller's recovery (`train.recovery`) then calls `stop` and `start` again and loads the last checkpoint:
the placement group stays, keeping its reservation, and Ray re-places the bundles of a lost node by itself.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any, Awaitable, Callable, Optional

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.metrics import RunMetrics
from cluster.placement import PlacementError, actor_options, bundle, shared_visible_gpus, why_unplaced
from configs.schema import Config
from learner.checkpoints import Checkpoint, CheckpointState
from learner.rank import LearnerRank

# An autoscaling cluster may need minutes to bring up GPU nodes; past this a first placement stops the run with a
# message (a restart after a lost node waits on, saying why, for the node or a replacement).
PLACEMENT_TIMEOUT_S = 600.0
_NAME_RELEASE_S = 60.0  # a killed rank's actor name is freed asynchronously


class LearnerDied(RuntimeError):
    """A learner rank process ended; the group must be started again (from the last checkpoint)."""


class LearnerGroup:
    def __init__(self, cfg: Config, actor_name: Callable[[str], str], run_dir: str) -> None:
        self.cfg, self.actor_name, self.run_dir = cfg, actor_name, run_dir
        self.ranks: list[Any] = []
        self.step = 0
        self.metrics = RunMetrics(cfg.run.name, "learner")
        self.placement: Any = None  # the ranks' placement group, created by the first `place`
        self.waiting: Optional[str] = None  # what `place` waits for, for the run's status line

    @property
    def sender(self) -> Any:
        """The rank that publishes weights (rank 0)."""
        return self.ranks[0]

    async def start(self, problems_ref: Any) -> dict[str, Any]:
        """Place the ranks, form their process group, load the policy and the engine on each. Rank 0's set-up
        report, with the devices the ranks took."""
        self.step = 0
        devices = await self.place()
        addr, port = (await self._call(self.sender.rendezvous_address.remote()))[0]
        infos = await self._call(*[r.setup.remote(addr, port, problems_ref) for r in self.ranks])
        return {**infos[0], "learner_devices": devices}

    async def place(self, timeout_s: float = PLACEMENT_TIMEOUT_S) -> list[dict[str, Any]]:
        """Reserve the ranks' resources as one placement group (once; a restart reuses it), create the rank actors
        in it, and have each take its GPU (`LearnerRank.take_gpu`). What each rank took: node, GPU ids, local
        rank, device."""
        world, request = self.cfg.learner.num_ranks, bundle(self.cfg, "learner")
        first = self.placement is None
        if first and request:  # (ranks that ask for no resources need no reservation)
            self.placement = placement_group([request] * world, strategy="PACK", name=self.actor_name("learners"))
        if self.placement is not None:
            await self._reserve(request, timeout_s if first else None)
        self.ranks = [await self._new_rank(r) for r in range(world)]
        where = await self._call(*[r.where.remote() for r in self.ranks])
        visible = shared_visible_gpus(where)
        return await self._call(*[r.take_gpu.remote(v) for r, v in zip(self.ranks, visible)])

    async def _reserve(self, request: dict[str, float], timeout_s: Optional[float]) -> None:
        """Wait until the placement group is placed (at once, unless a node is lost or the cluster is full);
        meanwhile `waiting` says why it is not. PlacementError past ``timeout_s``."""
        world, deadline = self.cfg.learner.num_ranks, None if timeout_s is None else time.time() + timeout_s
        ready = asyncio.ensure_future(self.placement.ready())
        while not (await asyncio.wait([ready], timeout=2.0))[0]:
            if deadline is not None and time.time() > deadline:
                ready.cancel()
                remove_placement_group(self.placement)
                self.placement, self.waiting = None, None
                raise PlacementError(
                    f"{world} learner ranks of {request} each could not be placed within {timeout_s:.0f} s (cluster "
                    f"total: {ray.cluster_resources()}); `python launch.py plan` with this config and --address "
                    "shows where each actor would go")
            self.waiting = (f"the learner's placement group ({world} bundle{'s' if world > 1 else ''}), "
                            f"{'each ' if world > 1 else ''}{why_unplaced(request)}")
        self.waiting = None

    async def _new_rank(self, rank: int) -> Any:
        world, name = self.cfg.learner.num_ranks, self.actor_name(f"learner-{rank}")
        strategy = (PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=rank)
                    if self.placement is not None else None)
        deadline = time.time() + _NAME_RELEASE_S
        while True:
            try:
                return ray.remote(LearnerRank).options(name=name, scheduling_strategy=strategy,
                                                       **actor_options(self.cfg, "learner")).remote(self.cfg, rank, world)
            except ValueError:  # the name of the rank this one replaces is not released yet
                if time.time() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _call(self, *refs: Any) -> list[Any]:
        """The results of calls on the ranks; `LearnerDied` when a rank's process is gone."""
        try:
            return list(await asyncio.gather(*refs))
        except ray.exceptions.RayActorError as exc:
            raise LearnerDied(f"a learner rank died at step {self.step} ({type(exc).__name__})") from None

    async def train_step(self, shards: Optional[list[list[Any]]]) -> dict[str, Any]:
        """One optimizer step on every rank: ``shards`` (one list of trajectories per rank) for an RL step, None
        for a supervised-only one. Rank 0's metrics."""
        shards = shards or [None] * len(self.ranks)
        results = await self._call(*[r.train_step.remote(s) for r, s in zip(self.ranks, shards)])
        self.step = results[0]["step"]
        self.metrics.record("rltf_learner_step_seconds", max(r["step_s"] for r in results))
        return results[0]

    async def on_sender(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        """``call(rank 0)`` (a weight-sync publish or membership change); `LearnerDied` if rank 0 is gone."""
        try:
            return await call(self.sender)
        except ray.exceptions.RayActorError:
            await self._call(self.sender.__ray_ready__.remote())  # LearnerDied if the dead actor was rank 0
            raise  # another member died (a sampler of a collective weight group)

    async def save(self, checkpoint: Checkpoint, state: CheckpointState) -> list[str]:
        """Every rank writes its part; the files written (relative to the checkpoint), for `commit` to check."""
        parts = await self._call(*[r.save_checkpoint.remote(checkpoint, asdict(state)) for r in self.ranks])
        return sorted({f for files in parts for f in files})

    async def load(self, checkpoint: Checkpoint) -> None:
        await self._call(*[r.load_checkpoint.remote(checkpoint) for r in self.ranks])
        self.step = checkpoint.state().step

    def stop(self) -> None:
        """End the ranks (a dead one ended its group); the placement group keeps their bundles reserved."""
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        self.ranks = []

    def kill(self) -> None:
        """End the ranks and release their placement group (the run is over)."""
        self.stop()
        if self.placement is not None:
            remove_placement_group(self.placement)
            self.placement = None
