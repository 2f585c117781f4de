"""The whole actor-learner loop on a real local Ray with real DeepSpeed, sandbox and a tiny real model:
a run completes, survives a sampler killed mid-run, checkpoints, and resumes without losing buffered data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

WARM, STEPS, MORE = 20, 14, 6
OVERRIDES = [
    "--run.name=looptest", "--run.log_every_s=1", "--data.limit=24", f"--learner.warm_start_steps={WARM}",
    f"--learner.total_steps={STEPS}", "--learner.checkpoint_every=7", "--learner.batch_size=8",
    "--learner.supervised_batch_size=8", "--buffer.min_fill=8", "--sampler.problems_per_batch=2",
    "--learner.publish_every=1",
]


def train(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "launch.py"), "train", *args], cwd=cwd,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training exited early with {proc.returncode}:\n{log.read_text()[-3000:]}")
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"timed out waiting; log:\n{log.read_text()[-3000:]}")


def kill_sampler(run_dir: Path, name: str) -> int:
    """SIGKILL the sampler's process, found by its actor name through a second Ray driver. That driver runs in a
    process of its own: joining a cluster by address sends the cluster's token only when RAY_AUTH_MODE=token is
    set before Ray loads (Ray 2.60 token authentication)."""
    script = ("import ray, sys; ray.init(address=sys.argv[1], namespace='rltf', log_to_driver=False); "
              "print(ray.get(ray.get_actor(sys.argv[2]).status.remote(), timeout=30).pid)")
    address = (run_dir / "ray_address").read_text().strip()
    out = subprocess.run([sys.executable, "-c", script, address, name], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=180, env={**os.environ, "RAY_AUTH_MODE": "token"})
    assert out.returncode == 0, out.stderr[-3000:]
    pid = int(out.stdout.strip().splitlines()[-1])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_run_survives_sampler_kill_then_resumes_with_buffer(tmp_path):
    run_dir = tmp_path / "runs" / "looptest"
    log = tmp_path / "train.log"
    proc = train(["--config", "smoke", *OVERRIDES], tmp_path, log)
    wait_for(lambda: any(r.get("kind") == "learner" and r["step"] >= WARM + 2 for r in records(run_dir)), 240,
             proc, log)
    kill_sampler(run_dir, "looptest:sampler-0")
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    recs = records(run_dir)
    events = [r["event"] for r in recs if r.get("kind") == "event"]
    assert "sampler_restart" in events, "the controller must restart the killed sampler's loop"
    learner = [r for r in recs if r.get("kind") == "learner"]
    assert learner[-1]["step"] == WARM + STEPS
    versions = [r["version"] for r in recs if r.get("event") == "publish"]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= STEPS
    # Samplers run new weights within seconds of each push.
    syncs = [r["weight_sync_s"] for r in learner if r.get("weight_sync_s") is not None]
    assert syncs and max(syncs) < 30
    summary = json.loads((run_dir / "summary.json").read_text())
    assert Path(summary["model_dir"], "config.json").is_file()
    assert (run_dir / "plots" / "training.png").stat().st_size > 10_000
    closed = [r for r in recs if r.get("event") == "buffer_closed"][-1]
    assert closed["buffer_size"] > 0

    # What writers killed half-way leave behind (a partial folder, a folder without its state.json) is never
    # resumed from, even at a later step.
    (run_dir / "checkpoints" / "step_000099.partial-dead" / "hf").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_000098" / "deepspeed").mkdir(parents=True)
    proc = train(["--resume", str(run_dir), f"--learner.total_steps={STEPS + MORE}"], tmp_path, tmp_path / "resume.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    recs = records(run_dir)
    resumed = [r for r in recs if r.get("event") == "resumed"][-1]
    assert resumed["step"] == WARM + STEPS
    # Everything the buffer had accepted is back, trajectory for trajectory (sequence numbers).
    assert (resumed["buffer_size"], resumed["buffer_seq_sum"], resumed["buffer_accepted"]) == (
        closed["buffer_size"], closed["buffer_seq_sum"], closed["buffer_accepted"])
    learner = [r for r in recs if r.get("kind") == "learner"]
    assert learner[-1]["step"] == WARM + STEPS + MORE
    assert not any(r.get("kind") == "warm_start" and r["time"] > resumed["time"] for r in recs), \
        "a resumed run must not repeat the warm start"


def test_collective_weight_transport_drives_two_samplers_and_writes_to_uri_storage(tmp_path):
    """The second transport: a torch.distributed broadcast group of learner rank 0 and the samplers. The run's
    storage is a URI (file://, through pyarrow.fs as s3:// would be): every output is uploaded there."""
    run_dir = tmp_path / "store" / "collective"
    log = tmp_path / "train.log"
    proc = train(["--config", "smoke", "--run.name=collective", "--data.limit=24", "--learner.warm_start_steps=10",
                  "--learner.total_steps=6", "--learner.publish_every=1", "--learner.batch_size=8",
                  "--buffer.min_fill=8", "--sampler.problems_per_batch=2", "--sampler.num_samplers=2",
                  "--weights.transport=collective", "--learner.checkpoint_every=0", "--eval.every_steps=3",
                  "--eval.limit=4", f"--run.storage=file://{tmp_path / 'store'}"], tmp_path, log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    assert not (tmp_path / "runs").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["checkpoint"] == f"file://{run_dir}/checkpoints/step_000016"
    assert (run_dir / "checkpoints" / "step_000016" / "state.json").is_file()
    assert (run_dir / "checkpoints" / "step_000016" / "buffer.snapshot.pkl").is_file()
    assert (run_dir / "checkpoints" / "step_000016" / "hf" / "config.json").is_file()
    assert (run_dir / "plots" / "training.png").is_file() and (run_dir / "config.yaml").is_file()
    recs = records(run_dir)
    heldout = [r for r in recs if r.get("kind") == "eval"]
    # From RL start to the end, every 3 RL steps (or as soon as the previous one is done), each at the learner step
    # of the weights the samplers evaluated
    steps = [r["step"] for r in heldout]
    assert len(steps) >= 2 and steps == sorted(set(steps)) and 10 <= steps[0] < 16 and steps[-1] == 16
    groups = [r for r in recs if r.get("event") == "weight_group"]
    assert groups and groups[0]["members"] == 2
    versions = [r["version"] for r in recs if r.get("event") == "publish"]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 6
    learner = [r for r in recs if r.get("kind") == "learner"]
    running = [v for r in learner for v in r.get("sampler_versions", {}).values()]
    assert running and max(running) >= 2, "samplers must run weights received over the broadcast"
