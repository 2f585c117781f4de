"""Batched program generation with behaviour log-probabilities, for both model families.

`generate_programs` samples N programs per prompt (temperature, top-p) or decodes greedily, and returns for
each program its token ids (ending in EOS when the model stopped by itself), the log-probability of each token
under the *untempered* policy (what a learner step compares against: `learner/loss.py`), and whether the
length limit cut it off (the fine-grained reward treats a cut-off program's last-line syntax error as `whole`).

How a causal LM decodes (`decode_causal`, transformers' model forward and its key/value cache, our loop):
- **each prompt is encoded once for its N samples**: the distinct prompts are prefilled and their cache repeated
  N times (generate's ``num_return_sequences`` copies every prompt N times before encoding it);
- **a program that has ended leaves the batch**: its cache rows are dropped, so a step costs what the unfinished
  rows need (generate keeps decoding finished rows until the longest program of the batch ends);
- **behaviour log-probs are gathered at each step** from that step's [rows, vocabulary] logits; nothing of the
  full-vocabulary logits outlives the step.
Sampling uses transformers' own temperature and top-p warpers. An encoder-decoder (CodeT5) decodes with
`generate`, which already runs its encoder once per prompt; `BehaviourLogprobs` gathers its log-probs step by step.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList


@dataclass
class GeneratedProgram:
    prompt_index: int
    token_ids: list[int]  # the program's tokens, EOS included when generated
    logprobs: list[float]  # one per token
    text: str  # decoded program, without EOS
    truncated: bool  # stopped by the length limit, not by EOS


class BehaviourLogprobs(LogitsProcessor):
    """log p(chosen token) under the untempered policy, one step at a time.

    transformers applies the processors passed to `generate` before its temperature and top-p warpers, so this one
    sees the model's raw scores. The token chosen from step t's scores is the last column of ``input_ids`` at step
    t + 1 (and, for the last step, of the returned sequences: `finish`)."""

    def __init__(self) -> None:
        self.chosen: list[torch.Tensor] = []  # [rows] per step
        self._last: Optional[torch.Tensor] = None  # log-softmax of the previous step's scores, [rows, vocabulary]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._last is not None:
            self.chosen.append(self._last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[rows, steps] log-probs, given the final sequences (whose last column is the last step's choice)."""
        if self._last is not None and sequences.shape[1]:
            self.chosen.append(self._last.gather(-1, sequences[:, -1:].to(self._last.device)).squeeze(-1))
            self._last = None
        return torch.stack(self.chosen, dim=1) if self.chosen else torch.zeros((sequences.shape[0], 0))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        mask[i, : len(p)] = 1
    return ids, mask


def _cache_kwarg(model) -> Optional[str]:
    """The name under which this model's forward takes a key/value cache (``cache`` from transformers 5,
    ``past_key_values`` before), or None."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _sampling_warpers(temperature: float, top_p: float) -> LogitsProcessorList:
    """transformers' own temperature and top-p warpers: the same distribution `generate` samples from."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


