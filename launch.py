"""The command line of the RLTF system: one entry point, one subcommand per job.

Each subcommand lives in the package that owns its job and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them, importing lazily so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported only when their subcommand runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train.command", "run online RLTF training (on the Ray job's cluster, or an embedded local Ray)"),
    "plan": ("train.plan", "print where each actor would go and each GPU's memory estimate; refuse what cannot fit"),
    "eval": ("evaluation.command", "sample programs from a model (or take a samples file), grade them in the sandbox, "
                                   "report pass@k"),
    "scale": ("cluster.scale", "change the number of samplers / sandbox workers of a running job"),
    "status": ("cluster.status", "print the live state of a running job"),
    "execute": ("sandbox.cli", "grade programs against problems' unit tests in the sandbox (JSONL in, JSONL out)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rltf",
        description="RLTF: online reinforcement learning of code models from unit-test feedback, on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra:
        # Subcommands that take config overrides (--section.key=value) declare an `overrides` default.
        if not hasattr(args, "overrides") or any(not (a.startswith("--") and "=" in a) for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    module = importlib.import_module(args._module)
    if args.command == "execute" and args.rewards:
        # The reward fields come from rewards/, which depends on the sandbox (the sandbox never imports it).
        from rewards import verdict_rewards

        return int(module.run(args, annotate=verdict_rewards) or 0)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
