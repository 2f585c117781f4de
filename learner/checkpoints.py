"""The one place that knows a run's checkpoint layout, and how a checkpoint becomes whole.

    <run>/checkpoints/step_000120/
        deepspeed/          every learner rank's DeepSpeed state: model, optimizer (`train --resume` continues from it)
        hf/                 `save_pretrained` model + tokenizer, for users (`from_pretrained`, `launch.py eval`)
        buffer.snapshot.pkl the online buffer as it was (`OnlineBuffer.snapshot`)
        state.json          step, weight version, phase, seconds of training

``<run>`` is the run's storage (`cluster.storage.RunStorage`: a path or a URI). A checkpoint is whole or it is not
there: on a path it is written under a temporary name (``step_000120.partial-<id>``) and renamed once every part
and ``state.json`` are in; on an object store, which cannot rename a folder, it is written in place and
``state.json``, written last, is its commit marker. Readers (`latest`, `all`, so ``--resume``) take only
``step_N`` folders that hold ``state.json``: a checkpoint whose writer died is never picked, and the previous one
stays the latest until the new one is whole. A write that fails (no space left, say) raises
`CheckpointWriteError` naming the path; `abort` removes what it left.

Writers: `RunCheckpoints.begin(step)`, each part through `Checkpoint.writable(part)`, then `commit`.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from cluster.storage import RunStorage, StorageError

_STEP_DIR = re.compile(r"step_(\d+)$")
_PARTIAL = ".partial-"
STATE_FILE = "state.json"
BUFFER_SNAPSHOT = "buffer.snapshot.pkl"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names where and why. The previous checkpoint stays."""


@dataclass
class CheckpointState:
    step: int
    version: int
    phase: str
    train_s: float  # seconds of training when it was saved (`run.max_wall_s` counts the same seconds)


@dataclass(frozen=True)
class Checkpoint:
    storage: RunStorage  # the run's storage
    name: str  # its folder under checkpoints/: step_000120, or step_000120.partial-<id> while it is written

    @property
    def step(self) -> int:
        return int(re.match(r"step_(\d+)", self.name).group(1))

    @property
    def location(self) -> str:
        """Its folder, as a path or a URI."""
        return self.storage.url(f"checkpoints/{self.name}")

    @property
    def path(self) -> Path:
        """Its local folder (storage on a path); a URI has none."""
        if self.storage.local_root is None:
            raise ValueError(f"checkpoint {self.location} is not on a local path")
        return self.storage.local_root / "checkpoints" / self.name

    @property
    def deepspeed_dir(self) -> Path:
        return self.path / "deepspeed"

    @property
    def hf_dir(self) -> Path:
        return self.path / "hf"

    @property
    def hf_location(self) -> str:
        return self.storage.url(f"checkpoints/{self.name}/hf")

    def writable(self, part: str) -> AbstractContextManager[Path]:
        """A local folder for ``part`` (``deepspeed``, ``hf``) whose files end up in the checkpoint."""
        return self.storage.writable_dir(f"checkpoints/{self.name}/{part}")

    def readable(self, part: str) -> AbstractContextManager[Path]:
        return self.storage.readable_dir(f"checkpoints/{self.name}/{part}")

    def file_name(self, name: str) -> str:
        """``name`` inside this checkpoint, relative to the run's storage."""
        return f"checkpoints/{self.name}/{name}"

    def write_file(self, name: str, data: bytes) -> None:
        try:
            self.storage.write_bytes(self.file_name(name), data)
        except OSError as exc:
            raise CheckpointWriteError(f"checkpoint {self.location}: writing {name} failed: {exc}") from exc

    def read_file(self, name: str) -> bytes:
        return self.storage.read_bytes(self.file_name(name))

    def has(self, name: str) -> bool:
        return self.storage.exists(self.file_name(name))

    def state(self) -> CheckpointState:
        return CheckpointState(**json.loads(self.read_file(STATE_FILE)))


