"""Generation (models/generation.py): the causal decode loop (prompts encoded once, finished rows leave the batch)
against transformers' `generate`, and the behaviour log-probs of both against a teacher-forced forward pass.

The tiny causal models get an output bias towards EOS so that programs end at different steps and the loop's
row pruning is exercised; everything else is the real model."""
from __future__ import annotations

import pytest
import torch

from models import build_tiny, load_policy
from models.generation import BehaviourLogprobs, generate_programs

PROMPTS = ["def add(a, b):\n", '"""Return the list xs reversed."""\ndef rev(xs):\n', "# one\n"]


@pytest.fixture(scope="module", params=["gpt2", "codegen"])
def causal(request, tmp_path_factory):
    policy = load_policy(str(build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "model")))
    model, tok = policy.model.eval(), policy.tokenizer
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
    model.set_output_embeddings(biased)
    eos_bias(policy, 2.5)  # sampled programs end after a few tokens, each at its own step
    return policy, [tok(p)["input_ids"] for p in PROMPTS]


def eos_bias(policy, value: float) -> None:
    with torch.no_grad():
        bias = policy.model.get_output_embeddings().bias
        bias.zero_()
        bias[policy.tokenizer.eos_token_id] = value


def teacher_forced(policy, prompt: list[int], program: list[int]) -> torch.Tensor:
    """log p(program token | prompt, earlier program tokens) from one forward pass over the whole sequence."""
    with torch.no_grad():
        if policy.is_seq2seq:
            labels = torch.tensor([program])
            logits = policy.model(input_ids=torch.tensor([prompt]), labels=labels).logits[0]
        else:
            logits = policy.model(input_ids=torch.tensor([prompt + program])).logits[0, len(prompt) - 1: -1]
    return logits.float().log_softmax(-1).gather(-1, torch.tensor(program)[:, None]).squeeze(-1)


def test_greedy_loop_decodes_what_generate_decodes(causal):
    policy, prompts = causal
    lengths = set()
    for bias in (0.5, 1.0):  # greedy programs of different lengths in one batch, for one family or the other
        eos_bias(policy, bias)
        ours = generate_programs(policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=1,
                                 max_new_tokens=16, greedy=True)
        theirs = generate_programs(policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=1,
                                   max_new_tokens=16, greedy=True, use_generate=True)
        assert [p.token_ids for p in ours] == [p.token_ids for p in theirs]
        for a, b in zip(ours, theirs):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
        lengths.add(tuple(len(p.token_ids) for p in ours))
    eos_bias(policy, 2.5)
    assert any(len(set(row)) > 1 for row in lengths)


@pytest.mark.parametrize("use_generate", [False, True])
def test_sampled_programs_carry_their_untempered_logprobs_and_stop_at_eos(causal, use_generate):
    policy, prompts = causal
    eos = policy.tokenizer.eos_token_id
    torch.manual_seed(0)
    programs = generate_programs(policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=4,
                                 max_new_tokens=24, temperature=0.7, top_p=0.9, use_generate=use_generate)
    assert [p.prompt_index for p in programs] == [i for i in range(len(prompts)) for _ in range(4)]
    lengths = {len(p.token_ids) for p in programs}
    assert len(lengths) > 1  # rows ended at different steps (the loop dropped them one by one)
    for p in programs:
        assert (eos not in p.token_ids[:-1]) and (p.token_ids[-1] == eos) != p.truncated
        assert len(p.logprobs) == len(p.token_ids)
        # the policy's own log-probs (temperature 1, no top-p), not the tempered sampling distribution's
        assert p.logprobs == pytest.approx(teacher_forced(policy, prompts[p.prompt_index], p.token_ids).tolist(),
                                           abs=1e-4)


def test_sampling_stays_inside_the_tempered_top_p_nucleus(causal):
    policy, prompts = causal
    temperature, top_p = 0.5, 0.6
    torch.manual_seed(1)
    programs = generate_programs(policy.model, policy.tokenizer, prompts, is_seq2seq=False, num_samples=6,
                                 max_new_tokens=12, temperature=temperature, top_p=top_p)
    for p in programs:
        context = list(prompts[p.prompt_index])
        for token in p.token_ids:
            with torch.no_grad():
                logits = policy.model(input_ids=torch.tensor([context])).logits[0, -1].float()
            probs, order = torch.softmax(logits / temperature, -1).sort(descending=True)
            # the nucleus: the most likely tokens until their mass reaches top_p (the one that crosses it included)
            size = int((probs.cumsum(0) < top_p).sum()) + 1
            assert token in order[:size].tolist()
            context.append(token)


def test_seq2seq_generates_through_generate_with_stepwise_logprobs(tmp_path):
    policy = load_policy(str(build_tiny("t5", tmp_path / "t5")))
    policy.model.eval()
    prompts = [policy.tokenizer(p)["input_ids"] for p in PROMPTS[:2]]
    torch.manual_seed(0)
    programs = generate_programs(policy.model, policy.tokenizer, prompts, is_seq2seq=True, num_samples=3,
                                 max_new_tokens=10)
    assert len(programs) == 6
    for p in programs:
        assert p.logprobs == pytest.approx(teacher_forced(policy, prompts[p.prompt_index], p.token_ids).tolist(),
                                           abs=1e-4)


def test_behaviour_logprobs_keep_one_vector_per_step():
    """Only the last step's log-softmax is held between steps; what is kept is one value per row and step."""
    recorder = BehaviourLogprobs()
    ids = torch.tensor([[5], [6]])
    for step, token in enumerate([1, 2, 3]):
        scores = torch.zeros((2, 4))
        scores[:, token] = 2.0
        recorder(ids, scores)
        ids = torch.cat([ids, torch.tensor([[token], [0]])], dim=1)
    out = recorder.finish(ids)
    assert out.shape == (2, 3) and recorder._last is None
    top = float(torch.log_softmax(torch.tensor([0.0, 0.0, 0.0, 2.0]), -1)[-1])
    assert out[0].tolist() == pytest.approx([top] * 3)  # row 0 took the favoured token each time
    assert out[1, 0] < top  # row 1 took token 0 instead
