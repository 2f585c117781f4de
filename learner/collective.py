"""The collective weight-sync strategy: a torch.distributed broadcast from learner rank 0 to the samplers.

Each membership generation is a process group of its own (a TCPStore plus ProcessGroupGloo), never the learners'
own group. It is gloo on GPU nodes too: the sender copies its weights to the CPU as one flat buffer (one
device-to-host copy) and each sampler's `load_weights` copies them to its GPU. NCCL is refused (`NCCL_REFUSED`):
when a member dies mid-broadcast, NCCL's watchdog ends the whole process after the timeout (torch's default
``TORCH_NCCL_ASYNC_ERROR_HANDLING=3``), learner rank 0 included, where gloo raises and the group is re-formed
without the dead sampler. One publish of version v: the sender announces v and the tensor layout in the
`WeightStore` (metadata only), broadcasts a header ``[v, nbytes]``, then ONE flat byte buffer with every tensor,
then all members combine an error flag. `send` returns only after that, so version v+1 cannot start before every
receiver holds v: versions are never skipped.
Samplers join between generation batches, so a publish waits for the slowest sampler's batch; a receiver that
died fails the publish at once, one that never joins after ``timeout_s``, with `WeightGroupError`.
"""
from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from learner.weight_sync import PublishedWeights, WeightSync, WeightSyncError

# --- collective broadcast --------------------------------------------------------------------------------
_MEMBER_START_TIMEOUT_S = 300.0
BACKEND = "gloo"
NCCL_REFUSED = ("the collective weight transport does not run on NCCL: when a sampler dies mid-broadcast, NCCL's "
                "watchdog would end learner rank 0's process instead of letting the group re-form; it runs on gloo "
                "(tensors staged on the CPU), or use weights.transport=object_store")
_ALIGN = 16  # each tensor starts at a multiple of this in the flat byte buffer, so its slice can be viewed as its dtype


class WeightGroupError(WeightSyncError):
    """A collective weight group cannot be formed or used (a member died, never joined, or the group is stale)."""


@dataclass(frozen=True)
class WeightGroup:
    """One membership generation: rank 0 is the sender (learner rank 0), ranks 1.. the receivers (samplers).

    A membership change means a new group with a new ``name``; groups are never resized in place.
    """

    name: str
    world_size: int
    backend: str  # "gloo" (NCCL is refused: see the module doc)
    timeout_s: float
    host: Optional[str] = None  # where rank 0 listens; None: its node IP. 127.0.0.1 for a one-machine run.


class _Membership:
    """This process's place in one group: the process group and, on rank 0, the TCPStore it hosts."""

    def __init__(self, group: WeightGroup, rank: int, pg: Any, tcp_store: Any) -> None:
        self.group, self.rank, self.pg, self.tcp_store = group, rank, pg, tcp_store
        self.broken: Optional[str] = None  # set when a collective failed: the group must be re-formed


# Process-wide, per WeightStore: LearnerRank.publish receives a fresh (unpickled) strategy object on every call, so the
# process group cannot live in that object itself.
_MEMBERSHIPS: dict[str, _Membership] = {}
_MEMBERSHIPS_LOCK = threading.Lock()


def _check_backend(group: WeightGroup) -> None:
    if group.backend != BACKEND:
        why = NCCL_REFUSED if group.backend == "nccl" else f"backend {group.backend!r} is not {BACKEND!r}"
        raise WeightGroupError(f"weight group {group.name}: {why}")


def _new_process_group(group: WeightGroup, rank: int, host: str, port: int, tcp_store: Any = None) -> tuple:
    """A torch.distributed process group of its own (not the default group, so DeepSpeed's is left alone)."""
    import torch.distributed as dist

    _check_backend(group)
    timeout = datetime.timedelta(seconds=group.timeout_s)
    if tcp_store is None:
        tcp_store = dist.TCPStore(host, port, group.world_size, False, timeout=timeout)
    store = dist.PrefixStore(group.name, tcp_store)
    opts = dist.ProcessGroupGloo._Options()
    opts._timeout = timeout
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname=group.host) if group.host
                     else dist.ProcessGroupGloo.create_default_device()]
    return dist.ProcessGroupGloo(store, rank, group.world_size, opts), tcp_store


