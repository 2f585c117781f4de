"""The RLTF objective (RLTF-SPEC.md section 4): per-token REINFORCE with unit-test returns, plus the
supervised cross-entropy anchor.

    L_rl = - sum_t r_t * log p(w_t | w_<t, prompt) / N_tokens

Both losses are normalised by the number of target tokens *over all data-parallel ranks* (``global_tokens``), then
multiplied by the world size, because DeepSpeed averages gradients across ranks: the result is exactly the
gradient of the mean over the combined batch, whatever the split of tokens between ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from learner.batching import IGNORE, ModelBatch


@dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float]


def token_logprobs(model: torch.nn.Module, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) at each label position, and the mask of positions that have a label."""
    logits = model(**batch.model_inputs).logits.float()
    mask = batch.labels != IGNORE
    safe_labels = batch.labels.masked_fill(~mask, 0)
    # cross_entropy avoids materialising a full log-softmax tensor for large vocabularies.
    nll = F.cross_entropy(logits.transpose(1, 2), safe_labels, reduction="none")
    return -nll * mask, mask


def rl_loss(
    model: torch.nn.Module,
    batch: ModelBatch,
    *,
    global_tokens: int,
    world_size: int,
    importance_clip: Optional[float] = None,
) -> LossOutput:
    logp, mask = token_logprobs(model, batch)
    returns = batch.values["returns"]
    weight = returns
    metrics: dict[str, float] = {}
    if importance_clip is not None:
        # Truncated importance weight min(c, p_theta / p_behaviour) for samples from a lagging policy copy.
        log_ratio = (logp.detach() - batch.values["behaviour_logprobs"]).clamp(max=20.0)
        ratio = torch.exp(log_ratio).clamp(max=importance_clip) * mask
        weight = returns * ratio
        metrics["importance_weight_mean"] = float(ratio.sum() / mask.sum().clamp(min=1))
    loss = -(weight * logp * mask).sum() / max(global_tokens, 1) * world_size
    n = mask.sum().clamp(min=1)
    metrics["loss_rl"] = float(-(weight * logp.detach() * mask).sum() / n)
    metrics["rl_logp_mean"] = float((logp.detach() * mask).sum() / n)
    metrics["rl_return_mean"] = float((returns * mask).sum() / n)
    return LossOutput(loss, metrics)


def supervised_loss(model: torch.nn.Module, batch: ModelBatch, *, global_tokens: int, world_size: int) -> LossOutput:
    logp, mask = token_logprobs(model, batch)
    loss = -(logp * mask).sum() / max(global_tokens, 1) * world_size
    local = float(-(logp.detach() * mask).sum() / mask.sum().clamp(min=1))
    return LossOutput(loss, {"sl_nll": local})
