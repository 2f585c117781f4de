"""How much GPU memory one learner rank needs, from the run's config and the model's architecture, before anything
loads (`launch.py plan`).

Model states (weights, gradients, optimizer states) follow DeepSpeed's accounting for the ZeRO stage, the offload
and the precision of the run's DeepSpeed JSON, and are shown next to DeepSpeed's own estimator
(`estimate_zero2_model_states_mem_needs`, the function behind ``estimate_zero2_model_states_mem_needs_all_cold``),
which covers ZeRO-1/2 with fp16 or bf16 compute. Activations and logits of one micro-batch come from
`models.architecture.activation_bytes`, with and without gradient checkpointing; ZeRO's communication buckets and a
fixed allowance for the CUDA context and NCCL complete the figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from learner.engine import build_deepspeed_config, precision
from models.architecture import Architecture, activation_bytes

# CUDA context, cuBLAS workspaces and NCCL buffers of one GPU process (typically 1-2 GB on A100/H100).
CUDA_CONTEXT_BYTES = 1.5e9
_DEFAULT_BUCKET = 5e8  # DeepSpeed's default reduce_bucket_size and allgather_bucket_size (elements)


@dataclass
class LearnerMemory:
    precision: str  # compute precision: fp16, bf16 or fp32 (master weights are fp32 in every case)
    stage: int
    offload: bool
    ranks: int
    micro_batch: int
    checkpointing: bool
    parts: dict[str, float]  # what sits on the GPU, bytes
    activations_other: float  # activations with the other gradient-checkpointing setting, for comparison
    logits_all_positions: float  # logits had they covered the prompt too (causal models)
    cpu_per_node: float  # host memory DeepSpeed's estimator asks for per node (offloaded optimizer, loading)
    deepspeed_gpu: Optional[float]  # DeepSpeed's estimate of the model states on each GPU; None where it has none

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def model_states(self) -> float:
        return sum(self.parts[k] for k in ("weights", "gradients", "optimizer states"))


def learner_memory(cfg: Any, arch: Architecture, ranks_per_node: int) -> LearnerMemory:
    """One rank's GPU memory for ``cfg.learner`` (DeepSpeed JSON, ranks, micro-batch, checkpointing) on ``arch``."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    learner, p = cfg.learner, arch.params
    ds = build_deepspeed_config(learner)
    compute = precision(ds)
    zero = ds.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    offload = zero.get("offload_optimizer", {}).get("device") == "cpu"
    n = learner.num_ranks
    half = compute != "fp32"
    value = 2 if half else 4
    # fp32 master weights and fp32 gradients (mixed precision only), Adam's two moments: partitioned from ZeRO-1 on.
    optimizer = (16 if half else 8) * p / (n if stage >= 1 else 1)
    gradients = value * p / (n if stage >= 2 else 1)
    if offload:  # the optimizer step and its fp32 states live on the CPU, and so do the partitioned gradients
        optimizer, gradients = 0.0, 0.0
    buckets = 0.0
    if stage >= 1:
        reduce = float(zero.get("reduce_bucket_size", _DEFAULT_BUCKET)) * (2 if zero.get("overlap_comm") else 1)
        buckets = (reduce + float(zero.get("allgather_bucket_size", _DEFAULT_BUCKET))) * value
    micro = max(learner.batch_size, learner.supervised_batch_size if learner.supervised_ratio or not learner.rl else 0)
    shape = dict(batch=micro, prompt=cfg.model.max_prompt_tokens, program=cfg.model.max_new_tokens, value_bytes=value)
    used = activation_bytes(arch, checkpointing=learner.gradient_checkpointing, **shape)
    other = activation_bytes(arch, checkpointing=not learner.gradient_checkpointing, **shape)
    every_position = activation_bytes(arch, checkpointing=False, program_only_logits=False, **shape)
    cpu, ds_gpu = estimate_zero2_model_states_mem_needs(p, num_gpus_per_node=ranks_per_node,
                                                         num_nodes=max(1, -(-n // max(ranks_per_node, 1))),
                                                         cpu_offload=offload)
    parts = {"weights": value * p, "gradients": gradients, "optimizer states": optimizer, "ZeRO buckets": buckets,
             "activations": used["layers"], "logits": used["logits"], "CUDA context, NCCL": CUDA_CONTEXT_BYTES}
    return LearnerMemory(compute, stage, offload, n, micro, learner.gradient_checkpointing, parts,
                         other["layers"], every_position["logits"], float(cpu),
                         float(ds_gpu) if half and stage == 2 else None)