def flatten_state_dict(state_dict: dict[str, Any], device: str = "cpu") -> tuple[Any, list[tuple], int]:
    """All tensors as ONE uint8 buffer on ``device`` and their layout [(name, shape, dtype name, byte offset)]."""
    import torch

    layout, parts, offset = [], [], 0
    for name, t in state_dict.items():
        t = t.detach().contiguous()
        raw = t.reshape(-1).view(torch.uint8)
        pad = -offset % _ALIGN
        if pad:
            parts.append(torch.zeros(pad, dtype=torch.uint8, device=t.device))
            offset += pad
        layout.append((name, tuple(t.shape), str(t.dtype).removeprefix("torch."), offset))
        parts.append(raw)
        offset += raw.numel()
    if not parts:
        return torch.empty(0, dtype=torch.uint8, device=device), layout, offset
    # One concatenation where the tensors are (a GPU), then one copy to ``device``.
    flat = torch.cat([p.to(parts[0].device) for p in parts]).to(device)
    return flat, layout, offset


def unflatten_state_dict(flat: Any, layout: list[tuple]) -> dict[str, Any]:
    """Views into ``flat``, one per tensor of ``layout`` (no copy: `load_state_dict` copies anyway)."""
    import math

    import torch

    out = {}
    for name, shape, dtype_name, offset in layout:
        dtype = getattr(torch, dtype_name)
        nbytes = math.prod(shape) * dtype.itemsize
        out[name] = flat[offset:offset + nbytes].view(dtype).view(shape)
    return out


