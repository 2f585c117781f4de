"""The DeepSpeed engine of one learner rank: configuration, optimizer, learning-rate schedule, checkpoints.

The DeepSpeed JSON (``learner.deepspeed_config``) owns what DeepSpeed is for: ZeRO stage, precision, offload,
gradient clipping. This module fills in what the run's config owns (batch sizes, gradient accumulation,
optimizer hyper-parameters) so that there is one source of truth for each value.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import torch

from configs import ConfigError, deepspeed_config_path
from configs.schema import LearnerConfig
from models.device import dist_backend, torch_device

log = logging.getLogger(__name__)


def micro_steps_per_optimizer_step(cfg: LearnerConfig) -> int:
    """Each RL micro-step is followed by ``supervised_ratio`` supervised ones; ``grad_accum`` such groups a step."""
    return cfg.grad_accum * (1 + cfg.supervised_ratio)


def build_deepspeed_config(cfg: LearnerConfig) -> dict[str, Any]:
    path = deepspeed_config_path(cfg.deepspeed_config)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"learner.deepspeed_config: {path} is not valid JSON: {exc}") from None
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


def init_process_group(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    import os

    import deepspeed

    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK="0",  # one learner rank per Ray actor; Ray assigns the device (CUDA_VISIBLE_DEVICES)
        LOCAL_WORLD_SIZE="1",
    )
    deepspeed.init_distributed(dist_backend=dist_backend(), auto_mpi_discovery=False)
