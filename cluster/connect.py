"""Reaching a running job from another process: join its Ray cluster and find its controller by name."""
from __future__ import annotations

import argparse
from typing import Any


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="auto",
                        help="the Ray cluster of the running job (auto: the local one; ray://host:10001) [auto]")
    parser.add_argument("--run", default=None, metavar="NAME",
                        help="the run's name (run.name of its config); default: the only run in the namespace")
    parser.add_argument("--namespace", default="rltf", help="the Ray namespace of the run (run.namespace) [rltf]")


class RunNotFound(RuntimeError):
    pass


def find_controller(args: argparse.Namespace) -> Any:
    """Connect to the cluster and return the run's controller actor handle."""
    import ray
    from ray.util.state import list_actors

    ray.init(address=args.address, namespace=args.namespace, log_to_driver=False,
             logging_level="ERROR")
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
