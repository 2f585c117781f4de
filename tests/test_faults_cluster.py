"""A lost node on a real two-node Ray cluster on this machine: a head (controller, learner, buffer, sandbox) and a
second node started with `ray start --address`, its own temp dir and ports, and the only free `sampler_slot`, so
the sampler runs there. Its processes are SIGKILLed mid-run, twice:

1. the run waits (the learner pauses, the status line says for what) until the node is started again, and the
   sampler is restarted there;
2. the head's own `sampler_slot`, held so far by another job, is freed, and the sampler is restarted on the head.

The run then completes with every step, and the buffer has lost no trajectory it accepted.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_cluster_e2e import BIN, free_port, process_table, stop_processes_under, with_descendants
from tests.test_faults import FAST, WARM, assert_buffer_lost_nothing
from tests.test_loop import records, wait_for

pytestmark = pytest.mark.slow
STEPS = 24  # enough that the run cannot end between the node's two deaths
HOLD_HEAD_SLOT = """
import sys, ray
from ray.util.placement_group import placement_group
ray.init(address=sys.argv[1], log_to_driver=False)
held = placement_group([{"sampler_slot": 1, "node:__internal_head__": 0.001}])
ray.get(held.ready())
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin: then this job ends and Ray frees what it held
"""


class TwoNodes:
    def __init__(self, root: Path) -> None:
        self.gcs = f"127.0.0.1:{free_port()}"
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        # Each node's temp dir marks its processes, so a node is killed (and the cluster stopped) exactly.
        self.head_dir, self.node_dir = root / "head", root / "second"

    def ports(self) -> list[str]:
        names = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "runtime-env-agent-port")
        return [f"--{name}={free_port()}" for name in names]

    def ray_start(self, *args: str) -> None:
        out = subprocess.run(["ray", "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *self.ports(),
                              *args], env=self.env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            pytest.skip(f"ray start failed here: {out.stderr[-800:]}")

    def start_head(self) -> None:
        self.ray_start("--head", f"--port={self.gcs.split(':')[1]}", "--include-dashboard=false",
                       f"--ray-client-server-port={free_port()}", "--num-cpus=4",
                       '--resources={"sampler_slot": 1, "learner_slot": 1}', f"--temp-dir={self.head_dir}")

    def start_second(self) -> None:
        self.ray_start(f"--address={self.gcs}", "--num-cpus=1", '--resources={"sampler_slot": 1}',
                       f"--temp-dir={self.node_dir}")

    def lose_second(self) -> None:
        """The second node disappears: every process of it SIGKILLed at once, none told."""
        stop_processes_under(str(self.node_dir), signals=(signal.SIGKILL,))

    def sampler_node(self) -> str | None:
        """Which node's processes the run's sampler is among ("head" or "second"), or None if it runs nowhere."""
        table = process_table()
        for node, marker in (("head", str(self.head_dir)), ("second", str(self.node_dir))):
            roots = {pid for pid, (_, cmd) in table.items() if marker in cmd}
            if any(table[p][1].startswith("ray::Sampler") for p in with_descendants(roots, table)):
                return node
        return None

    def stop(self) -> None:
        for marker in (self.node_dir, self.head_dir):
            stop_processes_under(str(marker))
            shutil.rmtree(marker, ignore_errors=True)


@pytest.fixture
def cluster():
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("the ray command is not installed beside this Python")
    nodes = TwoNodes(Path(f"/tmp/rltf-nodes-{os.getpid()}"))
    try:
        nodes.start_head()
        nodes.start_second()
        yield nodes
    finally:
        nodes.stop()


def learner_step(run_dir: Path) -> int:
    return max((r["step"] for r in records(run_dir) if r.get("kind") == "learner"), default=0)


def accepted(run_dir: Path) -> int:
    return max((r["buffer_accepted"] for r in records(run_dir) if "buffer_accepted" in r), default=0)


def test_samplers_of_a_lost_node_come_back_on_the_restarted_node_then_on_the_head(cluster, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_HEAD_SLOT, cluster.gcs], env=cluster.env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    run_dir, log = tmp_path / "runs" / "nodeloss", tmp_path / "train.log"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "launch.py"), "train", "--address", cluster.gcs, *FAST, "--run.name=nodeloss",
         f"--run.output_dir={tmp_path / 'runs'}", f"--learner.total_steps={STEPS}", "--learner.checkpoint_every=0",
         "--sampler.resources={sampler_slot: 1}", "--learner.resources={learner_slot: 1}"],
        cwd=tmp_path, env=cluster.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: learner_step(run_dir) >= WARM + 2, 300, proc, log)
        assert cluster.sampler_node() == "second"

        # 1. The node is lost: the learner pauses, saying what it waits for, until the node is back.
        before = accepted(run_dir)
        cluster.lose_second()
        wait_for(lambda: "waiting for sampler-0 (" in log.read_text(), 60, proc, log)
        time.sleep(3)  # the status line can name the sampler (it stopped answering) a step before the fleet stalls
        paused_at = learner_step(run_dir)
        time.sleep(5)
        assert learner_step(run_dir) == paused_at, "the learner must wait for a sampler, not train on old data"
        assert cluster.sampler_node() is None
        cluster.start_second()
        wait_for(lambda: cluster.sampler_node() == "second" and learner_step(run_dir) > paused_at, 120, proc, log)
        assert accepted(run_dir) >= before

        # 2. Lost again; this time the head's own sampler slot is freed, and the sampler comes back there.
        before = accepted(run_dir)
        cluster.lose_second()
        holder.stdin.close()
        wait_for(lambda: cluster.sampler_node() == "head", 120, proc, log)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        holder.kill()

    recs = records(run_dir)
    assert learner_step(run_dir) == WARM + STEPS
    assert len([r for r in recs if r.get("event") == "sampler_restart"]) == 2
    assert_buffer_lost_nothing(recs, before)
