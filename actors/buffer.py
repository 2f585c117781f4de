"""The online buffer: a bounded first-in-first-out store of scored trajectories between samplers and learner.

- Samplers `put` trajectories; the learner `sample`s random batches once the buffer holds ``min_fill``.
- Back-pressure: a `put` waits while the trajectories not yet read by the learner would exceed ``max_unread``,
  so samplers never produce what FIFO eviction would throw away unread.
- Durability: every accepted `put` is appended to a write-ahead log before it is acknowledged; `snapshot`
  writes the whole state and truncates the log. A restarted buffer (Ray actor restart, or `train --resume`)
  loads the snapshot and replays the log, so nothing acknowledged is lost.
"""
from __future__ import annotations

import asyncio
import collections
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cluster.storage import RunStorage
from configs.schema import BufferConfig
from rewards.trajectory import Trajectory

_REMEMBERED_BATCHES = 10_000
SNAPSHOT = "buffer.snapshot.pkl"


@dataclass
class BufferStats:
    """What the buffer holds and has seen (`OnlineBuffer.stats`)."""

    size: int = 0
    capacity: int = 0
    unread: int = 0  # trajectories the learner has not read yet (back-pressure counts these)
    accepted: int = 0  # ever, across restarts
    evicted: int = 0
    evicted_unread: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    staleness_mean: float = 0.0  # policy versions behind the learner, over the trajectories held
    staleness_max: int = 0
    ready: bool = False  # holds at least min_fill


@dataclass
class _Entry:
    seq: int
    trajectory: Trajectory
    reads: int = 0


@dataclass
class _State:
    entries: collections.deque = field(default_factory=collections.deque)
    next_seq: int = 0
    accepted: int = 0
    evicted: int = 0
    evicted_unread: int = 0
    sampled_batches: int = 0
    batch_ids: dict = field(default_factory=dict)  # recent put batch ids, oldest first (for idempotent puts)