class CollectiveSync(WeightSync):
    """Sender and receivers over a torch.distributed broadcast from learner rank 0 to the samplers.

    Membership is declared by the controller (`set_members`, which calls `form_weight_group`); no actor needs a
    method for it (the join runs inside each actor through Ray's ``__ray_call__``).

    One publish of version v, on every member, in this order over the group's own process group:
      1. rank 0 announces v in the WeightStore: the group name and the tensor layout (metadata only);
      2. broadcast of a header [v, number of bytes];  3. broadcast of ONE flat byte buffer (all tensors);
      4. an all-reduce of an error flag, which doubles as an acknowledgement.
    `publish` returns only after step 4, that is after EVERY receiver has received v in full. So rank 0 cannot
    announce v+1 while any receiver still has v pending: a receiver that sees version v announced is either at v
    (nothing to do) or at v-1 with broadcast v next in line, and the header lets it check that. Versions are never
    skipped, and no receiver can join the wrong broadcast.

    The cost of that synchrony: samplers join between generation batches (`Sampler.refresh_weights`), so a publish
    waits for the slowest sampler's current batch, and the learner waits with it; with long batches the object
    store is the better default. A member that
    died or never joins makes the publish fail after ``timeout_s`` with `WeightGroupError` (a closed connection
    usually fails it sooner); the controller then forms a new group without it and publishes again. ``timeout_s``
    must exceed the longest sampler batch.
    """

    def __init__(self, store: Any, timeout_s: float = 300.0) -> None:
        super().__init__(store)
        self.timeout_s = float(timeout_s)
        self.channel = store._actor_id.hex()  # one membership per WeightStore per process
        self.generation = 0  # membership generations formed (controller side)
        self.receivers = 0  # receivers of the current generation (controller side)

    # --- membership (controller side) ---------------------------------------------------------------------
    async def set_members(self, sender: Any, receivers: list[Any]) -> Optional[dict[str, Any]]:
        """A broadcast group is fixed: form a new one (``weights-<generation>``) with these receivers."""
        import asyncio

        self.receivers = len(receivers)
        if not receivers:
            return None  # nobody to broadcast to; the next members get the weights when they come
        self.generation += 1
        name = f"weights-{self.generation}"
        await asyncio.get_running_loop().run_in_executor(None, form_weight_group, sender, receivers, name, self)
        return {"name": name, "members": len(receivers)}

    async def publish(self, sender: Any, version: int) -> Optional[dict[str, Any]]:
        if not self.receivers:
            return None  # a broadcast needs receivers; the next group gets the weights then
        return await sender.publish.remote(self, version)

    # --- membership (runs inside each member actor, called by form_weight_group) --------------------------
    def join(self, group: WeightGroup, rank: int) -> None:
        """Become ``rank`` of ``group``, leaving this process's previous group for the same store."""
        import ray

        if not 0 <= rank < group.world_size:
            raise WeightGroupError(f"weight group {group.name}: rank {rank} is outside 0..{group.world_size - 1}")
        _check_backend(group)
        self.leave()
        if rank == 0:
            import torch.distributed as dist

            host = group.host or ray.util.get_node_ip_address()
            tcp = dist.TCPStore(host, 0, group.world_size, True,
                                timeout=datetime.timedelta(seconds=group.timeout_s), wait_for_workers=False)
            ray.get(self.store.set_address.remote(group.name, host, tcp.port))
            pg, tcp = _new_process_group(group, 0, host, tcp.port, tcp)
        else:
            deadline = time.monotonic() + group.timeout_s
            while (address := ray.get(self.store.address.remote(group.name))) is None:
                if time.monotonic() > deadline:
                    raise WeightGroupError(f"weight group {group.name}: rank 0 did not publish its address "
                                           f"within {group.timeout_s:.0f} s")
                time.sleep(0.05)
            pg, tcp = _new_process_group(group, rank, *address)
        with _MEMBERSHIPS_LOCK:
            _MEMBERSHIPS[self.channel] = _Membership(group, rank, pg, tcp)

    def leave(self) -> None:
        with _MEMBERSHIPS_LOCK:
            old = _MEMBERSHIPS.pop(self.channel, None)
        if old is not None and hasattr(old.pg, "shutdown"):
            try:
                old.pg.shutdown()
            except Exception:  # a broken group may refuse a clean shutdown; dropping it is enough
                pass

    def membership(self) -> Optional[tuple[str, int]]:
        """(group name, rank) of this process, or None."""
        m = _MEMBERSHIPS.get(self.channel)
        return None if m is None else (m.group.name, m.rank)

    def _bound(self, role: str) -> _Membership:
        m = _MEMBERSHIPS.get(self.channel)
        if m is None:
            raise WeightGroupError(f"{role}: this process is in no weight group; call form_weight_group first")
        if m.broken:
            raise WeightGroupError(f"{role}: weight group {m.group.name} is broken ({m.broken}); form a new one")
        return m

    def _collective(self, m: _Membership, what: str, op) -> None:
        try:
            op().wait()
        except Exception as exc:
            m.broken = f"{what} failed: {type(exc).__name__}: {str(exc)[:300]}"
            raise WeightGroupError(
                f"weight group {m.group.name} (rank {m.rank} of {m.group.world_size}): {what} failed "
                f"(timeout {m.group.timeout_s:.0f} s): a member died or did not join. {type(exc).__name__}: "
                f"{str(exc)[:300]}") from exc

    def _exchange(self, m: _Membership, version: int, flat: Any, error: int) -> Any:
        """Steps 2-4 of the protocol; ``flat`` is None on a receiver (allocated from the header)."""
        import torch
        import torch.distributed as dist

        from models.device import collective_device

        device = collective_device(m.group.backend)
        header = torch.tensor([version, -1 if flat is None else flat.numel()], dtype=torch.int64, device=device)
        self._collective(m, f"header of version {version}", lambda: m.pg.broadcast([header], dist.BroadcastOptions()))
        if flat is None:
            flat = torch.empty(int(header[1]), dtype=torch.uint8, device=device)
            if int(header[0]) != version:
                error = 1
        self._collective(m, f"broadcast of version {int(header[0])}",
                         lambda: m.pg.broadcast([flat], dist.BroadcastOptions()))
        flag = torch.tensor([error], dtype=torch.int64, device=device)
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.MAX
        self._collective(m, f"acknowledgement of version {int(header[0])}", lambda: m.pg.allreduce([flag], opts))
        if int(flag[0]):
            raise WeightGroupError(f"weight group {m.group.name}: a receiver expected version {version} but the "
                                   f"broadcast carried {int(header[0])}")
        return flat

    # --- sender -------------------------------------------------------------------------------------------
    def send(self, version: int, state_dict: dict[str, Any], step: int = 0) -> PublishedWeights:
        import ray

        m = self._bound("send")
        if m.rank != 0:
            raise WeightGroupError(f"send: only rank 0 of weight group {m.group.name} sends, this is rank {m.rank}")
        from models.device import collective_device

        flat, layout, nbytes = flatten_state_dict(state_dict, collective_device(m.group.backend))
        info = PublishedWeights(version=version, pushed_at=time.time(), step=step)
        announcement = {"transport": "collective", "group": m.group.name, "layout": layout, "nbytes": nbytes}
        ray.get(self.store.set.remote(info, [announcement]))
        if m.group.world_size > 1:
            self._exchange(m, version, flat, 0)
        return info

    # --- receiver -----------------------------------------------------------------------------------------
    def _announced(self) -> tuple[Optional[PublishedWeights], Optional[dict]]:
        import ray

        info, extra = ray.get(self.store.get.remote())
        m = _MEMBERSHIPS.get(self.channel)
        ann = extra[0] if extra and isinstance(extra[0], dict) else None
        if info is None or m is None or ann is None or ann.get("group") != m.group.name:
            return None, None  # nothing published over this process's group (yet)
        return info, ann

    def latest(self) -> Optional[PublishedWeights]:
        """The newest version announced over this process's group; None outside any group."""
        return self._announced()[0]

    def fetch(self) -> tuple[PublishedWeights, dict[str, Any]]:
        """Join the pending broadcast (blocks until rank 0 sends it) and return its tensors."""
        m = self._bound("fetch")
        info, ann = self._announced()
        if info is None:
            raise LookupError(f"no weights have been announced over weight group {m.group.name} yet")
        if m.rank == 0:
            raise WeightGroupError(f"fetch: rank 0 of weight group {m.group.name} is the sender")
        flat = self._exchange(m, info.version, None, 0)
        return info, unflatten_state_dict(flat, ann["layout"])


