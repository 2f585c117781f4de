"""`launch.py status`: the live state of a running job: actors per role, weight version per sampler, buffer
fill, learner step and throughput."""
from __future__ import annotations

import argparse
import json
import sys

from cluster.connect import RunNotFound, add_connection_arguments, find_controller


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the raw status as JSON")


def format_status(s: dict) -> str:
    roles = ", ".join(f"{role} {n}" for role, n in s["actors"].items())
    lines = [
        f"run {s['run']}: {s['phase']}, learner step {s.get('step', 0)}, weight version {s.get('version', 0)}",
        f"actors: {roles}",
        f"buffer: {s['buffer']['size']}/{s['buffer']['capacity']} ({s['buffer']['unread']} unread, "
        f"staleness {s['buffer']['staleness_mean']:.2f} versions)",
        f"throughput: {s.get('samples_per_s', 0.0):.2f} samples/s, pass rate {s.get('pass_rate', 0.0):.3f}, "
        f"mean reward {s.get('mean_reward', 0.0):+.3f}",
    ]
    for name, version in sorted(s.get("sampler_versions", {}).items()):
        lines.append(f"  {name}: running weight version {version}")
    if s.get("waiting"):
        lines.append(f"waiting for {s['waiting']}")
    if s.get("learner_restarts"):
        lines.append(f"learner restarts: {s['learner_restarts']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import ray

    try:
        status = ray.get(find_controller(args).status.remote()).to_dict()
    except RunNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return 0
