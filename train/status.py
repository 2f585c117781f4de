"""What a training run reports while it runs and when it ends: its phase, its progress, its live status and its
summary. Plain dataclasses, so they cross from the controller actor to `launch.py train` / `status` unchanged."""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from actors.buffer import BufferStats


class Phase(str, enum.Enum):
    STARTING = "starting"
    BUILDING = "building"  # loading problems, starting the actors
    WARM_START = "warm_start"  # supervised steps on reference solutions
    SUPERVISED = "supervised"  # the supervised-only control (learner.rl: false)
    RL = "rl"  # samplers, sandbox and learner running together
    FINISHING = "finishing"
    DONE = "done"


@dataclass
class SamplingStats:
    """What the samplers and the buffer add up to since the run started."""

    samples: int = 0
    samples_per_s: float = 0.0
    pass_rate: float = 0.0
    mean_reward: float = 0.0
    buffer_size: int = 0
    buffer_capacity: int = 0
    buffer_unread: int = 0
    policy_lag: float = 0.0  # mean policy-version lag of the buffered trajectories
    sampler_versions: dict[str, int] = field(default_factory=dict)  # the weight version each sampler runs
    weight_sync_s: Optional[float] = None  # latest push -> running time of any sampler
    sampler_restarts: int = 0


@dataclass
class Progress:
    """A run's progress line: where it is, the latest learner step, and (once samplers run) what they produced."""

    phase: str  # a `Phase` value
    step: int = 0
    version: int = 0
    elapsed_s: float = 0.0
    learner: dict[str, float] = field(default_factory=dict)  # the latest learner step's metrics (sl_nll, lr, ...)
    sampling: Optional[SamplingStats] = None  # None until sampling starts (and in the supervised-only control)
    heldout: dict[str, Any] = field(default_factory=dict)  # the latest held-out evaluation (step, eval_pass@...)

    def flat(self) -> dict[str, Any]:
        """One flat record: what the progress adds to the run's metrics.jsonl and summary.json."""
        out = {"phase": self.phase, "step": self.step, "version": self.version, "elapsed_s": self.elapsed_s,
               **self.learner}
        if self.sampling is not None:
            out.update(asdict(self.sampling), loss=self.learner.get("loss_rl"))
        if self.heldout:
            out["heldout"] = self.heldout
        return out


@dataclass
class RunStatus:
    """`launch.py status`: recomputed when asked, not the last progress line."""

    run: str
    progress: Progress
    actors: dict[str, int]  # live actors per role
    buffer: BufferStats

    def to_dict(self) -> dict[str, Any]:
        return {**self.progress.flat(), "run": self.run, "actors": self.actors, "buffer": asdict(self.buffer)}


@dataclass
class RunSummary:
    """How a run ended (``summary.json``)."""

    progress: Progress
    checkpoint: str  # the last checkpoint's directory
    model_dir: str  # its `save_pretrained` model
    plots: list[str]
    run_dir: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.progress.flat(), "checkpoint": self.checkpoint, "model_dir": self.model_dir,
                "plots": self.plots, "run_dir": self.run_dir}