def _join_in_actor(actor: Any, sync: CollectiveSync, group: WeightGroup, rank: int) -> None:
    sync.join(group, rank)


def form_weight_group(sender_actor: Any, receiver_actors: list[Any], group_name: str,
                      sync: CollectiveSync, host: Optional[str] = None) -> WeightGroup:
    """Driver/controller side: make ``sender_actor`` rank 0 and ``receiver_actors`` ranks 1.. of a new group.

    Every member joins concurrently (a process group forms only once all are in). Use a new ``group_name`` per
    membership generation, then publish the current weights again so newcomers receive them.
    """
    import ray

    members = [sender_actor, *receiver_actors]
    # Actor start-up (a process, torch imports) is not part of the transfer timeout; bound it separately.
    ray.get([a.__ray_ready__.remote() for a in members], timeout=_MEMBER_START_TIMEOUT_S)
    group = WeightGroup(name=group_name, world_size=1 + len(receiver_actors),
                        backend=BACKEND, timeout_s=sync.timeout_s, host=host)
    refs = [a.__ray_call__.remote(_join_in_actor, sync, group, r) for r, a in enumerate(members)]
    try:
        ray.get(refs, timeout=group.timeout_s + 30)
    except Exception as exc:
        raise WeightGroupError(f"forming weight group {group_name} with {group.world_size} members failed: "
                               f"{type(exc).__name__}: {str(exc)[:500]}") from exc
    finally:
        ray.get(sync.store.set_address.remote(group_name, None))
    return group


