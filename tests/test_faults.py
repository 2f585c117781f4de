"""Faults that used to need a person, on a real local Ray with real DeepSpeed, sandbox and a tiny real model:
learner rank 0 SIGKILLed mid-run (the run restarts its learner group from the last checkpoint by itself and
completes), and the driver SIGKILLed mid-run (`train --resume` continues from the last checkpoint with the buffer
as it was acknowledged). The buffer's accounting is checked across both: nothing it accepted is lost."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.test_cluster_e2e import process_table, with_descendants
from tests.test_loop import records, train, wait_for

pytestmark = pytest.mark.slow

WARM, STEPS, EVERY = 4, 12, 4
FAST = [
    "--config", "smoke", "--run.log_every_s=1", "--data.limit=24", f"--learner.warm_start_steps={WARM}",
    f"--learner.total_steps={STEPS}", f"--learner.checkpoint_every={EVERY}", "--learner.batch_size=8",
    "--learner.supervised_batch_size=8", "--buffer.min_fill=8", "--sampler.problems_per_batch=2",
    "--learner.publish_every=1",
]


def actor_pids(root: int, class_name: str) -> list[int]:
    """Processes below ``root`` (a training command and its embedded Ray) that run an actor of ``class_name``:
    Ray names an actor's worker process ``ray::<class>``."""
    table = process_table()
    return sorted(pid for pid in with_descendants({root}, table) if table[pid][1].startswith(f"ray::{class_name}"))


def past_a_checkpoint(run_dir: Path):
    """The step of the run's first RL checkpoint once the learner has stepped past it; else None."""
    recs = records(run_dir)
    done = [r["step"] for r in recs if r.get("event") == "checkpoint" and r["step"] > WARM]
    if done and any(r.get("kind") == "learner" and r["step"] > done[0] for r in recs):
        return done[0]
    return None


def assert_buffer_lost_nothing(recs: list[dict], at_least: int) -> dict:
    """The buffer's counts only grow, and at its close it holds every trajectory it accepted that was not evicted
    (sequence numbers consecutive up to the last), having evicted none unread."""
    accepted = [r["buffer_accepted"] for r in recs if "buffer_accepted" in r]
    assert accepted == sorted(accepted), "the buffer's accepted count went down: acknowledged trajectories lost"
    closed = [r for r in recs if r.get("event") == "buffer_closed"][-1]
    assert closed["buffer_accepted"] >= at_least
    evicted, total = closed["buffer_evicted"], closed["buffer_accepted"]
    assert closed["buffer_size"] == total - evicted and closed["buffer_evicted_unread"] == 0
    assert closed["buffer_seq_sum"] == sum(range(evicted, total))
    return closed


def test_learner_rank_killed_mid_run_restarts_from_its_checkpoint_by_itself(tmp_path):
    run_dir, log = tmp_path / "runs" / "learnerkill", tmp_path / "train.log"
    proc = train([*FAST, "--run.name=learnerkill"], tmp_path, log)
    wait_for(lambda: past_a_checkpoint(run_dir), 300, proc, log)
    accepted_before = max(r["buffer_accepted"] for r in records(run_dir) if "buffer_accepted" in r)
    (rank0,) = actor_pids(proc.pid, "LearnerRank")
    os.kill(rank0, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    recs = records(run_dir)
    (died,) = [r for r in recs if r.get("event") == "learner_died"]
    (restart,) = [r for r in recs if r.get("event") == "learner_restart"]
    saved = [r["step"] for r in recs if r.get("event") == "checkpoint" and r["time"] < died["time"]]
    # It resumed from the last checkpoint before the death; only the steps since then were lost.
    assert restart["resumed_from_step"] == max(saved) and restart["died_at_step"] >= max(saved)
    assert restart["restarts"] == 1 and restart["checkpoint"].endswith(f"step_{max(saved):06d}")
    after = [r for r in recs if r.get("kind") == "learner" and r["time"] > restart["time"]]
    assert after[0]["step"] == max(saved) + 1 and after[-1]["step"] == WARM + STEPS
    assert after[-1]["learner_restarts"] == 1  # the progress record shows the restart too
    # The samplers sampled on: the restored weights went out as a new version, never an older number.
    versions = [r["version"] for r in recs if r.get("event") == "publish"]
    assert versions == list(range(1, len(versions) + 1))
    assert any(r.get("event") == "publish" and r["time"] > restart["time"] for r in recs)
    assert_buffer_lost_nothing(recs, accepted_before)
    assert f"waiting for the learner to restart (1 of 3) from checkpoint step {max(saved)}" in log.read_text()


def test_driver_killed_mid_run_then_resumed_to_the_end(tmp_path):
    run_dir, log = tmp_path / "runs" / "driverkill", tmp_path / "train.log"
    proc = train([*FAST, "--run.name=driverkill"], tmp_path, log)
    wait_for(lambda: past_a_checkpoint(run_dir), 300, proc, log)
    proc.send_signal(signal.SIGKILL)  # no clean stop: whatever it had in flight is cut
    proc.wait(timeout=30)
    recs = records(run_dir)
    accepted_before = max(r["buffer_accepted"] for r in recs if "buffer_accepted" in r)
    last_checkpoint = max(r["step"] for r in recs if r.get("event") == "checkpoint")
    assert not any(r.get("event") == "buffer_closed" for r in recs)

    resume_log = tmp_path / "resume.log"
    proc = train(["--resume", str(run_dir)], tmp_path, resume_log)
    assert proc.wait(timeout=300) == 0, resume_log.read_text()[-3000:]
    recs = records(run_dir)
    (resumed,) = [r for r in recs if r.get("event") == "resumed"]
    assert resumed["step"] == last_checkpoint
    # The buffer came back as acknowledged: everything it had accepted before the kill, in order, none missing.
    assert resumed["buffer_accepted"] >= accepted_before
    assert resumed["buffer_seq_sum"] == sum(range(resumed["buffer_evicted"], resumed["buffer_accepted"]))
    learner = [r for r in recs if r.get("kind") == "learner" and r["time"] > resumed["time"]]
    assert learner[0]["step"] == last_checkpoint + 1 and learner[-1]["step"] == WARM + STEPS
    assert_buffer_lost_nothing([r for r in recs if r["time"] > resumed["time"]], resumed["buffer_accepted"])
