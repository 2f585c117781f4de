"""Recovery without a person: a new learner group from the last checkpoint when a rank dies, and one controller per
run directory so that `train --resume` after a killed driver never runs beside what is left of the old run.

Learner restart (`LearnerRecovery.recover`, called by the training core when a call on the group raised
`LearnerDied`): the group's ranks are ended, new ones start in the same placement group (Ray re-places the bundles
of a lost node, and the run waits with a status line until it has), and they load the newest complete checkpoint:
model, optimizer, scheduler and step. The samplers and the buffer are not touched: they keep sampling, what they
put stays in the buffer, and its accounting goes on. The weight version never goes back: the restored weights are
published as the next version, so samplers switch to what the learner now trains. Only the steps since the
checkpoint are lost; ``learner.max_restarts`` bounds the restarts of a run.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any, Optional, Protocol

from configs.schema import Config
from learner.checkpoints import RunCheckpoints
from learner.group import LearnerDied, LearnerGroup
from train.run_log import RunLog


class RunInUse(RuntimeError):
    """Another live run writes this run directory (or has this run's name on the cluster)."""


class Run(Protocol):
    cfg: Config
    location: str  # the run's folder in its storage
    step: int
    learners: LearnerGroup
    checkpoints: RunCheckpoints
    log: RunLog
    problems_ref: Any
    store: Any  # the WeightStore actor
    version: int  # the last weight version published
    version_steps: dict[int, int]


class LearnerRecovery:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.restarts = 0
        self.status: Optional[str] = None  # what a restart in progress waits for, for the run's status line

    async def recover(self, died: LearnerDied) -> None:
        """Start the learner group again from the last checkpoint (again, if a rank dies while it starts);
        re-raises, naming `--resume`, once ``learner.max_restarts`` restarts are used up."""
        run, died_at = self.run, self.run.step
        while True:
            limit = run.cfg.learner.max_restarts
            run.log.write({"kind": "event", "event": "learner_died", "step": run.step, "error": str(died),
                           "restarts": self.restarts})
            if self.restarts >= limit:
                raise LearnerDied(f"{died}; learner.max_restarts={limit} restarts used up, the run stops. "
                                  f"Continue with: python launch.py train --resume {run.location}") from None
            self.restarts += 1
            try:
                await self._restart(died_at)
                return
            except LearnerDied as again:
                died = again

    async def _restart(self, died_at: int) -> None:
        run, started = self.run, time.time()
        checkpoint = run.checkpoints.latest()
        resumed_from = checkpoint.state().step if checkpoint is not None else 0
        origin = f"checkpoint step {resumed_from}" if checkpoint else "the initial model (no checkpoint yet)"
        self.status = f"the learner to restart ({self.restarts} of {run.cfg.learner.max_restarts}) from {origin}"
        try:
            run.learners.stop()
            await run.learners.start(run.problems_ref)
            if checkpoint is not None:
                await run.learners.load(checkpoint)
        finally:
            self.status = None
        run.step = resumed_from
        # Rank 0 may have died after the weight store took its last publish but before the reply came back: that
        # version is out (samplers may run it), so the next publish must come after it, never reuse its number.
        latest = await run.store.latest.remote()
        while latest is not None and latest.version > run.version:
            run.version += 1
            run.version_steps[run.version] = died_at
            run.log.write({"kind": "event", "event": "publish", "step": died_at, "version": run.version,
                           "reply_lost_with_rank_0": True})
        run.log.write({"kind": "event", "event": "learner_restart", "step": resumed_from, "died_at_step": died_at,
                       "resumed_from_step": resumed_from, "checkpoint": checkpoint.location if checkpoint else None,
                       "restarts": self.restarts, "recovery_s": round(time.time() - started, 2)})


def hold_run_dir(run_dir: Path, wait_s: float = 120.0) -> Any:
    """An exclusive lock on ``run_dir`` (the run's local folder) for as long as the returned file stays open: the
    controller takes it before it starts anything, and holds it for its life.

    After a driver is killed, what is left of its run (the controller and the actors it owns) is ended by Ray
    within seconds, and the kernel drops its lock when its process dies; a resumed run waits for that here, so two
    controllers never write one run directory (its buffer log above all). A run that still holds it after
    ``wait_s`` is really alive."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    lock = open(Path(run_dir) / ".controller.lock", "a+")
    deadline = time.time() + wait_s
    while True:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.time() > deadline:
                lock.close()
                raise RunInUse(f"{run_dir} is in use by a live run (its controller holds "
                               f"{run_dir}/.controller.lock); stop that run first") from None
            time.sleep(0.5)
            continue
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        return lock
