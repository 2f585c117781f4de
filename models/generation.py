"""Batched program generation with behaviour log-probabilities, for both model families.

`generate_programs` samples N programs per prompt (temperature, top-p) or decodes greedily, and returns for
each program its token ids (ending in EOS when the model stopped by itself), the log-probability of each token
under the *untempered* policy (what a learner step compares against: `learner/loss.py`), and whether the
length limit cut it off (the fine-grained reward treats a cut-off program's last-line syntax error as `whole`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class GeneratedProgram:
    prompt_index: int
    token_ids: list[int]  # the program's tokens, EOS included when generated
    logprobs: list[float]  # one per token
    text: str  # decoded program, without EOS
    truncated: bool  # stopped by the length limit, not by EOS


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.inference_mode()
def generate_programs(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    is_seq2seq: bool,
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 0.95,
    greedy: bool = False,
) -> list[GeneratedProgram]:
    """``num_samples`` programs per prompt (1 when ``greedy``), grouped by prompt in prompt order."""
    if not prompts:
        return []
    device = model.device
    if is_seq2seq:
        # Encoder inputs are right-padded (T5 uses relative positions); the decoder starts from its start token.
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(list(p))
            mask[i, : len(p)] = 1
    else:
        ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    n = 1 if greedy else num_samples
    kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )
    start = 1 if is_seq2seq else ids.shape[1]  # seq2seq outputs begin with the decoder start token
    new_tokens = out.sequences[:, start:].cpu()
    # Raw logits (before temperature / top-p) -> log-probs of the chosen tokens under the policy itself.
    logits = torch.stack(out.logits, dim=1).float().cpu()  # [B*n, T, V]
    chosen = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens[:, : logits.shape[1], None]).squeeze(-1)

    programs = []
    eos = tokenizer.eos_token_id
    for row in range(new_tokens.shape[0]):
        toks = new_tokens[row].tolist()
        stop = toks.index(eos) + 1 if eos in toks else len(toks)
        token_ids = toks[:stop]
        truncated = eos not in toks
        text = tokenizer.decode(token_ids[:-1] if not truncated else token_ids, skip_special_tokens=True,
                                clean_up_tokenization_spaces=False)  # the text must spell the sampled ids
        programs.append(GeneratedProgram(row // n, token_ids, chosen[row, :stop].tolist(), text, truncated))
    return programs
