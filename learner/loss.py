"""The RLTF objective (RLTF-SPEC.md section 4): per-token REINFORCE with unit-test returns, plus the
supervised cross-entropy anchor.

    L_rl = - sum_t r_t * log p(w_t | w_<t, prompt) / N_tokens

Both losses are normalised by the number of target tokens *over all data-parallel ranks* (``global_tokens``), then
multiplied by the world size, because DeepSpeed averages gradients across ranks: the result is exactly the
gradient of the mean over the combined batch, whatever the split of tokens between ranks.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from learner.batching import IGNORE, ModelBatch


@dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float]


def _keep_argument(model: torch.nn.Module) -> Optional[str]:
    """The forward argument that limits a causal LM's logits to the last N positions, if it has one
    (``logits_to_keep`` in transformers >= 4.50, ``num_logits_to_keep`` before)."""
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    params = inspect.signature(module.forward).parameters
    return next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)


def program_logits(model: torch.nn.Module, batch: ModelBatch) -> torch.Tensor:
    """Logits at the label positions only, ``[B, W, V]``: a causal LM computes its vocabulary projection for the
    program's positions, not the prompt's."""
    inputs = dict(batch.model_inputs)
    keep = batch.keep_logits
    if keep is not None:
        argument = _keep_argument(model)
        if argument is not None:
            inputs[argument] = keep
        return model(**inputs).logits[:, -keep:]  # a model without the argument: all logits, then the slice
    return model(**inputs).logits


def token_logprobs(model: torch.nn.Module, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) at each label position, and the mask of positions that have a label."""
    # float32 for the log-softmax over the vocabulary, at the program's positions only.
    logits = program_logits(model, batch).float()
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
