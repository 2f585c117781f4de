"""Text <-> token ids for prompts and programs, shared by samplers and learners so both see the same ids.

A prompt keeps its *end* when it is too long (that is where the question meets the code); a program keeps its
start. Programs end with EOS when they are targets, so the model learns to stop.
"""
from __future__ import annotations


def encode_prompt(tokenizer, text: str, max_tokens: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        # A causal LM needs a context token to predict the first program token from.
        ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return list(ids[-max_tokens:])


def encode_program(tokenizer, text: str, max_tokens: int, *, add_eos: bool = True) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        ids = ids[: max_tokens - 1] + [tokenizer.eos_token_id]
    return ids[:max_tokens]
