"""The learning experiment's pipeline (bench/learning.py --quick) on the real system: a warm start, the
supervised-only control and the offline ablation as real runs on one Ray cluster, their checkpoints evaluated in
the sandbox, and the report written. The quick numbers mean nothing; what is checked is that each arm ran the
way its switch says."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def events(run_dir, name=None) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if name is None or r.get("event") == name]


def test_quick_experiment_runs_each_arm_as_configured(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, str(REPO_ROOT / "bench" / "learning.py"), "--quick", "--arms", "supervised,offline",
           "--budget-s", "15", "--out-dir", str(out), "--results", str(tmp_path / "learning.json"),
           "--docs", str(tmp_path / "docs")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((tmp_path / "learning.json").read_text())
    assert [(r["arm"], r["seed"]) for r in results["runs"]] == [("supervised", 0), ("offline", 0)]
    assert len(results["start"]) == 2  # the starting checkpoint evaluated twice: the noise estimate
    for run in results["runs"]:
        times = [p["train_s"] for p in run["points"]]
        assert times == sorted(times) and len(times) >= 2, times  # a curve, not a single point
        assert times[-1] < 15 + 10, times  # stopped by the wall-clock budget (plus at most one step and a save)
        for point in run["points"]:
            for kind in ("tests-only", "supervised"):
                assert 0.0 <= point[kind]["pass@1"] <= 1.0

    control = out / "supervised-seed0"
    assert not events(control, "publish"), "the supervised-only control must not sample or publish"
    assert any(r.get("kind") == "learner" and "sl_nll" in r and "loss_rl" not in r for r in events(control))

    offline = out / "offline-seed0"
    publishes = events(offline, "publish")
    filled = events(offline, "offline_buffer_filled")
    assert len(publishes) == 1, "offline: only the starting policy is ever published"
    assert filled and filled[0]["accepted"] >= 24  # the quick setting's buffer capacity
    accepted = events(offline, "buffer_closed")[0]["buffer_accepted"]
    # Sampling stopped once the buffer was full: at most the batches in flight then were added after it.
    assert accepted <= filled[0]["accepted"] + 2 * 4 * 5, (accepted, filled)
    steps_after_fill = [r for r in events(offline) if r.get("kind") == "learner" and r["time"] > filled[0]["time"]]
    assert steps_after_fill, "the learner kept training on the fixed buffer"

    report = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "| supervised: supervised only (the control) |" in report and "Evaluation noise" in report
    assert (tmp_path / "docs" / "learning_curves.png").stat().st_size > 10_000
