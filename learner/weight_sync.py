"""Moving policy weights from the learner to the samplers: one strategy object owns membership, publish and receive.

    sync = make_weight_sync("object_store", store)     # the controller, once; the same object goes to every actor
    await sync.set_members(sender, receivers)           # controller: samplers came or went (then maybe publish)
    await sync.publish(sender, version)                 # controller: learner rank 0 sends version v ...
        sync.send(version, state_dict, step)            #   ... inside learner rank 0 (`LearnerRank.publish`)
    sync.latest() / sync.fetch()                        # inside a sampler, between generation batches

`ObjectStoreSync` (the default, works everywhere): rank 0 `ray.put`s the tensors once and hands the reference to a
small named `WeightStore` actor; each sampler pulls the tensors straight from the object store. Only the newest
version is kept, so old weights are freed as soon as no sampler holds them; membership needs nothing.
`learner.collective.CollectiveSync`: a torch.distributed (gloo) broadcast of ONE flat byte buffer from learner rank 0
to the samplers, in a process group of its own that `set_members` re-forms.

A new strategy subclasses `WeightSync` and is named in `learner.WEIGHT_SYNCS` and in the Literal of
``WeightsConfig.transport``. A failed publish raises `WeightSyncError`; the controller then calls `set_members`
with the live samplers and publishes again.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional


class WeightSyncError(RuntimeError):
    """A publish or a membership change failed (a receiver died or never joined): re-form members, publish again."""


@dataclass
class PublishedWeights:
    """What a weight-sync strategy announces: a version and when the learner pushed it."""

    version: int
    pushed_at: float
    step: int = 0


class WeightStore:
    """Ray actor: the newest published version and what receivers need to get it (an object reference to its
    tensors, or a collective group's announcement), plus where collective groups' rank 0 listens.

    The payload travels wrapped in a list so that Ray hands a reference over as a reference, never resolving
    (copying) the tensors into this actor.
    """

    def __init__(self) -> None:
        self._info: Optional[PublishedWeights] = None
        self._payload: list[Any] = []
        self._addresses: dict[str, tuple[str, int]] = {}  # collective group name -> rank 0's TCPStore host, port

    def set(self, info: PublishedWeights, payload: list[Any]) -> None:
        if self._info is not None and info.version <= self._info.version:
            raise ValueError(f"weight version {info.version} is not newer than {self._info.version}")
        self._info, self._payload = info, payload

    def latest(self) -> Optional[PublishedWeights]:
        return self._info

    def get(self) -> tuple[Optional[PublishedWeights], list[Any]]:
        return self._info, self._payload

    def set_address(self, group: str, host: Optional[str] = None, port: int = 0) -> None:
        """Where rank 0 of a collective weight group listens; ``host=None`` forgets the group."""
        if host is None:
            self._addresses.pop(group, None)
        else:
            self._addresses[group] = (host, port)

    def address(self, group: str) -> Optional[tuple[str, int]]:
        return self._addresses.get(group)


class WeightSync(ABC):
    """A weight-sync strategy. Picklable: the controller holds it and hands copies to learner rank 0 and the
    samplers; what must persist across calls in a process lives in the `WeightStore` actor or that process."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a WeightStore actor handle

    # --- controller side ----------------------------------------------------------------------------------
    async def set_members(self, sender: Any, receivers: list[Any]) -> Optional[dict[str, Any]]:
        """The receivers are now ``receivers`` (sampler actors). When the current weights must be published again
        at once for them to have any, a description of the new membership (for the run's log); else None. The
        default needs no membership."""
        return None

    async def publish(self, sender: Any, version: int) -> Optional[dict[str, Any]]:
        """Have ``sender`` (learner rank 0's actor) send ``version``; its report, or None when there is nobody to
        send to (the version is then not used)."""
        return await sender.publish.remote(self, version)

    # --- sender side (inside learner rank 0) --------------------------------------------------------------
    @abstractmethod
    def send(self, version: int, state_dict: dict[str, Any], step: int = 0) -> PublishedWeights:
        """Make ``state_dict`` the published weights of ``version``."""

    # --- receiver side (inside a sampler) -----------------------------------------------------------------
    @abstractmethod
    def latest(self) -> Optional[PublishedWeights]:
        """The newest version this receiver can fetch (cheap: called between generation batches)."""

    @abstractmethod
    def fetch(self) -> tuple[PublishedWeights, dict[str, Any]]:
        """The newest version's tensors."""


class ObjectStoreSync(WeightSync):
    """Sender and receivers over the Ray object store."""

    def send(self, version: int, state_dict: dict[str, Any], step: int = 0) -> PublishedWeights:
        import ray

        # ray.put copies into the object store, so CPU tensors need no copy of their own here.
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        info = PublishedWeights(version=version, pushed_at=time.time(), step=step)
        ray.get(self.store.set.remote(info, [ray.put(tensors)]))
        return info

    def latest(self) -> Optional[PublishedWeights]:
        import ray

        return ray.get(self.store.latest.remote())

    def fetch(self) -> tuple[PublishedWeights, dict[str, Any]]:
        import ray

        info, ref = ray.get(self.store.get.remote())
        if info is None:
            raise LookupError("no weights have been published yet")
        return info, ray.get(ref[0])
