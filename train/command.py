"""`launch.py train`: start (or join) Ray, start the controller, print progress, report the result.

Inside a Ray job (``ray job submit``) or with ``RAY_ADDRESS`` set the run joins that cluster, as every Ray driver
does; ``--address host:port`` or ``ray://host:10001`` names another; otherwise (or with ``--address local``) an
embedded local Ray is started and torn down (`cluster.connect`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cluster.storage import RunStorage, in_job_working_dir, is_uri, join
from learner.checkpoints import RunCheckpoints
from train.status import Phase, Progress, RunSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="local", help="a preset name (configs/*.yaml) or a YAML file [local]")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (auto, host:port, ray://host:10001); default: the job's cluster "
                             "inside `ray job submit` or RAY_ADDRESS, else an embedded local Ray (also: local)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR (a path or a run.storage URI) from its latest whole "
                             "checkpoint, buffer included")
    parser.set_defaults(overrides=[])
    parser.epilog = "Any --section.key=value argument overrides the config, e.g. --learner.lr=1e-5 --sampler.num_samplers=2"


def resolve_run_location(cfg, resume: str | None) -> str:
    """The run's folder in its storage (`run.storage`, else `run.output_dir`): ``<root>/<run.name>``, or with a
    time suffix when that folder already holds something; ``--resume`` names it."""
    if resume:
        return resume
    location = join(cfg.run.storage or cfg.run.output_dir, cfg.run.name)
    if RunStorage(location).list():
        location = f"{location}-{time.strftime('%Y%m%d-%H%M%S')}"
    return location if is_uri(location) else str(Path(location).resolve())


def outputs_refused(location: str) -> str | None:
    """Why the run may not write to ``location`` (None when it may)."""
    if in_job_working_dir(location):
        return (f"the run's outputs would go to {location}, inside this Ray job's temporary working directory, "
                "which Ray deletes when the job ends (and which other nodes do not see): set run.storage to a "
                "shared path or a URI, e.g. --run.storage=/mnt/shared/runs or --run.storage=s3://bucket/runs")
    return None


def load_run_config(args: argparse.Namespace):
    """The config of a new run (``--config`` and overrides) or of the run being resumed (its saved config.yaml,
    read from its storage, plus overrides)."""
    import tempfile

    from configs import load_config

    if not args.resume:
        return load_config(args.config, args.overrides)
    storage = RunStorage(args.resume)
    if not storage.exists("config.yaml"):
        raise FileNotFoundError(f"--resume {args.resume}: no config.yaml there (not a run directory)")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp, "config.yaml")
        saved.write_bytes(storage.read_bytes("config.yaml"))
        return load_config(str(saved), args.overrides)


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
    def score(key: str) -> str:
        value = p.heldout.get(key)
        return "-" if value is None else f"{value:.3f}"
    heldout = (f" | held-out pass@1 {score('eval_pass@1')} (greedy {score('eval_pass@1_greedy')}, "
               f"step {p.heldout['step']})" if p.heldout else "")
    return (
        f"[{p.phase}] step {p.step} | v{p.version} (samplers: {versions or '-'}{sync}) | "
        f"{s.samples_per_s:.1f} samples/s | pass {s.pass_rate:.3f} | reward {s.mean_reward:+.3f} | "
        f"buffer {s.buffer_size}/{s.buffer_capacity} | lag {s.policy_lag:.2f} | "
        f"loss {'-' if loss is None else f'{loss:+.4f}'}{heldout}"
    )


def run_controller(cfg, run_dir: str | Path, resume: bool = False, teardown: bool = False) -> RunSummary:
    """Run one training run on the connected Ray cluster, printing its progress lines; returns its summary.
    ``run_dir``: the run's folder (a path or a URI). ``teardown``: end the run's actors afterwards (for several
    runs on one cluster, as bench/learning.py does)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from train.controller import Controller

    here = ray.get_runtime_context().get_node_id()
    controller = ray.remote(Controller).options(
        name=f"{cfg.run.name}:controller", num_cpus=0, max_concurrency=32,
        # The controller writes the run's log: keep it on this (the driver's) node.
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(cfg, str(run_dir) if is_uri(str(run_dir)) else str(Path(run_dir).resolve()), resume)
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
    from configs import ConfigError

    try:
        cfg = load_run_config(args)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    location = resolve_run_location(cfg, args.resume)
    refused = outputs_refused(location)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    storage = RunStorage(location)
    print(f"run directory: {location}", flush=True)

    init_ray(args.address, cfg.run.namespace, cpus_needed(cfg))
    address = ray.get_runtime_context().gcs_address
    storage.write_text("ray_address", address + "\n")
    print(f"Ray cluster {address}: watch or resize this run with "
          f"`python launch.py status|scale --address {address} --run {cfg.run.name}`", flush=True)
    try:
        summary = run_controller(cfg, location, resume=bool(args.resume))
    except ray.exceptions.RayError as exc:
        print(exc, file=sys.stderr)
        lines = [l for l in str(exc).splitlines() if l.strip()]
        print(f"\nerror: the run stopped: {lines[-1].strip()[:500] if lines else type(exc).__name__}\n"
              "(full traceback above and in the Ray logs)", file=sys.stderr)
        if RunCheckpoints(storage).latest() is not None:
            print(f"continue from the last checkpoint with: python launch.py train --resume {location}",
                  file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    record = summary.to_dict()
    print("summary:", json.dumps({k: record[k] for k in ("step", "version", "samples", "pass_rate", "mean_reward",
                                                         "checkpoint", "model_dir", "plots")}, indent=2, default=str))
    return 0
