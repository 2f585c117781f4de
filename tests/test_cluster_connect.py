"""Ray's conventions for drivers: every command joins the cluster of the job it runs in (RAY_ADDRESS, which
`ray job submit` sets), `--address local` forces an embedded one; and a run never writes its outputs into a job's
temporary working directory (tests/test_cluster_e2e.py shows both on a real `ray start` cluster)."""
from __future__ import annotations

import subprocess
import sys

from cluster.connect import resolve_address
from cluster.storage import in_job_working_dir
from tests.conftest import REPO_ROOT


def test_commands_join_the_cluster_that_ray_address_names(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None  # no cluster named: an embedded one
    assert resolve_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")  # inside a job's entrypoint
    assert resolve_address(None) == "10.0.0.7:6379"
    assert resolve_address("local") is None
    assert resolve_address("ray://head:10001") == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # the jobs API's address names no GCS
    assert resolve_address(None) == "auto"


def test_a_run_whose_outputs_fall_into_a_job_working_dir_refuses_to_start(tmp_path):
    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    assert in_job_working_dir(str(job_dir / "runs" / "smoke"))
    assert not in_job_working_dir(str(tmp_path / "runs")) and not in_job_working_dir("s3://bucket/runtime_resources")
    job_dir.mkdir(parents=True)
    out = subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), "train", "--config", "smoke",
                          "--address", "local"], cwd=job_dir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "working directory" in out.stderr and "set run.storage" in out.stderr
    assert "Ray" not in out.stdout and not (job_dir / "runs").exists()  # refused before Ray or any output