class RunCheckpoints:
    """The checkpoints of one run (``run``: its storage, or a path or URI of it)."""

    def __init__(self, run: str | Path | RunStorage) -> None:
        self.storage = run if isinstance(run, RunStorage) else RunStorage(run)
        self.root = self.storage.url("checkpoints")

    def begin(self, step: int) -> Checkpoint:
        """Where the checkpoint of ``step`` is written; it counts once `commit`ted. What writers that died left
        behind (partial folders, uncommitted ones) is removed first: one controller writes a run's checkpoints."""
        final = f"step_{step:06d}"
        for name in self.storage.list("checkpoints"):
            if _PARTIAL in name or (_STEP_DIR.match(name) and not self.storage.exists(f"checkpoints/{name}/{STATE_FILE}")):
                self.storage.delete(f"checkpoints/{name}")
        if not self.storage.renames_atomically and self.storage.exists(f"checkpoints/{final}"):
            # The same step saved again, in place: it stops counting (marker first) before anything is overwritten.
            self.storage.delete(f"checkpoints/{final}/{STATE_FILE}")
            self.storage.delete(f"checkpoints/{final}")
        name = f"{final}{_PARTIAL}{uuid.uuid4().hex[:8]}" if self.storage.renames_atomically else final
        checkpoint = Checkpoint(self.storage, name)
        if self.storage.renames_atomically:
            try:
                checkpoint.path.mkdir(parents=True)
            except OSError as exc:
                raise CheckpointWriteError(f"checkpoint {checkpoint.location}: cannot create it: {exc}") from exc
        return checkpoint

    def commit(self, checkpoint: Checkpoint, state: CheckpointState, parts: Iterable[str] = ()) -> Checkpoint:
        """Make ``checkpoint`` whole: check that every file its writers reported (``parts``, relative to it) is
        there as this process sees it, write ``state.json`` last, and on a path rename it to its final name.
        Returns the committed checkpoint."""
        missing = [part for part in parts if not checkpoint.has(part)]
        if missing:
            raise CheckpointWriteError(
                f"checkpoint {checkpoint.location}: {len(missing)} file(s) written by learner ranks are not there "
                f"(first: {missing[0]}); ranks on other nodes need storage they share: set run.storage to a shared "
                "path or a URI (s3://, gs://)")
        checkpoint.write_file(STATE_FILE, json.dumps(asdict(state)).encode())
        if not self.storage.renames_atomically:
            return checkpoint
        final = Checkpoint(self.storage, checkpoint.name.split(_PARTIAL)[0])
        try:
            if final.path.exists():  # the same step saved again: the old one goes only once the new one is in
                aside = f"{final.name}{_PARTIAL}replaced-{uuid.uuid4().hex[:8]}"
                self.storage.rename(f"checkpoints/{final.name}", f"checkpoints/{aside}")
                self.storage.rename(f"checkpoints/{checkpoint.name}", f"checkpoints/{final.name}")
                self.storage.delete(f"checkpoints/{aside}")
            else:
                self.storage.rename(f"checkpoints/{checkpoint.name}", f"checkpoints/{final.name}")
        except OSError as exc:
            raise CheckpointWriteError(f"checkpoint {checkpoint.location}: committing it failed: {exc}") from exc
        return final

    def abort(self, checkpoint: Checkpoint) -> None:
        """Remove what a failed checkpoint left (best effort: the storage may be what failed)."""
        try:
            self.storage.delete(f"checkpoints/{checkpoint.name}")
        except (OSError, StorageError):
            pass

    def all(self) -> list[Checkpoint]:
        """Whole checkpoints, oldest first."""
        found = [Checkpoint(self.storage, name) for name in self.storage.list("checkpoints") if _STEP_DIR.match(name)]
        return sorted((c for c in found if c.has(STATE_FILE)), key=lambda c: c.step)

    def latest(self) -> Optional[Checkpoint]:
        found = self.all()
        return found[-1] if found else None


def model_dir(path: str | Path) -> Optional[Path]:
    """The user-facing model of ``path``: a checkpoint's ``hf/``, or a run directory's latest checkpoint's
    ``hf/``; None when ``path`` is neither."""
    path = Path(path)
    if (path / "hf" / "config.json").is_file():
        return path / "hf"
    found = [c for c in RunCheckpoints(path).all() if (c.hf_dir / "config.json").is_file()]
    return found[-1].hf_dir if found else None
