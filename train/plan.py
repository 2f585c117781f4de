"""`launch.py plan`: where every actor of a run would go and how much of each GPU it would use, before anything loads.

    python launch.py plan --config codet5-apps --node CPU=96,GPU=8 --gpu-memory-gb 40
    python launch.py plan --config codegen-apps-cluster --cluster cluster/cluster.yaml
    python launch.py plan --config codet5-apps --address auto          # the nodes of a running cluster

Placement is the dry run of `cluster.placement` (the same resources the run asks Ray for); memory is
`learner.memory` for each learner rank (with DeepSpeed's own estimator beside it) and `models.architecture` for the
samplers' and eval actors' weights and KV cache. A placement that cannot be made, that puts two learner ranks on
one GPU, or whose estimate exceeds a GPU's memory is refused (exit status 1) with the reason.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Any, Optional

from cluster.placement import Node, Placed, PlacementError, eval_actors, place, run_actors
from models.architecture import GB, Architecture, generation_bytes

# Evaluation generates at most this many sequences per call (evaluation.evaluate.MAX_SEQUENCES_PER_CALL).
EVAL_SEQUENCES = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="local", help="a preset name (configs/*.yaml) or a YAML file [local]")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", default=None, help="plan on the nodes of this running Ray cluster (auto, ...)")
    where.add_argument("--cluster", default=None, metavar="FILE",
                       help="plan on the nodes a Ray cluster launcher file starts (cluster/cluster.yaml)")
    where.add_argument("--node", action="append", default=None, metavar="RESOURCES",
                       help="a node's Ray resources, e.g. CPU=96,GPU=8 (repeat for more nodes); default: this machine")
    parser.add_argument("--gpu-memory-gb", type=float, default=None,
                        help="memory of each GPU [this machine's GPU, else 80]")
    parser.set_defaults(overrides=[])
    parser.epilog = "Any --section.key=value argument overrides the config, as for train."


def _this_machine(gpu_memory_gb: float) -> list[Node]:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [Node("this-machine", {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}, gpu_memory_gb)]


def _gpu_memory_gb(requested: Optional[float]) -> tuple[float, str]:
    import torch

    if requested:
        return requested, ""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GB, ""
    return 80.0, " (assumed: pass --gpu-memory-gb)"


def _nodes(args: argparse.Namespace, gpu_memory_gb: float) -> list[Node]:
    from cluster.placement import nodes_from_cluster_file, nodes_from_ray, parse_node

    if args.address:
        from cluster.connect import init_ray

        init_ray(args.address, log_to_driver=False, logging_level="ERROR")
        return nodes_from_ray(gpu_memory_gb)
    if args.cluster:
        return nodes_from_cluster_file(args.cluster, gpu_memory_gb)
    if args.node:
        return [parse_node(spec, f"node-{i}", gpu_memory_gb) for i, spec in enumerate(args.node)]
    return _this_machine(gpu_memory_gb)


def _gb(value: float) -> str:
    return f"{value / GB:6.2f} GB"


def actor_lines(placed: list[Placed]) -> list[str]:
    """One line per GPU actor, one per group of consecutive CPU-only actors of a role on a node."""
    lines, run = [], []

    def flush() -> None:
        if run:
            first, last = run[0].actor, run[-1].actor
            names = first.name if len(run) == 1 else f"{first.name}..{last.name.rsplit('-', 1)[1]}"
            lines.append(f"  {names:<22} {run[0].node:<16} {'-':<8} {_request(first.request)}")
            run.clear()

    for p in placed:
        if p.gpu_ids:
            flush()
            gpus = ",".join(map(str, p.gpu_ids)) + (f" ({p.actor.gpus:g})" if p.actor.gpus < 1 else "")
            lines.append(f"  {p.actor.name:<22} {p.node:<16} {gpus:<8} {_request(p.actor.request)}")
        elif run and (run[-1].actor.role, run[-1].node) != (p.actor.role, p.node):
            flush()
            run.append(p)
        else:
            run.append(p)
    flush()
    return lines


def _request(request: tuple) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in request if k != "GPU") or "nothing"


def _generation_lines(title: str, arch: Architecture, sequences: int, prompt: int, new: int) -> tuple[list[str], float]:
    from learner.memory import CUDA_CONTEXT_BYTES

    gen = generation_bytes(arch, sequences, prompt, new)
    parts = {"weights (bf16/fp16)": gen["weights"], f"KV cache, {sequences} sequences": gen["kv_cache"],
             "logits of one step": gen["step_logits"], "CUDA context": CUDA_CONTEXT_BYTES}
    total = sum(parts.values())
    lines = [f"{title} ({sequences} sequences, prompt {prompt} + {new} new tokens)"]
    lines += [f"  {name:<44} {_gb(v)}" for name, v in parts.items()] + [f"  {'total':<44} {_gb(total)}"]
    return lines, total


def plan(cfg: Any, nodes: list[Node], gpu_note: str = "") -> tuple[list[str], Optional[str]]:
    """The plan's lines and, when it is refused, the reason."""
    from learner.memory import learner_memory
    from models.architecture import architecture

    out = [f"plan for {cfg.run.name}: " + "; ".join(
        f"{n.name} ({', '.join(f'{k} {v:g}' for k, v in n.resources.items())})" for n in nodes)]
    gpu_memory = nodes[0].gpu_memory_gb * GB if nodes else 0.0
    try:
        placed = place(run_actors(cfg), nodes)
        evaluation = place(eval_actors(cfg), nodes) if cfg.eval.num_actors else []
    except PlacementError as exc:
        return out, str(exc)
    out += ["", f"train: {'actor':<22} {'node':<16} {'GPUs':<8} other resources", *actor_lines(placed)]
    if evaluation:
        out += ["", f"eval (`launch.py eval --config`, a job of its own): {cfg.eval.num_actors} eval actors",
                *actor_lines([p for p in evaluation if p.actor.role == "eval"])]

    arch = architecture(cfg.model.name_or_path, cfg.model.kind)
    out += ["", f"model {arch.name}: {'seq2seq' if arch.seq2seq else 'causal'}, {arch.params / 1e6:.1f}M parameters, "
                f"hidden {arch.hidden}, {arch.encoder_layers + arch.decoder_layers} layers, vocabulary {arch.vocab} "
                f"({arch.source})"]
    use: dict[tuple[str, int], float] = defaultdict(float)
    holders: dict[tuple[str, int], list[str]] = defaultdict(list)
    learners = [p for p in placed if p.actor.role == "learner"]
    per_node = max((sum(1 for q in learners if q.node == p.node) for p in learners), default=1)
    mem = learner_memory(cfg, arch, per_node)
    sampler_lines, sampler_total = _generation_lines(
        "sampler", arch, cfg.sampler.problems_per_batch * cfg.sampler.samples_per_problem,
        cfg.model.max_prompt_tokens, cfg.model.max_new_tokens)
    eval_lines, eval_total = _generation_lines("eval actor", arch, EVAL_SEQUENCES, cfg.model.max_prompt_tokens,
                                               cfg.model.max_new_tokens)
    totals = {"learner": mem.total, "sampler": sampler_total, "eval": eval_total}
    for p in [*placed, *evaluation]:
        for gpu in p.gpu_ids:
            key = ("eval " if p.actor.role == "eval" else "") + p.node, gpu
            use[key] += totals[p.actor.role]
            holders[key].append(p.actor.name)
    out += ["", *learner_lines(mem, cfg)]
    if any(p.actor.role == "sampler" and p.gpu_ids for p in placed):
        out += ["", *sampler_lines]
    if any(p.gpu_ids for p in evaluation):
        out += ["", *eval_lines]
    out += ["", f"per GPU (of {gpu_memory / GB:.0f} GB each{gpu_note}):"]
    for (node, gpu), used in sorted(use.items()):
        out.append(f"  {node} GPU {gpu}: {_gb(used)}  {', '.join(holders[node, gpu])}")
    over = [(k, v) for k, v in use.items() if v > gpu_memory]
    if over:
        (node, gpu), worst = max(over, key=lambda kv: kv[1])
        return out, (f"{node} GPU {gpu} would need {worst / GB:.1f} GB ({', '.join(holders[node, gpu])}) but has "
                     f"{gpu_memory / GB:.0f} GB: lower learner.batch_size (raise learner.grad_accum), turn on "
                     "learner.gradient_checkpointing, offload the optimizer, or give actors whole GPUs")
    if not use:
        out.append("  (no actor asks for a GPU)")
    return out, None


