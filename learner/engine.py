"""The DeepSpeed engine of one learner rank: configuration, optimizer, learning-rate schedule, checkpoints.

The DeepSpeed JSON (``learner.deepspeed_config``) owns what DeepSpeed is for: ZeRO stage, precision, offload,
gradient clipping. This module fills in what the run's config owns (batch sizes, gradient accumulation,
optimizer hyper-parameters) so that there is one source of truth for each value.

Precision: the learner loads float32 weights (`models.device.master_dtype`); with ``fp16`` or ``bf16`` enabled in
the JSON DeepSpeed computes in that precision and its optimizer updates float32 master weights. A configuration
whose optimizer would update half-precision weights (an Adam step at lr 2e-6 is below bf16's resolution for
typical weights, so the model would silently never change) is refused, from the JSON before anything loads
(`precision`) and from the built engine (`check_master_weights`).
"""
from __future__ import annotations

import json
import logging
from typing import Any

import torch

from configs import ConfigError, deepspeed_config_path
from configs.schema import LearnerConfig
from models.device import dist_backend, is_cuda, torch_device

log = logging.getLogger(__name__)

# bf16 options of DeepSpeed's JSON that make the optimizer update bf16 weights (no float32 master copy).
_HALF_MASTER_KEYS = ("bf16_master_weights_and_grads", "bf16_optimizer_states")


class PrecisionError(ConfigError):
    """A DeepSpeed configuration whose optimizer would update half-precision weights."""


def precision(ds: dict[str, Any], source: Any = "learner.deepspeed_config") -> str:
    """The compute precision a DeepSpeed JSON asks for (``fp16``, ``bf16`` or ``fp32``); a pure half-precision
    optimizer path is refused (`PrecisionError`)."""
    fp16 = bool(ds.get("fp16", {}).get("enabled", False))
    bf16 = bool(ds.get("bf16", ds.get("bfloat16", {})).get("enabled", False))
    if fp16 and bf16:
        raise PrecisionError(f"{source}: fp16 and bf16 are both enabled; enable one")
    pure = [k for k in _HALF_MASTER_KEYS if ds.get("bf16", {}).get(k)]
    if pure:
        raise PrecisionError(f"{source}: bf16.{pure[0]} makes the optimizer update bf16 weights without float32 "
                             "master weights; at RL learning rates (2e-6) most updates round away. Remove it (bf16 "
                             "with float32 master weights is the default)")
    return "fp16" if fp16 else "bf16" if bf16 else "fp32"


def check_master_weights(engine: Any, source: Any = "learner.deepspeed_config") -> str:
    """Refuse an engine whose optimizer updates half-precision tensors; returns the compute precision and master
    dtype (``bf16 compute, fp32 master``). Looks at the tensors the optimizer really steps (DeepSpeed's ZeRO, fp16
    and bf16 wrappers replace the model's parameters there by their float32 partitions)."""
    stepped = {p.dtype for group in engine.basic_optimizer.param_groups for p in group["params"]}
    half = sorted(str(d).removeprefix("torch.") for d in stepped if d != torch.float32)
    if half:
        raise PrecisionError(f"{source}: the optimizer would update {', '.join(half)} weights (no float32 master "
                             "copy): a pure half-precision optimizer path, where small updates round away. Load the "
                             "learner in float32 and enable fp16 or bf16 in the DeepSpeed JSON instead")
    compute = {p.dtype for p in engine.module.parameters()}
    return f"{'/'.join(sorted(str(d).removeprefix('torch.') for d in compute))} compute, float32 master"


def micro_steps_per_optimizer_step(cfg: LearnerConfig) -> int:
    """Each RL micro-step is followed by ``supervised_ratio`` supervised ones; ``grad_accum`` such groups a step."""
    return cfg.grad_accum * (1 + cfg.supervised_ratio)


def build_deepspeed_config(cfg: LearnerConfig) -> dict[str, Any]:
    path = deepspeed_config_path(cfg.deepspeed_config)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"learner.deepspeed_config: {path} is not valid JSON: {exc}") from None
    precision(ds, path)
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2):
        # Publishing weights reads full parameters on rank 0; stage 3 would need a gather first.
        raise ConfigError(f"learner.deepspeed_config: ZeRO stage {stage} is not supported (use 0, 1 or 2)")
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        if key in ds:
            log.warning("%s: %s is set from the run config (learner.*), ignoring the JSON value", path, key)
            ds.pop(key)
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = micro_steps_per_optimizer_step(cfg)
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "cpu"
    ds.setdefault(
        "optimizer",
        {
            "type": "AdamW",
            # torch's AdamW where DeepSpeed's fused CUDA Adam cannot run (CPU without offload).
            "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "torch_adam": torch_device() == "cpu" and not offload},
        },
    )
    ds.setdefault("steps_per_print", 10**9)
    return ds


def lr_multiplier(step: int, cfg: LearnerConfig) -> float:
    """Warm start at ``warm_start_lr`` (decaying linearly to ``warm_start_lr_end`` if set), then linear warm-up to
    ``lr`` over ``warmup_steps`` RL steps, then flat."""
    if step < cfg.warm_start_steps:
        lr = cfg.warm_start_lr
        if cfg.warm_start_lr_end is not None:
            lr += (cfg.warm_start_lr_end - cfg.warm_start_lr) * step / max(cfg.warm_start_steps - 1, 1)
        return lr / cfg.lr
    rl_step = step - cfg.warm_start_steps
    if cfg.warmup_steps <= 0:
        return 1.0
    return min(1.0, (rl_step + 1) / cfg.warmup_steps)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """``learner.gradient_checkpointing``: transformers recomputes each layer's activations in the backward pass.
    Non-reentrant, which needs no input that requires grad and works with DeepSpeed's gradient hooks."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a KV cache is for generation; with recomputation it only costs memory


def init_engine(model: torch.nn.Module, cfg: LearnerConfig):
    """Create the DeepSpeed engine (torch.distributed must be initialised: see `init_process_group`)."""
    import deepspeed

    ds_config = build_deepspeed_config(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=params,
        config=ds_config,
        # DeepSpeed steps this schedule at each optimizer step (not each micro-step) and checkpoints it.
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, cfg)),
    )
    return engine


def init_process_group(rank: int, world_size: int, master_addr: str, master_port: int, device: str,
                       local_rank: int = 0, local_world_size: int = 1) -> str:
    """Join the learners' torch.distributed group on ``device`` (NCCL on GPUs, gloo on CPU); returns the backend.
    ``local_rank`` is the index of this rank's GPU among those it sees (`LearnerRank.take_gpu`): DeepSpeed binds
    the process to ``cuda:<LOCAL_RANK>``."""
    import os

    # DeepSpeed picks its accelerator on import: follow models.device (a GPU machine may run the learner on CPU).
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if is_cuda(device) else "cpu")
    import deepspeed

    if is_cuda(device):
        torch.cuda.set_device(torch.device(device))
    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(local_world_size),
    )
    backend = dist_backend(device)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return backend
