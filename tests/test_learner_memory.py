"""The learner's memory levers, on CPU: logits only over the program's positions and gradient checkpointing give the
same log-probabilities and gradients as before, for less memory (measured peak, `bench/memory_peak.py`)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from learner.batching import make_batch
from learner.engine import enable_checkpointing
from learner.loss import program_logits, supervised_loss, token_logprobs
from tests.conftest import REPO_ROOT


def _batch(policy, rng: random.Random, rows: int = 4):
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(1, 9))] for _ in range(rows)]
    programs = [[rng.randrange(3, 300) for _ in range(rng.randint(1, 12))] for _ in range(rows)]
    batch = make_batch(prompts, programs, is_seq2seq=policy.is_seq2seq, pad_id=policy.tokenizer.pad_token_id,
                       decoder_start_id=getattr(policy.model.config, "decoder_start_token_id", None))
    return prompts, programs, batch


@pytest.mark.parametrize("preset", ["tiny:gpt2", "tiny:codegen", "tiny:t5"])
def test_program_position_logits_match_a_plain_forward_of_each_sequence(preset: str) -> None:
    from models import load_policy

    policy = load_policy(preset)
    model = policy.model.eval()
    prompts, programs, batch = _batch(policy, random.Random(3))
    with torch.no_grad():
        logp, mask = token_logprobs(model, batch)
        assert program_logits(model, batch).shape[:2] == batch.labels.shape  # no logits for prompt positions
        for i, (prompt, program) in enumerate(zip(prompts, programs)):
            if policy.is_seq2seq:
                logits = model(input_ids=torch.tensor([prompt]), labels=torch.tensor([program])).logits[0]
            else:  # unpadded, positions from 0: what the left-aligned batch must reproduce
                logits = model(input_ids=torch.tensor([prompt + program])).logits[0, len(prompt) - 1:-1]
            expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(program)[:, None])[:, 0]
            assert int(mask[i].sum()) == len(program)
            torch.testing.assert_close(logp[i, :len(program)], expected, atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    from models import load_policy

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        policy = load_policy("tiny:gpt2")
        model = policy.model.train()
        for module in model.modules():  # dropout off: both runs must see the same network
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            enable_checkpointing(model)
        _, _, batch = _batch(policy, random.Random(5))
        out = supervised_loss(model, batch, global_tokens=batch.num_tokens, world_size=1)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_measured_peak_memory_falls_with_checkpointing_and_program_only_logits() -> None:
    """The benchmark's measurement (a fresh process per variant, peak RSS of one forward and backward) on the tiny
    model with APPS-like proportions (prompt longer than the program)."""
    peaks = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(REPO_ROOT)}
    # Program-only logits on a model whose logits dominate (GPT-2's vocabulary); checkpointing on the tiny model,
    # whose activations dominate.
    for model, batch, program_only, checkpointing in [("wide-vocab", 4, False, False), ("wide-vocab", 4, True, False),
                                                      ("tiny", 16, True, False), ("tiny", 16, True, True)]:
        spec = dict(model=model, batch=batch, prompt=384, program=128, program_only=program_only,
                    checkpointing=checkpointing)
        done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "memory_peak.py"), "--child",
                               json.dumps(spec)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[model, program_only, checkpointing] = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]
    assert peaks["wide-vocab", True, False] < 0.6 * peaks["wide-vocab", False, False], peaks
    assert peaks["tiny", True, True] < 0.8 * peaks["tiny", True, False], peaks
