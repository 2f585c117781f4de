"""End to end on a real Ray cluster started with `ray start --head` on 127.0.0.1: submit the smoke run with
`ray job submit` as a user would (no --address: the job's driver joins the job's cluster, no second Ray starts;
run.storage outside the job's working directory), scale samplers 1 -> 2 -> 1 while it runs, read the project's
metrics from the metrics endpoint, kill a sampler and the buffer actor, see the job succeed and find its
checkpoint, metrics (held-out pass@1 over steps) and plots in the storage afterwards. The same run without
run.storage refuses to write into the job's temporary working directory."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_metrics import promised_metrics

pytestmark = pytest.mark.slow
RUN = "e2e"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*args: str, env: dict, timeout: float = 120, check: bool = True) -> str:
    out = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("the ray command is not installed beside this Python")
    gcs, dash, metrics = free_port(), free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", "OMP_NUM_THREADS": "1",
           "RAY_ADDRESS": f"127.0.0.1:{gcs}"}
    # A temp dir of its own marks this cluster's processes, so the teardown stops exactly them (`ray stop` would
    # stop every Ray cluster on the machine).
    temp_dir = Path(f"/tmp/rltf-e2e-{os.getpid()}")
    start = subprocess.run(
        ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--metrics-export-port={metrics}", "--num-cpus=6", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        env=env, capture_output=True, text=True, timeout=180)
    if start.returncode != 0:
        pytest.skip(f"Ray cannot start a head node here: {start.stderr[-500:]}")
    try:
        yield {"env": env, "gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}", "metrics": metrics,
               "out": tmp_path_factory.mktemp("e2e")}
    finally:
        stop_processes_under(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_processes_under(marker: str) -> None:
    """SIGTERM, then SIGKILL, every process whose command line names ``marker`` (this cluster's temp dir) and
    all their descendants (actor workers and agents rename themselves `ray::...`)."""
    def processes() -> dict[int, tuple[int, str]]:
        table = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    table[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes().decode(errors="replace"))
                except (OSError, IndexError, ValueError):
                    pass
        return table

    table = processes()
    doomed = {pid for pid, (_, cmd) in table.items() if marker in cmd and pid != os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in doomed} - doomed
        grew = bool(children)
        doomed |= children
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in doomed:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        while any(running(pid) for pid in doomed) and time.time() < deadline:
            time.sleep(0.5)


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def control(cluster, *args: str) -> str:
    return sh(sys.executable, str(REPO_ROOT / "launch.py"), *args, "--address", cluster["gcs"], env=cluster["env"])


def status(cluster) -> dict:
    return json.loads(control(cluster, "status", "--json"))


def alive(cluster, class_name: str) -> list[dict]:
    out = sh("ray", "list", "actors", "--address", cluster["gcs"], "--format", "json", "--limit", "1000",
             "--filter", f"class_name={class_name}", "--filter", "state=ALIVE", env=cluster["env"])
    return [] if out.strip().startswith("No resource") else json.loads(out)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired) as exc:
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def job_status(cluster, job_id: str) -> str:
    out = subprocess.run(["ray", "job", "status", "--address", cluster["dashboard"], job_id], env=cluster["env"],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    running = re.search(r"Status for job '[^']+': (\w+)", text)  # PENDING / RUNNING
    ended = re.search(r"Job '[^']+' (succeeded|failed|was stopped|stopped)", text)
    if ended:
        return {"succeeded": "SUCCEEDED", "failed": "FAILED"}.get(ended.group(1), "STOPPED")
    return running.group(1) if running else "UNKNOWN"


def submit_job(cluster, *train_args: str) -> str:
    """`ray job submit` of `launch.py train` as the README shows it (no --address); returns the job id."""
    submit = ["ray", "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(REPO_ROOT), "--no-wait",
              "--", "python", "launch.py", "train", "--config", "smoke", *train_args]

    def submitted():
        # A head node that has just started may not have its job agent yet ("No available agent"): retry.
        out = subprocess.run(submit, env=cluster["env"], capture_output=True, text=True, timeout=120)
        if out.returncode == 0:
            return re.search(r"(raysubmit_\w+)", out.stdout + out.stderr).group(1)
        if "No available agent" not in out.stdout + out.stderr:
            raise AssertionError(f"ray job submit failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        return None
    # Under load the head's job agent has been seen to take minutes to come up.
    return wait_until(submitted, 360, "the job agent to accept the submission")


def job_end(cluster, job_id: str, timeout: float) -> tuple[str, str]:
    """The job's final status and its logs."""
    final = wait_until(lambda: job_status(cluster, job_id) in ("SUCCEEDED", "FAILED", "STOPPED")
                       and job_status(cluster, job_id), timeout, "the job to end")
    return final, sh("ray", "job", "logs", "--address", cluster["dashboard"], job_id, env=cluster["env"], check=False)


def test_job_submit_scale_metrics_and_faults(cluster):
    env, storage = cluster["env"], cluster["out"]
    # Without run.storage the outputs would land in the job's working directory: refused before Ray is touched.
    refused = submit_job(cluster, "--run.name=refused")
    job_id = submit_job(cluster, f"--run.name={RUN}", f"--run.storage={storage}", "--learner.total_steps=40",
                        "--run.log_every_s=1")
    try:
        wait_until(lambda: status(cluster)["phase"] == "rl", 240, "the RL phase")
        wait_until(lambda: len(alive(cluster, "Sampler")) == 1, 60, "the first sampler")
        assert len(alive(cluster, "LearnerRank")) == 1  # the run's actors live on this cluster

        control(cluster, "scale", "--samplers", "2")
        wait_until(lambda: len(alive(cluster, "Sampler")) == 2, 60, "a second sampler")
        control(cluster, "scale", "--samplers", "1")
        wait_until(lambda: len(alive(cluster, "Sampler")) == 1, 60, "back to one sampler")
        control(cluster, "scale", "--sandbox-workers", "2")
        wait_until(lambda: len(alive(cluster, "SandboxWorker")) == 2, 60, "a second sandbox worker")
        control(cluster, "scale", "--sandbox-workers", "1")
        wait_until(lambda: len(alive(cluster, "SandboxWorker")) == 1, 120, "back to one sandbox worker")

        # Every metric that cluster/metrics.py, the dashboard or the README names has a sample on the endpoint.
        promised, seen = promised_metrics(), set()

        def project_metrics():
            with urllib.request.urlopen(f"http://127.0.0.1:{cluster['metrics']}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            seen.update(re.findall(r"^(ray_rltf_\w+?)(?:_bucket|_count|_sum)?\{", text, re.M))
            assert promised <= seen, f"missing: {sorted(promised - seen)}"
            return True
        wait_until(project_metrics, 120, "every project metric on the metrics endpoint")

        before = status(cluster)["buffer"]["accepted"]
        sampler_pid = alive(cluster, "Sampler")[0]["pid"]
        os.kill(sampler_pid, signal.SIGKILL)
        buffer_pid = alive(cluster, "OnlineBuffer")[0]["pid"]
        os.kill(buffer_pid, signal.SIGKILL)
        wait_until(lambda: [a for a in alive(cluster, "OnlineBuffer") if a["pid"] != buffer_pid], 60,
                   "the buffer to come back")
        # The restarted buffer holds everything it had acknowledged before it was killed.
        assert status(cluster)["buffer"]["accepted"] >= before

        final, logs = job_end(cluster, job_id, 400)
        assert final == "SUCCEEDED", logs[-3000:]
    finally:
        sh("ray", "job", "stop", "--address", cluster["dashboard"], job_id, env=env, check=False)
    assert "Started a local Ray instance" not in logs  # the driver joined the job's cluster
    final, refused_logs = job_end(cluster, refused, 120)
    assert final == "FAILED" and "working directory" in refused_logs and "set run.storage" in refused_logs
    assert "Started a local Ray instance" not in refused_logs and not (storage / "refused").exists()

    # The run's outputs are in its storage after the job (and its working directory) are gone.
    run_dir = storage / RUN
    # the job's cluster (its GCS port; Ray reports the node's own address for 127.0.0.1)
    assert (run_dir / "ray_address").read_text().strip().endswith(":" + cluster["gcs"].rpartition(":")[2])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert Path(summary["model_dir"], "config.json").is_file() and Path(summary["checkpoint"]).parent == run_dir / "checkpoints"
    assert (Path(summary["checkpoint"]) / "state.json").is_file() and (run_dir / "plots" / "training.png").is_file()
    assert any((run_dir / "tensorboard").iterdir())
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    heldout = [e for e in events if e.get("kind") == "eval"]  # held-out pass@1 over steps: RL start, ..., the end
    assert len({e["step"] for e in heldout}) >= 3 and heldout[-1]["step"] == summary["step"]
    assert all(0 <= e["eval_pass@1"] <= 1 and 0 <= e["eval_pass@1_greedy"] <= 1 for e in heldout)
    kinds = [e.get("event") for e in events if e.get("kind") == "event"]
    assert "sampler_restart" in kinds
    scales = [(e["samplers"], e["sandbox_workers"]) for e in events if e.get("event") == "scale"]
    assert scales == [(2, 1), (1, 1), (1, 2), (1, 1)]