def decode_causal(model, ids: torch.Tensor, mask: torch.Tensor, n: int, *, max_new_tokens: int, eos_id: int,
                  pad_id: int, greedy: bool, warpers: LogitsProcessorList) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Decode ``n`` continuations of each left-padded prompt; returns [rows, steps] token ids (``pad_id`` after a
    row's EOS) and their untempered log-probs, rows grouped by prompt. None if the model's cache cannot be reused
    (then `transformers.generate` decodes).

    The distinct prompts are prefilled once and their key/value cache repeated ``n`` times; a row that emits EOS
    leaves the batch (its cache rows are dropped), so each step costs what the unfinished rows need, not what
    the longest program of the batch needs."""
    name = _cache_kwarg(model)
    if name is None:
        return None
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate gives a left-padded row
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if not hasattr(cache, "batch_select_indices"):
        return None  # a legacy tuple cache (old transformers)
    rows_total = ids.shape[0] * n
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    position = positions[:, -1:].repeat_interleave(n, dim=0)
    rows = torch.arange(rows_total, device=ids.device)  # which output row each batch row is
    tokens = torch.full((rows_total, max_new_tokens), pad_id, dtype=torch.long, device=ids.device)
    logprobs = torch.zeros((rows_total, max_new_tokens), device=ids.device)
    steps = 0
    for step in range(max_new_tokens):
        steps = step + 1
        if greedy:
            chosen = logits.argmax(-1)
        else:
            chosen = torch.multinomial(torch.softmax(warpers(None, logits), dim=-1), 1).squeeze(1)
        tokens[rows, step] = chosen
        logprobs[rows, step] = torch.log_softmax(logits, dim=-1).gather(-1, chosen[:, None]).squeeze(1)
        running = chosen != eos_id
        if step + 1 == max_new_tokens or not running.any():
            break
        if not running.all():
            keep = running.nonzero().squeeze(1)
            rows, chosen, mask, position = rows[keep], chosen[keep], mask[keep], position[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        position = position + 1
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                    **{name: cache})
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        logits = out.logits[:, -1].float()
    return tokens[:, :steps], logprobs[:, :steps]


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
    use_generate: bool = False,
) -> list[GeneratedProgram]:
    """``num_samples`` programs per prompt (1 when ``greedy``), grouped by prompt in prompt order. A causal LM
    decodes in `decode_causal` unless ``use_generate`` (transformers' `generate`, for comparison)."""
    if not prompts:
        return []
    device = model.device
    n = 1 if greedy else num_samples
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    decoded = None
    if not is_seq2seq and not use_generate:
        ids, mask = left_pad(prompts, pad)
        decoded = decode_causal(model, ids.to(device), mask.to(device), n, max_new_tokens=max_new_tokens, eos_id=eos,
                                pad_id=pad, greedy=greedy,
                                warpers=LogitsProcessorList() if greedy else _sampling_warpers(temperature, top_p))
    if decoded is None:
        decoded = _decode_with_generate(model, prompts, n, is_seq2seq=is_seq2seq, max_new_tokens=max_new_tokens,
                                        eos_id=eos, pad_id=pad, greedy=greedy, temperature=temperature, top_p=top_p)
    new_tokens, chosen = (t.cpu() for t in decoded)

    programs = []
    for row in range(new_tokens.shape[0]):
        toks = new_tokens[row].tolist()
        stop = toks.index(eos) + 1 if eos in toks else len(toks)
        token_ids = toks[:stop]
        truncated = eos not in toks
        text = tokenizer.decode(token_ids[:-1] if not truncated else token_ids, skip_special_tokens=True,
                                clean_up_tokenization_spaces=False)  # the text must spell the sampled ids
        programs.append(GeneratedProgram(row // n, token_ids, chosen[row, :stop].tolist(), text, truncated))
    return programs


def _decode_with_generate(model, prompts, n: int, *, is_seq2seq: bool, max_new_tokens: int, eos_id: int,
                          pad_id: int, greedy: bool, temperature: float, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' `generate`: [rows, steps] new token ids and their untempered log-probs (`BehaviourLogprobs`)."""
    # Encoder inputs are right-padded (T5 uses relative positions); a causal LM's prompts are left-padded.
    ids, mask = (right_pad if is_seq2seq else left_pad)(prompts, pad_id)
    kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    logprobs = BehaviourLogprobs()
    sequences = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                               max_new_tokens=max_new_tokens, num_return_sequences=n,
                               logits_processor=LogitsProcessorList([logprobs]), pad_token_id=pad_id,
                               eos_token_id=eos_id, **kwargs)
    new_tokens = sequences[:, 1 if is_seq2seq else ids.shape[1]:]  # seq2seq outputs begin with the decoder start
    return new_tokens, logprobs.finish(new_tokens)
