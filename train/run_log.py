"""What a run leaves for people to read: metrics as JSONL and TensorBoard events, PNG curves, a summary.

The controller appends one record per learner step (and per progress tick); at the end `plot` draws pass rate,
reward and loss against wall-clock time.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._file = open(self.path, "a")
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:  # tensorboard is a declared dependency; a stripped install still runs
            pass

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

        records = [r for r in self.records() if r.get("kind") == "learner"]
        if not records:
            return []
        t0 = records[0]["time"]
        panels = [
            ("batch_pass_rate", "pass rate of trained-on programs"),
            ("batch_mean_reward", "mean reward of trained-on programs"),
            ("loss_rl", "RL loss (per token)"),
            ("sl_nll", "supervised NLL (per token)"),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
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
        fig.tight_layout()
        out = self.run_dir / "plots" / "training.png"
        out.parent.mkdir(exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return [out]


def moving_average(values, window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
