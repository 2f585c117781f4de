"""`launch.py scale`: change the number of samplers (and sandbox workers) of a running job within seconds.

A removed sampler finishes its in-flight batch and pushes it to the buffer before it ends: nothing it generated
is lost.
"""
from __future__ import annotations

import argparse
import json
import sys

from cluster.connect import RunNotFound, add_connection_arguments, find_controller


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samplers", type=int, default=None, metavar="N", help="the new number of sampler actors")
    parser.add_argument("--sandbox-workers", type=int, default=None, metavar="M",
                        help="the new number of sandbox worker actors")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import ray

    if args.samplers is None and args.sandbox_workers is None:
        print("error: give --samplers N and/or --sandbox-workers M", file=sys.stderr)
        return 2
    for flag, value in (("--samplers", args.samplers), ("--sandbox-workers", args.sandbox_workers)):
        if value is not None and value < 0:
            print(f"error: {flag} must be >= 0, got {value}", file=sys.stderr)
            return 2
    try:
        controller = find_controller(args)
        result = ray.get(controller.scale.remote(args.samplers, args.sandbox_workers))
    except RunNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