def learner_lines(mem: Any, cfg: Any) -> list[str]:
    offload = ", optimizer offloaded to the CPU" if mem.offload else ""
    lines = [f"learner rank ({mem.ranks} ranks, ZeRO-{mem.stage}, {mem.precision} compute with fp32 master weights"
             f"{offload}; micro-batch {mem.micro_batch}, prompt {cfg.model.max_prompt_tokens} + program "
             f"{cfg.model.max_new_tokens} tokens)"]
    for name, value in mem.parts.items():
        note = ""
        if name == "activations":
            note = (f"  (gradient checkpointing {'on' if mem.checkpointing else 'off'}; "
                    f"{'off' if mem.checkpointing else 'on'}: {mem.activations_other / GB:.2f} GB)")
        elif name == "logits" and mem.logits_all_positions > value:
            note = f"  (program positions only; over the prompt too: {mem.logits_all_positions / GB:.2f} GB)"
        lines.append(f"  {name:<44} {_gb(value)}{note}")
    lines.append(f"  {'total':<44} {_gb(mem.total)}")
    if mem.deepspeed_gpu is not None:
        lines.append(f"  model states {_gb(mem.model_states)}; DeepSpeed's estimator "
                     f"(estimate_zero2_model_states_mem_needs): {_gb(mem.deepspeed_gpu)} per GPU, "
                     f"{_gb(mem.cpu_per_node)} CPU per node")
    else:
        lines.append(f"  model states {_gb(mem.model_states)} (DeepSpeed's estimator covers ZeRO-2 with fp16/bf16)")
    return lines


def run(args: argparse.Namespace) -> int:
    from configs import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        memory_gb, note = _gpu_memory_gb(args.gpu_memory_gb)
        lines, refused = plan(cfg, _nodes(args, memory_gb), note)
    except (ConfigError, PlacementError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if refused:
        print(f"\nrefused: {refused}", file=sys.stderr)
        return 1
    print("\nfits")
    return 0
