"""Trajectories and reference solutions into padded model inputs, for both model families.

Causal LM (CodeGen, GPT-2): one sequence ``prompt + program``; only program positions carry labels, so the
prompt is context, never a target. Seq2seq (CodeT5): the prompt is the encoder input and the program the labels.
Per-token values (returns, behaviour log-probs) are laid out on the same positions as the labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

IGNORE = -100


@dataclass
class ModelBatch:
    model_inputs: dict[str, torch.Tensor]  # passed to model(**model_inputs)
    labels: torch.Tensor  # [B, L] target token ids, IGNORE where no target
    values: dict[str, torch.Tensor]  # per-token tensors aligned with labels (returns, behaviour_logprobs)

    @property
    def num_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device | str) -> "ModelBatch":
        return ModelBatch(
            {k: v.to(device) for k, v in self.model_inputs.items()},
            self.labels.to(device),
            {k: v.to(device) for k, v in self.values.items()},
        )


def _pad(rows: Sequence[Sequence[float]], fill: float, dtype: torch.dtype) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), fill, dtype=dtype)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.tensor(list(row), dtype=dtype)
    return out


def make_batch(
    prompts: Sequence[Sequence[int]],
    programs: Sequence[Sequence[int]],
    *,
    is_seq2seq: bool,
    pad_id: int,
    per_token: dict[str, Sequence[Sequence[float]]] | None = None,
) -> ModelBatch:
    """Pad a batch. ``per_token`` values have one entry per program token and land on the label positions."""
    per_token = per_token or {}
    if len(prompts) != len(programs):
        raise ValueError(f"{len(prompts)} prompts but {len(programs)} programs")
    if is_seq2seq:
        enc = _pad(prompts, pad_id, torch.long)
        attention = _pad([[1] * len(p) for p in prompts], 0, torch.long)
        labels = _pad(programs, IGNORE, torch.long)
        values = {k: _pad(v, 0.0, torch.float32) for k, v in per_token.items()}
        return ModelBatch({"input_ids": enc, "attention_mask": attention, "labels": labels}, labels, values)

    # Causal: logits at position i predict token i+1, so labels are the inputs shifted left by one. We keep
    # labels aligned with the *predicting* position: labels[i] = token at i+1, which makes per-token values
    # line up with the logits the model returns and avoids HF's internal shift.
    seqs = [list(p) + list(w) for p, w in zip(prompts, programs)]
    input_ids = _pad(seqs, pad_id, torch.long)
    attention = _pad([[1] * len(s) for s in seqs], 0, torch.long)
    width = input_ids.shape[1]
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    values = {k: torch.zeros((len(seqs), width), dtype=torch.float32) for k in per_token}
    for i, (prompt, program) in enumerate(zip(prompts, programs)):
        if not program:
            continue
        start = len(prompt) - 1  # the position whose logits predict the first program token
        if start < 0:
            raise ValueError("a causal LM needs at least one prompt token (a BOS) before the program")
        labels[i, start : start + len(program)] = torch.tensor(list(program), dtype=torch.long)
        for key, rows in per_token.items():
            values[key][i, start : start + len(program)] = torch.tensor(list(rows[i]), dtype=torch.float32)
    return ModelBatch({"input_ids": input_ids, "attention_mask": attention}, labels, values)