class OnlineBuffer:
    """Ray actor (async: waiting `put`s do not block `sample`, `stats` or `snapshot`)."""

    def __init__(self, cfg: BufferConfig, state_dir: Optional[str] = None, seed: int = 0,
                 restore_from: Optional[tuple[RunStorage, str]] = None) -> None:
        self.cfg = cfg
        self.max_unread = cfg.max_unread or cfg.capacity
        self.state_dir = Path(state_dir) if state_dir else None
        self.rng = random.Random(seed)
        self.state = _State()
        self.unread = 0
        self.closed = False
        self.space = asyncio.Condition()
        self.last_snapshot = time.time()
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._restore(restore_from)
            self._wal = open(self.state_dir / "buffer.wal", "ab")

    # --- durability ---------------------------------------------------------------------------------------
    def _restore(self, fallback: Optional[tuple[RunStorage, str]]) -> None:
        snap = self.state_dir / SNAPSHOT
        if snap.exists():
            with open(snap, "rb") as f:
                self.state = pickle.load(f)
        elif fallback is not None:  # a resume on a node without this run's state dir: the checkpoint's copy
            self.state = pickle.loads(fallback[0].read_bytes(fallback[1]))
        wal = self.state_dir / "buffer.wal"
        if wal.exists():
            with open(wal, "rb") as f:
                while True:
                    try:
                        batch_id, batch = pickle.load(f)
                    except EOFError:
                        break
                    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError):
                        break  # a torn last record: it was never acknowledged
                    self._append(batch, batch_id)
        self.unread = sum(1 for e in self.state.entries if e.reads == 0)

    def snapshot(self, storage: Optional[RunStorage] = None, name: str = "") -> dict[str, Any]:
        """Write the whole state into the buffer's own state dir (truncating its log) and, given ``storage``, to
        ``name`` there as well (a checkpoint's copy, written from this actor's node)."""
        data = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        if storage is not None:
            storage.write_bytes(name, data)
        if self.state_dir:
            RunStorage(self.state_dir).write_bytes(SNAPSHOT, data)
            self._wal.truncate(0)
            self._wal.seek(0)
        self.last_snapshot = time.time()
        return {"size": len(self.state.entries), "accepted": self.state.accepted}

    # --- samplers' side -----------------------------------------------------------------------------------
    def _append(self, trajectories: list[Trajectory], batch_id: Optional[str] = None) -> None:
        st = self.state
        if batch_id is not None:
            st.batch_ids[batch_id] = None
            while len(st.batch_ids) > _REMEMBERED_BATCHES:
                st.batch_ids.pop(next(iter(st.batch_ids)))
        for traj in trajectories:
            st.entries.append(_Entry(st.next_seq, traj))
            st.next_seq += 1
            st.accepted += 1
            self.unread += 1
            while len(st.entries) > self.cfg.capacity:
                old = st.entries.popleft()
                st.evicted += 1
                if old.reads == 0:
                    st.evicted_unread += 1
                    self.unread -= 1

    async def put(self, trajectories: list[Trajectory], batch_id: Optional[str] = None) -> int:
        """Accept trajectories, waiting while the learner has too many unread ones. Returns how many were
        accepted (0 once the buffer is closed).

        ``batch_id`` makes the call idempotent: Ray retries a `put` that was in flight when the buffer died,
        and a batch the log already holds is acknowledged again instead of being stored twice."""
        if batch_id is not None and batch_id in self.state.batch_ids:
            return len(trajectories)
        async with self.space:
            # Never hold a batch back while the learner cannot start (fewer than min_fill held): that would
            # deadlock when batches do not add up to min_fill exactly within max_unread.
            await self.space.wait_for(
                lambda: self.closed or self.unread == 0 or self.unread + len(trajectories) <= self.max_unread
                or len(self.state.entries) < self.cfg.min_fill
            )
            if self.closed:
                return 0
            if self.state_dir:
                pickle.dump((batch_id, trajectories), self._wal, protocol=pickle.HIGHEST_PROTOCOL)
                self._wal.flush()
            self._append(trajectories, batch_id)
        if self.cfg.snapshot_every_s and self.state_dir and time.time() - self.last_snapshot > self.cfg.snapshot_every_s:
            self.snapshot()
        return len(trajectories)

    # --- learner's side -----------------------------------------------------------------------------------
    async def sample(self, batch_size: int, num_shards: int = 1) -> Optional[list[list[Trajectory]]]:
        """``num_shards`` random disjoint shards of ``batch_size`` each (one per learner rank), or None while
        the buffer holds fewer than ``min_fill`` (or fewer than one batch)."""
        entries = self.state.entries
        need = batch_size * num_shards
        if len(entries) < max(self.cfg.min_fill, need):
            return None
        # Unread trajectories first, oldest first, so that FIFO eviction only ever drops read ones; the rest of
        # the batch is drawn at random from those already read (RLTF reuses buffer samples).
        unread = [e for e in entries if e.reads == 0]
        picks = unread[:need]
        if len(picks) < need:
            read = [e for e in entries if e.reads > 0]
            picks += self.rng.sample(read, need - len(picks))
        self.rng.shuffle(picks)
        async with self.space:
            for e in picks:
                if e.reads == 0:
                    self.unread -= 1
                e.reads += 1
            self.state.sampled_batches += 1
            self.space.notify_all()
        trajs = [e.trajectory for e in picks]
        return [trajs[i * batch_size:(i + 1) * batch_size] for i in range(num_shards)]

    def stats(self, learner_version: int = 0) -> BufferStats:
        entries = self.state.entries
        stale = [learner_version - e.trajectory.policy_version for e in entries]
        return BufferStats(
            size=len(entries), capacity=self.cfg.capacity, unread=self.unread, accepted=self.state.accepted,
            evicted=self.state.evicted, evicted_unread=self.state.evicted_unread,
            outcomes=dict(collections.Counter(e.trajectory.outcome for e in entries)),
            staleness_mean=sum(stale) / len(stale) if stale else 0.0, staleness_max=max(stale) if stale else 0,
            ready=len(entries) >= self.cfg.min_fill,
        )

    def sequence_numbers(self) -> list[int]:
        """Sequence numbers of the trajectories held (for tests of durability)."""
        return [e.seq for e in self.state.entries]

    async def close(self) -> None:
        """Release waiting samplers (their `put` returns 0) and snapshot; used at shutdown."""
        async with self.space:
            self.closed = True
            self.space.notify_all()
        if self.state_dir:
            self.snapshot()
