"""Moving policy weights from the learner to the samplers, behind one small interface.

    sender.publish(version, state_dict)          # learner rank 0, every K optimizer steps
    receiver.latest() -> PublishedWeights | None  # sampler, between generation batches (cheap)
    receiver.fetch()  -> (PublishedWeights, state_dict)

`ObjectStoreTransport` (the default, works everywhere): rank 0 `ray.put`s the tensors once and hands the
reference to a small named `WeightStore` actor; each sampler pulls the tensors straight from the object store.
Only the newest version is kept, so old weights are freed as soon as no sampler holds them.

`learner.collective.CollectiveTransport` (for NCCL clusters): a torch.distributed broadcast of ONE flat byte buffer
from learner rank 0 to the samplers, in a process group of its own. The WeightStore then holds only metadata: the
version, the group it goes over and the tensor layout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Protocol


@dataclass
class PublishedWeights:
    """What a weight transport announces: a version and when the learner pushed it."""

    version: int
    pushed_at: float
    step: int = 0


class WeightSender(Protocol):
    def publish(self, version: int, state_dict: dict[str, Any], step: int = 0) -> PublishedWeights: ...


class WeightReceiver(Protocol):
    def latest(self) -> Optional[PublishedWeights]: ...

    def fetch(self) -> tuple[PublishedWeights, dict[str, Any]]: ...


class WeightStore:
    """Ray actor: the newest published version and an object reference to its tensors.

    The reference travels wrapped in a list so that Ray hands it over as a reference, never resolving (copying)
    the tensors into this actor.
    """

    def __init__(self) -> None:
        self._info: Optional[PublishedWeights] = None
        self._ref: list[Any] = []
        self._running: dict[str, tuple[int, float]] = {}  # sampler -> (version, seconds from push to running)
        self._addresses: dict[str, tuple[str, int]] = {}  # collective group name -> rank 0's TCPStore host, port

    def set(self, info: PublishedWeights, ref: list[Any]) -> None:
        if self._info is not None and info.version <= self._info.version:
            raise ValueError(f"weight version {info.version} is not newer than {self._info.version}")
        self._info, self._ref = info, ref

    def latest(self) -> Optional[PublishedWeights]:
        return self._info

    def get(self) -> tuple[Optional[PublishedWeights], list[Any]]:
        return self._info, self._ref

    def report_running(self, sampler_id: str, version: int, sync_s: float) -> None:
        self._running[sampler_id] = (version, sync_s)

    def forget(self, sampler_id: str) -> None:
        self._running.pop(sampler_id, None)

    def running(self) -> dict[str, tuple[int, float]]:
        return dict(self._running)

    def set_address(self, group: str, host: Optional[str] = None, port: int = 0) -> None:
        """Where rank 0 of a collective weight group listens; ``host=None`` forgets the group."""
        if host is None:
            self._addresses.pop(group, None)
        else:
            self._addresses[group] = (host, port)

    def address(self, group: str) -> Optional[tuple[str, int]]:
        return self._addresses.get(group)


class ObjectStoreTransport:
    """Sender and receiver over the Ray object store; picklable, so one instance is handed to every actor."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a WeightStore actor handle

    def publish(self, version: int, state_dict: dict[str, Any], step: int = 0) -> PublishedWeights:
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


def make_transport(kind: str, store: Any, **options: Any) -> Any:
    """The transport named by ``weights.transport``: ``object_store`` (default) or ``collective``.

    ``options`` go to `CollectiveTransport` (``timeout_s``, ``device``); the object store takes none.
    """
    if kind == "object_store":
        if options:
            raise TypeError(f"weights.transport='object_store' takes no options, got {sorted(options)}")
        return ObjectStoreTransport(store)
    if kind == "collective":
        from learner.collective import CollectiveTransport

        return CollectiveTransport(store, **options)
    raise ValueError(f"weights.transport={kind!r} is not one of 'object_store', 'collective'")
