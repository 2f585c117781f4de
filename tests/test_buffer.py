"""The online buffer: FIFO capacity, minimum fill, back-pressure, durability across restarts."""
from __future__ import annotations

import asyncio

import pytest

from actors.buffer import OnlineBuffer
from configs.schema import BufferConfig
from rewards.trajectory import Trajectory


def traj(i: int, version: int = 0, outcome: str = "failed") -> Trajectory:
    return Trajectory(f"p{i}", [1, 2], [3, 4, 5], [0.1, 0.2, 0.3], [-1.0, -1.0, -1.0], version, -0.3, 0.0, outcome)


def run(coro):
    return asyncio.run(coro)


def test_min_fill_then_random_disjoint_shards():
    async def go():
        buf = OnlineBuffer(BufferConfig(capacity=100, min_fill=10))
        await buf.put([traj(i) for i in range(9)])
        assert await buf.sample(4, 2) is None  # below min_fill
        await buf.put([traj(9)])
        shards = await buf.sample(4, 2)
        ids = [t.problem_id for s in shards for t in s]
        assert [len(s) for s in shards] == [4, 4] and len(set(ids)) == 8
        assert buf.stats().unread == 2
    run(go())


def test_fifo_evicts_oldest_and_counts_unread_evictions():
    async def go():
        buf = OnlineBuffer(BufferConfig(capacity=5, min_fill=1, max_unread=100))
        await buf.put([traj(i) for i in range(8)])
        assert buf.sequence_numbers() == [3, 4, 5, 6, 7]
        stats = buf.stats()
        assert stats.evicted == 3 and stats.evicted_unread == 3 and stats.size == 5
    run(go())


def test_back_pressure_blocks_until_learner_reads():
    async def go():
        buf = OnlineBuffer(BufferConfig(capacity=8, min_fill=4))
        await buf.put([traj(i) for i in range(8)])
        blocked = asyncio.create_task(buf.put([traj(100), traj(101)]))
        await asyncio.sleep(0.05)
        assert not blocked.done(), "put must wait while the learner has not read what would be evicted"
        await buf.sample(2, 1)  # the learner reads two -> room for two more
        assert await asyncio.wait_for(blocked, 1.0) == 2
        assert buf.stats().evicted_unread == 0
    run(go())


def test_back_pressure_never_holds_a_batch_while_below_min_fill():
    async def go():
        # Batches of uneven size (a sampler dropping zero-return programs): 5 unread + 3 > max_unread 6, but the
        # learner cannot read before min_fill 6 either, so waiting would deadlock.
        buf = OnlineBuffer(BufferConfig(capacity=20, min_fill=6, max_unread=6))
        await buf.put([traj(i) for i in range(5)])
        assert await asyncio.wait_for(buf.put([traj(i) for i in range(5, 8)]), 1.0) == 3
        blocked = asyncio.create_task(buf.put([traj(100)]))  # now min_fill is reached: back-pressure holds
        await asyncio.sleep(0.05)
        assert not blocked.done()
        await buf.sample(4, 1)
        assert await asyncio.wait_for(blocked, 1.0) == 1
    run(go())


def test_close_releases_waiting_samplers():
    async def go():
        buf = OnlineBuffer(BufferConfig(capacity=2, min_fill=1))
        await buf.put([traj(0), traj(1)])
        blocked = asyncio.create_task(buf.put([traj(2)]))
        await asyncio.sleep(0.02)
        await buf.close()
        assert await asyncio.wait_for(blocked, 1.0) == 0
    run(go())


def test_staleness_and_outcome_mix():
    async def go():
        buf = OnlineBuffer(BufferConfig(capacity=10, min_fill=1))
        await buf.put([traj(0, version=1, outcome="passed"), traj(1, version=3)])
        stats = buf.stats(learner_version=4)
        assert stats.staleness_mean == 2.0 and stats.staleness_max == 3
        assert stats.outcomes == {"passed": 1, "failed": 1}
    run(go())


@pytest.mark.parametrize("snapshot_between", [False, True])
def test_restart_loses_nothing_acknowledged(tmp_path, snapshot_between):
    async def go():
        cfg = BufferConfig(capacity=50, min_fill=1, snapshot_every_s=0)
        buf = OnlineBuffer(cfg, str(tmp_path))
        await buf.put([traj(i) for i in range(5)])
        if snapshot_between:
            buf.snapshot()
        await buf.put([traj(i) for i in range(5, 12)])
        await buf.sample(3, 1)
        before = buf.sequence_numbers()
        # No close(): the process dies here. A new buffer on the same directory sees every acknowledged put.
        again = OnlineBuffer(cfg, str(tmp_path))
        assert again.sequence_numbers() == before == list(range(12))
        assert again.stats().accepted == 12
    run(go())


def test_torn_last_log_record_is_ignored(tmp_path):
    async def go():
        cfg = BufferConfig(capacity=50, min_fill=1, snapshot_every_s=0)
        buf = OnlineBuffer(cfg, str(tmp_path))
        await buf.put([traj(i) for i in range(3)])
        with open(tmp_path / "buffer.wal", "ab") as f:
            f.write(b"\x80\x05\x95garbage")  # a put that crashed mid-write was never acknowledged
        again = OnlineBuffer(cfg, str(tmp_path))
        assert again.sequence_numbers() == [0, 1, 2]
        # What the restarted buffer acknowledges next must survive the next restart too: the torn bytes are cut
        # off the log, not left in front of the new records.
        await again.put([traj(3), traj(4)])
        assert OnlineBuffer(cfg, str(tmp_path)).sequence_numbers() == [0, 1, 2, 3, 4]
    run(go())


def test_retried_put_is_stored_once_even_across_restart(tmp_path):
    async def go():
        cfg = BufferConfig(capacity=50, min_fill=1, snapshot_every_s=0)
        buf = OnlineBuffer(cfg, str(tmp_path))
        assert await buf.put([traj(0), traj(1)], batch_id="b1") == 2
        assert await buf.put([traj(0), traj(1)], batch_id="b1") == 2  # acknowledged again, not stored again
        again = OnlineBuffer(cfg, str(tmp_path))  # the buffer died; Ray retries the same put on the new one
        assert await again.put([traj(0), traj(1)], batch_id="b1") == 2
        assert again.sequence_numbers() == [0, 1] and again.stats().accepted == 2
    run(go())
