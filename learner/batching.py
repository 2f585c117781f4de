"""Trajectories and reference solutions into padded model inputs, for both model families.

Only the program's positions carry labels, and the model computes logits only there: the prompt (up to ~800
tokens on APPS) is context, never a target, so it costs no vocabulary-sized logits.

Causal LM (CodeGen, GPT-2): one sequence ``prompt + program`` per row, aligned at the prompt/program boundary
(prompts left-padded, programs right-padded, positions counted from the first real token as in generation), so the
program positions are the same last columns of every row and ``logits_to_keep`` asks the model for those only.
Seq2seq (CodeT5): the prompt is the encoder input, the program the labels, the decoder input the labels shifted
right (the model's own loss over the labels is not computed). Per-token values (returns, behaviour log-probs) are
laid out on the same positions as the labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

IGNORE = -100


@dataclass
class ModelBatch:
    model_inputs: dict[str, torch.Tensor]  # passed to model(**model_inputs)
    labels: torch.Tensor  # [B, W] target token ids (program positions), IGNORE where no target
    values: dict[str, torch.Tensor]  # per-token tensors aligned with labels (returns, behaviour_logprobs)
    # Causal: the logits of the last ``keep_logits`` positions are the labels' (None: all of them, seq2seq).
    keep_logits: Optional[int] = None

    @property
    def num_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device | str) -> "ModelBatch":
        return ModelBatch(
            {k: v.to(device) for k, v in self.model_inputs.items()},
            self.labels.to(device),
            {k: v.to(device) for k, v in self.values.items()},
            self.keep_logits,
        )


def _pad(rows: Sequence[Sequence[float]], fill: float, dtype: torch.dtype, left: bool = False,
         width: Optional[int] = None) -> torch.Tensor:
    width = max(width or 0, max((len(r) for r in rows), default=0), 1)
    out = torch.full((len(rows), width), fill, dtype=dtype)
    for i, row in enumerate(rows):
        if row:
            values = torch.tensor(list(row), dtype=dtype)
            if left:
                out[i, width - len(row):] = values
            else:
                out[i, : len(row)] = values
    return out


def make_batch(
    prompts: Sequence[Sequence[int]],
    programs: Sequence[Sequence[int]],
    *,
    is_seq2seq: bool,
    pad_id: int,
    per_token: dict[str, Sequence[Sequence[float]]] | None = None,
    decoder_start_id: Optional[int] = None,
) -> ModelBatch:
    """Pad a batch. ``per_token`` values have one entry per program token and land on the label positions.
    ``decoder_start_id``: the seq2seq decoder's start token (default ``pad_id``, as in T5 and CodeT5)."""
    per_token = per_token or {}
    if len(prompts) != len(programs):
        raise ValueError(f"{len(prompts)} prompts but {len(programs)} programs")
    labels = _pad(programs, IGNORE, torch.long)
    values = {k: _pad(v, 0.0, torch.float32, width=labels.shape[1]) for k, v in per_token.items()}
    if is_seq2seq:
        enc = _pad(prompts, pad_id, torch.long)
        attention = _pad([[1] * len(p) for p in prompts], 0, torch.long)
        start = pad_id if decoder_start_id is None else decoder_start_id
        decoder_input = _pad([[start, *w[:-1]] for w in programs], pad_id, torch.long, width=labels.shape[1])
        return ModelBatch({"input_ids": enc, "attention_mask": attention, "decoder_input_ids": decoder_input},
                          labels, values)

    if any(not p for p in prompts):
        raise ValueError("a causal LM needs at least one prompt token (a BOS) before the program")
    # Column P-1+j predicts program token j (P = the longest prompt). The last program token is only a target,
    # so the input stops one column short of P+W.
    width = labels.shape[1]
    prompt_part = _pad(prompts, pad_id, torch.long, left=True)
    program_part = _pad([w[:-1] for w in programs], pad_id, torch.long, width=width - 1)[:, : width - 1]
    input_ids = torch.cat([prompt_part, program_part], dim=1)
    program_mask = _pad([[1] * (len(w) - 1) for w in programs], 0, torch.long, width=width - 1)[:, : width - 1]
    attention = torch.cat([_pad([[1] * len(p) for p in prompts], 0, torch.long, left=True), program_mask], dim=1)
    # Positions count real tokens only, as `generate` does for left-padded prompts.
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return ModelBatch({"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids},
                      labels, values, keep_logits=width)
