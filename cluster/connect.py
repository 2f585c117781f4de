"""Reaching Ray: the one place that starts an embedded local cluster or joins a running one, and finding a
running job's controller by name from another process.

Every command follows Ray's convention: inside a Ray job (or with ``RAY_ADDRESS`` set) it joins that cluster;
``--address local`` forces an embedded one."""
from __future__ import annotations

import argparse
import math
import os
from typing import Any

# Actor processes of an embedded cluster: no per-file progress bars from transformers / huggingface_hub in the run's
# log, and OpenMP threads that sleep when they run out of work instead of spinning. Samplers and the learner share
# the cores of one machine. Measured on 2 cores (a 32 RL + 32 supervised learner step in one process, 8 x 4 programs
# generated on one thread in another): a learner on 2 spinning threads beside the generator took 3.2-3.4 s a step
# (1.17 s alone) and slowed generation to 49 programs/s; on 2 passive threads 2.0-2.4 s (a 1-thread learner: 2.15 s)
# with generation at 60-81/s; alone, passive costs it 1.17 -> 1.42 s, still below 1 thread's 1.87 s
# (bench/results/profile.md; bench/profile_levers.py measures the rest).
WORKER_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
              "OMP_WAIT_POLICY": "PASSIVE"}
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a job's entrypoint


def resolve_address(address: str | None) -> str | None:
    """The Ray cluster a command joins, by Ray's own convention: ``address`` when given (``local``: an embedded
    cluster, even inside a job); else ``RAY_ADDRESS``, which `ray job submit` sets to the job's cluster for its
    entrypoint; else None (start an embedded local cluster)."""
    if address == "local":
        return None
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env.startswith(("http://", "https://")):
        return "auto"  # a dashboard URL (for the jobs API) names no GCS: Ray's job supervisor reads it as auto
    return env or None


def init_ray(address: str | None = None, namespace: str = "rltf", num_cpus: float = 0.0, *,
             log_to_driver: bool = True, **options: Any) -> bool:
    """Join the Ray cluster that `resolve_address` names (``auto``, ``host:port``, ``ray://host:10001``), or
    without one start an embedded local cluster. Returns False (and does nothing) when this process is already
    connected.

    The embedded cluster gets at least ``num_cpus`` logical CPUs (sandbox workers and the buffer idle most of the
    time, so a 2-core machine can host a whole actor graph that asks for more), binds to 127.0.0.1 only, and is
    always a new one (``address="local"``), even when `ray start` left another cluster on this machine."""
    import ray

    if ray.is_initialized():
        return False
    target = resolve_address(address)
    if target:
        ray.init(address=target, namespace=namespace, log_to_driver=log_to_driver, **options)
    else:
        # Forced local inside a job: the job's runtime env (a working-dir package held by the job's cluster) would
        # be applied to this cluster's actors, which cannot fetch it.
        os.environ.pop(JOB_CONFIG_ENV, None)
        ray.init(address="local", _node_ip_address="127.0.0.1", namespace=namespace,
                 num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus)), include_dashboard=False,
                 log_to_driver=log_to_driver, runtime_env={"env_vars": WORKER_ENV}, **options)
    return True


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="the Ray cluster of the running job (host:port, ray://host:10001); default: RAY_ADDRESS, "
                             "else the cluster started on this machine (auto)")
    parser.add_argument("--run", default=None, metavar="NAME",
                        help="the run's name (run.name of its config); default: the only run in the namespace")
    parser.add_argument("--namespace", default="rltf", help="the Ray namespace of the run (run.namespace) [rltf]")


class RunNotFound(RuntimeError):
    pass


def find_controller(args: argparse.Namespace) -> Any:
    """Connect to the cluster and return the run's controller actor handle."""
    import ray
    from ray.util.state import list_actors

    init_ray(resolve_address(args.address) or "auto", args.namespace, log_to_driver=False, logging_level="ERROR")
    names = sorted(a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
                   if a.name and a.name.endswith(":controller") and (a.ray_namespace or args.namespace) == args.namespace)
    if args.run:
        wanted = f"{args.run}:controller"
        if wanted not in names:
            raise RunNotFound(f"no running job named {args.run!r} in namespace {args.namespace!r} "
                              f"(running: {', '.join(n.split(':')[0] for n in names) or 'none'})")
        names = [wanted]
    if not names:
        raise RunNotFound(f"no running RLTF job in namespace {args.namespace!r} on this cluster")
    if len(names) > 1:
        raise RunNotFound(f"several runs are live ({', '.join(n.split(':')[0] for n in names)}): choose one with --run")
    return ray.get_actor(names[0], namespace=args.namespace)
