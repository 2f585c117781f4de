"""The Ray sandbox pool on a real local Ray: verdicts in order, a killed worker replaced and its jobs retried,
and jobs on a worker that keeps dying reported as infra errors (never as program failures)."""
from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from cluster.connect import init_ray  # noqa: E402
from configs.schema import SandboxConfig  # noqa: E402
from sandbox.pool import RaySandboxPool, SandboxWorker, create_sandbox_workers  # noqa: E402
from tasks.problem import Problem  # noqa: E402
from tasks.problem import TestSuite as Suite  # noqa: E402  (aliased: pytest would try to collect Test*)

LIMITS = SandboxConfig(test_timeout_s=2.0, program_timeout_s=5.0)
ADD = Problem(problem_id="add", source="test", prompt="", tests=Suite(kind="assert", cases=[
    "assert add(1, 2) == 3", "assert add(2, 2) == 4"]))
GOOD, BAD = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return 0\n"


@pytest.fixture(scope="module")
def ray_local():
    init_ray(None, "sandbox-test", num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_pool_grades_in_order_and_survives_dead_workers(ray_local):
    handles = create_sandbox_workers(2, LIMITS, name_prefix="sandbox-test-", namespace="sandbox-test")
    assert ray.get_actor("sandbox-test-0", namespace="sandbox-test") is not None
    info = ray.get(handles[0].info.remote())
    pool = RaySandboxPool(handles, LIMITS, batch_size=3, name_prefix="sandbox-test-", namespace="sandbox-test")
    jobs = [(ADD, GOOD if i % 3 else BAD) for i in range(20)]
    verdicts = pool.run(jobs)
    assert [v.outcome for v in verdicts] == ["failed" if i % 3 == 0 else "passed" for i in range(20)]

    # Kill one worker: it is replaced and the pool keeps grading correctly.
    ray.kill(pool.handles[0], no_restart=True)
    verdicts = pool.run(jobs)
    assert [v.outcome for v in verdicts] == ["failed" if i % 3 == 0 else "passed" for i in range(20)]
    assert pool.replaced >= 1
    assert ray.get(pool.handles[0].info.remote())["actor_pid"] != info["actor_pid"]


@ray.remote
class _AlwaysDying:
    """Stands in for a worker whose process dies on every batch (e.g. its node keeps failing)."""

    def run_batch(self, jobs, use_grading_tests=False):
        import os

        os._exit(1)


@pytest.mark.slow
def test_jobs_on_a_worker_dying_twice_become_infra_errors(ray_local, monkeypatch):
    import sandbox.pool as pool_module

    monkeypatch.setattr(pool_module, "_create_one", lambda *a, **k: _AlwaysDying.remote())
    pool = RaySandboxPool([_AlwaysDying.remote()], LIMITS, batch_size=4)
    verdicts = pool.run([(ADD, GOOD)] * 6)
    assert [v.outcome for v in verdicts] == ["infra_error"] * 6
    assert all(v.error.type == "SandboxFailure" for v in verdicts)
    assert pool.replaced >= 2


@pytest.mark.slow
def test_worker_actor_runs_with_isolation(ray_local):
    worker = ray.remote(SandboxWorker).options(num_cpus=0).remote(LIMITS)
    verdicts = ray.get(worker.run_batch.remote([(ADD, GOOD), (ADD, "import os\ndef add(a, b): os._exit(3)")]))
    assert [v.outcome for v in verdicts] == ["passed", "runtime_error"] and verdicts[1].reason == "exit"
    ray.kill(worker)


@pytest.mark.slow
def test_pool_reports_isolation_and_stops_when_workers_cannot_isolate(ray_local, tmp_path, monkeypatch):
    """A run records its isolation level; workers that cannot isolate programs stop it with their explanation
    instead of grading (or being retried as dead workers)."""
    from sandbox.isolation import SandboxUnavailable

    pool = RaySandboxPool(create_sandbox_workers(1, LIMITS), LIMITS)
    assert pool.isolation_level().split("+")[0] in ("namespaces", "userns")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "unshare").write_text("#!/bin/sh\necho 'unshare: Operation not permitted' >&2\nexit 1\n")
    (fake / "unshare").chmod(0o755)
    refused = ray.remote(SandboxWorker).options(num_cpus=0, runtime_env={"env_vars": {"PATH": f"{fake}:/usr/bin:/bin"}})
    pool = RaySandboxPool([refused.remote(LIMITS)], LIMITS)
    with pytest.raises(SandboxUnavailable, match="cannot isolate programs"):
        pool.run([(ADD, GOOD)])
    with pytest.raises(SandboxUnavailable, match="isolation=none"):
        pool.isolation_level()
    assert pool.replaced == 0
    import sandbox.pool as pool_module

    monkeypatch.setattr(pool_module, "_create_one", lambda *a, **k: refused.remote(LIMITS))
    with pytest.raises(SandboxUnavailable, match="cannot isolate programs"):
        create_sandbox_workers(2, LIMITS)
