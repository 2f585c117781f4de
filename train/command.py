"""`launch.py train`: start (or join) Ray, start the controller, print progress, report the result.

Without ``--address`` an embedded local Ray is started and torn down; with ``--address auto`` (inside
``ray job submit``) or ``ray://host:10001`` the run joins that cluster.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from learner.checkpoints import RunCheckpoints
from train.status import Phase, Progress, RunSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="local", help="a preset name (configs/*.yaml) or a YAML file [local]")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (auto, ray://host:10001); default: start an embedded local Ray")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its latest checkpoint, buffer included")
    parser.set_defaults(overrides=[])
    parser.epilog = "Any --section.key=value argument overrides the config, e.g. --learner.lr=1e-5 --sampler.num_samplers=2"


def resolve_run_dir(cfg, resume: str | None) -> Path:
    if resume:
        return Path(resume)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    if run_dir.exists() and any(run_dir.iterdir()):
        run_dir = run_dir.with_name(f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return run_dir


def cpus_needed(cfg) -> float:
    from cluster.placement import run_actors

    return sum(dict(actor.request).get("CPU", 0.0) for actor in run_actors(cfg))


def format_progress(p: Progress) -> str:
    """One line of progress: the learner's loss while there is no sampling, else sampling, buffer and weights."""
    if p.sampling is None:
        if p.phase in (Phase.WARM_START.value, Phase.SUPERVISED.value) and "sl_nll" in p.learner:
            return (f"[{p.phase.replace('_', ' ')}] step {p.step} sl_nll {p.learner['sl_nll']:.3f} "
                    f"lr {p.learner.get('lr', 0):.2e}")
        return f"[{p.phase}]"
    s, loss = p.sampling, p.learner.get("loss_rl")
    versions = ",".join(str(v) for v in s.sampler_versions.values())
    sync = f", sync {s.weight_sync_s:.2f}s" if s.weight_sync_s is not None else ""
    return (
        f"[{p.phase}] step {p.step} | v{p.version} (samplers: {versions or '-'}{sync}) | "
        f"{s.samples_per_s:.1f} samples/s | pass {s.pass_rate:.3f} | reward {s.mean_reward:+.3f} | "
        f"buffer {s.buffer_size}/{s.buffer_capacity} | lag {s.policy_lag:.2f} | "
        f"loss {'-' if loss is None else f'{loss:+.4f}'}"
    )


def run_controller(cfg, run_dir: Path, resume: bool = False, teardown: bool = False) -> RunSummary:
    """Run one training run on the connected Ray cluster, printing its progress lines; returns its summary.
    ``teardown``: end the run's actors afterwards (for several runs on one cluster, as bench/learning.py does)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from train.controller import Controller

    here = ray.get_runtime_context().get_node_id()
    controller = ray.remote(Controller).options(
        name=f"{cfg.run.name}:controller", num_cpus=0, max_concurrency=32,
        # The controller writes the run directory: keep it on this (the driver's) node.
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(cfg, str(Path(run_dir).resolve()), resume)
    done = controller.run.remote()
    last = ""
    try:
        while True:
            ready, _ = ray.wait([done], timeout=cfg.run.log_every_s)
            if ready:
                break
            try:
                line = format_progress(ray.get(controller.progress.remote(), timeout=10))
            except ray.exceptions.GetTimeoutError:
                continue
            if line != last:
                print(line, flush=True)
                last = line
        summary = ray.get(done)
    finally:
        if teardown:
            try:
                ray.get(controller.teardown.remote(), timeout=60)
            except ray.exceptions.RayError:
                pass
            ray.kill(controller, no_restart=True)
    if format_progress(summary.progress) != last:
        print(format_progress(summary.progress), flush=True)
    return summary


def run(args: argparse.Namespace) -> int:
    import ray

    from cluster.connect import init_ray
    from configs import ConfigError, load_config

    try:
        if args.resume:
            saved = Path(args.resume) / "config.yaml"
            if not saved.is_file():
                print(f"error: --resume {args.resume}: no config.yaml there (not a run directory)", file=sys.stderr)
                return 2
            cfg = load_config(str(saved), args.overrides)
        else:
            cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = resolve_run_dir(cfg, args.resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {run_dir}", flush=True)

    init_ray(args.address, cfg.run.namespace, cpus_needed(cfg))
    address = ray.get_runtime_context().gcs_address
    (run_dir / "ray_address").write_text(address + "\n")
    print(f"Ray cluster {address}: watch or resize this run with "
          f"`python launch.py status|scale --address {address} --run {cfg.run.name}`", flush=True)
    try:
        summary = run_controller(cfg, run_dir, resume=bool(args.resume))
    except ray.exceptions.RayError as exc:
        print(exc, file=sys.stderr)
        lines = [l for l in str(exc).splitlines() if l.strip()]
        print(f"\nerror: the run stopped: {lines[-1].strip()[:500] if lines else type(exc).__name__}\n"
              "(full traceback above and in the Ray logs)", file=sys.stderr)
        if RunCheckpoints(run_dir).latest() is not None:
            print(f"continue from the last checkpoint with: python launch.py train --resume {run_dir}",
                  file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    record = summary.to_dict()
    print("summary:", json.dumps({k: record[k] for k in ("step", "version", "samples", "pass_rate", "mean_reward",
                                                         "checkpoint", "model_dir", "plots")}, indent=2, default=str))
    return 0
