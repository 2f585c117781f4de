"""What a run leaves for people to read: metrics as JSONL and TensorBoard events, PNG curves, a summary.

The controller appends one record per learner step (and per progress tick, held-out evaluation and event); at the
end `plot` draws pass rate, reward and loss against wall-clock time, and held-out pass@k against the learner step.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cluster.storage import RunStorage


class RunLog:
    """Writes into the run's storage: in place on a path; for a URI into a staging folder on this node that
    `sync` uploads (at each checkpoint, evaluation and the end)."""

    SYNCED = ("config.yaml", "metrics.jsonl", "tensorboard", "plots", "summary.json")

    def __init__(self, storage: RunStorage) -> None:
        self.storage = storage
        self.run_dir = storage.local_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if storage.local_root is None and not self.path.exists() and storage.exists("metrics.jsonl"):
            self.path.write_bytes(storage.read_bytes("metrics.jsonl"))  # resumed on another node: keep the history
        self._file = open(self.path, "a")
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:  # tensorboard is a declared dependency; a stripped install still runs
            pass

    def sync(self) -> None:
        """Upload what this log wrote, when the storage is not written in place."""
        if self.storage.local_root is not None:
            return
        if not self._file.closed:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()
        for name in self.SYNCED:
            if (self.run_dir / name).exists():
                self.storage.upload(self.run_dir / name, name)

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), **record}
        self._file.write(json.dumps(record, default=float) + "\n")
        self._file.flush()
        if self._tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "time"):
                    self._tb.add_scalar(key.replace(".", "/"), value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def records(self) -> list[dict[str, Any]]:
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def plot(self) -> list[Path]:
        """Curves of the numbers people look at; returns the PNG paths written."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        all_records = self.records()
        records = [r for r in all_records if r.get("kind") == "learner"]
        heldout = [r for r in all_records if r.get("kind") == "eval"]
        if not records:
            return []
        t0 = records[0]["time"]
        panels = [
            ("batch_pass_rate", "pass rate of trained-on programs"),
            ("batch_mean_reward", "mean reward of trained-on programs"),
            ("loss_rl", "RL loss (per token)"),
            ("sl_nll", "supervised NLL (per token)"),
        ]
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 3.4))
        for ax, (key, title) in zip(axes, panels):
            points = [((r["time"] - t0) / 60, r[key]) for r in records if r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, lw=0.8, alpha=0.35, color="tab:blue")
                ax.plot(xs, moving_average(ys, 10), lw=1.8, color="tab:blue", label="moving average (10 steps)")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("wall-clock minutes of RL")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        plot_heldout(axes[-1], heldout)
        fig.tight_layout()
        out = self.run_dir / "plots" / "training.png"
        out.parent.mkdir(exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return [out]


def plot_heldout(ax, records: list[dict[str, Any]]) -> None:
    """Held-out pass@k against the learner step of the weights evaluated (`evaluation.heldout`)."""
    keys = sorted({k for r in records for k in r if k.startswith("eval_pass@")}, key=lambda k: (len(k), k))
    for key in keys:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            label = key.removeprefix("eval_").replace("_greedy", " greedy") + ("" if "greedy" in key else " sampled")
            ax.plot(xs, ys, marker="o", lw=1.5, label=label)
    ax.set_title("held-out pass@k" if records else "held-out pass@k (eval.every_steps off)", fontsize=10)
    ax.set_xlabel("learner step")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)


def moving_average(values, window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
