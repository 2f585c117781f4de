"""The one place that knows a run's checkpoint layout.

    <run_dir>/checkpoints/step_000120/
        deepspeed/          every learner rank's DeepSpeed state (`train --resume` continues from it)
        hf/                 `save_pretrained` model + tokenizer, for users (`from_pretrained`, `launch.py eval`)
        buffer.snapshot.pkl the online buffer as it was (`OnlineBuffer.snapshot`)
        state.json          step, weight version, phase, seconds of training; written last, so a checkpoint
                            without it is incomplete and never used

Writers call `RunCheckpoints.begin(step)`, fill the directories, then `commit(checkpoint, state)`; readers use
`latest()` / `all()` (complete checkpoints only) and `model_dir`.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

_STEP_DIR = re.compile(r"step_(\d+)$")


@dataclass
class CheckpointState:
    step: int
    version: int
    phase: str
    train_s: float  # seconds of training when it was saved (`run.max_wall_s` counts the same seconds)


@dataclass(frozen=True)
class Checkpoint:
    path: Path

    @property
    def step(self) -> int:
        return int(_STEP_DIR.search(self.path.name).group(1))

    @property
    def deepspeed_dir(self) -> Path:
        return self.path / "deepspeed"

    @property
    def hf_dir(self) -> Path:
        return self.path / "hf"

    @property
    def buffer_dir(self) -> Path:
        return self.path

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def state(self) -> CheckpointState:
        return CheckpointState(**json.loads(self.state_file.read_text()))


class RunCheckpoints:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir) / "checkpoints"

    def begin(self, step: int) -> Checkpoint:
        """Where the checkpoint of ``step`` is written (complete once `commit`ted)."""
        checkpoint = Checkpoint(self.root / f"step_{step:06d}")
        checkpoint.path.mkdir(parents=True, exist_ok=True)
        return checkpoint

    def commit(self, checkpoint: Checkpoint, state: CheckpointState) -> None:
        checkpoint.state_file.write_text(json.dumps(asdict(state)))

    def all(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        found = [Checkpoint(p) for p in self.root.glob("step_*") if _STEP_DIR.search(p.name)]
        return sorted((c for c in found if c.state_file.is_file()), key=lambda c: c.step)

    def latest(self) -> Optional[Checkpoint]:
        found = self.all()
        return found[-1] if found else None


def model_dir(path: str | Path) -> Optional[Path]:
    """The user-facing model of ``path``: a checkpoint's ``hf/``, or a run directory's latest checkpoint's
    ``hf/``; None when ``path`` is neither."""
    path = Path(path)
    if (path / "hf" / "config.json").is_file():
        return Checkpoint(path).hf_dir
    found = [c for c in RunCheckpoints(path).all() if (c.hf_dir / "config.json").is_file()]
    return found[-1].hf_dir if found else None
