"""The profile's stack categories (bench/profile_report.py) and the TRL side's problem stream and sandbox reward
(bench/peers.py), without Ray or TRL: the reward grades real programs in a real sandbox pool."""
from __future__ import annotations

import collections

import pytest

from bench.peers import SandboxCoarseReward, problem_stream
from bench.profile_report import IDLE, Classifier, line_of, split_cpu
from tasks import load_problems

RAY = "FunctionActorManager._make_actor_method_executor.<locals>.actor_method_executor (ray/_private/function_manager.py:740)"


def stack(*frames: str) -> str:
    return ";".join([RAY, *frames])


@pytest.fixture(scope="module")
def classify():
    return Classifier()


@pytest.fixture(scope="module")
def problems():
    return load_problems("synthetic", split="train")


def test_sampler_stacks_fall_in_generation_sandbox_and_back_pressure(classify):
    gen = ("Sampler.sample_batch (actors/sampler.py:113)", "generate_programs (models/generation.py:64)",
           "GenerationMixin.generate (transformers/generation/utils.py:3008)")
    assert classify(stack("Sampler.run (actors/sampler.py:186)", *gen,
                          "GPT2Model.forward (transformers/models/gpt2/modeling_gpt2.py:800)")) \
        == "sampler: generation, model forward"
    assert classify(stack("Sampler.run (actors/sampler.py:186)", *gen)) \
        == "sampler: generation, sampling loop (top-p, cache, stopping)"
    logprobs = line_of("models/generation.py", "logprobs[rows, step] =")
    assert classify(stack("Sampler.sample_batch (actors/sampler.py:113)", "generate_programs (models/generation.py:64)",
                          f"decode_causal ({logprobs}")) == "sampler: behaviour log-probs (log_softmax, gather)"
    assert classify(stack("Sampler.sample_batch (actors/sampler.py:113)", "generate_programs (models/generation.py:64)",
                          "decode_causal (models/generation.py:120)")) \
        == "sampler: generation, sampling loop (top-p, cache, stopping)"
    assert classify(stack("Sampler.run (actors/sampler.py:190)", "Sampler._wait_pushed (actors/sampler.py:207)",
                          "wait (threading.py:320)")) == "sampler: waiting under back-pressure (buffer.put)"
    # taking new weights while held by back-pressure is weight traffic, not waiting
    assert classify(stack("Sampler._wait_pushed (actors/sampler.py:208)", "Sampler.refresh_weights (actors/sampler.py:70)",
                          "ObjectStoreSync.fetch (learner/weight_sync.py:110)")) \
        == "sampler: fetch new weights (ray.get)"


def test_learner_micro_steps_are_told_apart_by_the_line_that_calls_them(classify):
    rl = line_of("learner/rank.py", "self.micro_step(rl_loss")
    sup = line_of("learner/rank.py", "record(self.micro_step(supervised_loss, self._supervised_batch()))")
    backward = ("LearnerRank.micro_step (learner/rank.py:93)", "DeepSpeedEngine.backward (deepspeed/runtime/engine.py:2200)",
                "Tensor.backward (torch/_tensor.py:630)")
    assert classify(stack(f"LearnerRank.train_step ({rl}", *backward)) == "learner: RL micro-step, backward"
    assert classify(stack(f"LearnerRank.train_step ({sup}", *backward)) == "learner: supervised micro-step, backward"
    assert classify(stack(f"LearnerRank.train_step ({sup}", "LearnerRank.micro_step (learner/rank.py:94)",
                          "DeepSpeedEngine.step (deepspeed/runtime/engine.py:2400)",
                          "AdamW.step (torch/optim/adamw.py:200)")) == "learner: optimizer step (AdamW)"
    assert classify(stack(f"LearnerRank.train_step ({sup}", "LearnerRank.micro_step (learner/rank.py:94)",
                          "DeepSpeedEngine.step (deepspeed/runtime/engine.py:2400)")) \
        == "learner: supervised micro-step, DeepSpeed overhead"
    assert classify("Worker.main_loop (ray/_private/worker.py:1069)") == IDLE


def test_line_of_fails_loudly_when_the_source_moved_on():
    with pytest.raises(LookupError, match="profile_report"):
        line_of("learner/rank.py", "a line that is not there")


def test_thread_cpu_is_split_by_its_own_samples_and_native_threads_keep_their_names(classify):
    gen = stack("Sampler.sample_batch (actors/sampler.py:113)", "generate_programs (models/generation.py:64)",
                "GenerationMixin.generate (transformers/generation/utils.py:3008)")
    waiting = stack("Sampler.run (actors/sampler.py:186)", "RaySandboxPool.run (sandbox/pool.py:100)")
    active = {"thread (11): ray::Sampler": collections.Counter({gen: 30, waiting: 10})}
    split, seen = split_cpu({"ray::Sampler/11": 8.0, "grpc_global_tim/12": 0.5}, active, classify, "dispatch")
    assert seen == 8.0
    assert split["sampler: generation, sampling loop (top-p, cache, stopping)"] == pytest.approx(6.0)
    assert split["sampler: waiting for sandbox verdicts"] == pytest.approx(2.0)
    assert split["native: Ray core-worker threads (gRPC, object transfer, io)"] == pytest.approx(0.5)


def test_problem_stream_draws_as_the_sampler_does(problems):
    free = {p.problem_id for p in problems if not p.trainable_reference}
    stream = problem_stream(problems, 2000, seed=0, reference_free_share=0.75, per_batch=8)
    assert len(stream) % 8 == 0 and len(stream) >= 2000
    share = sum(p.problem_id in free for p in stream) / len(stream)
    assert 0.72 < share < 0.78, share
    # each kind goes through all of its problems before any repeats
    first = [p.problem_id for p in stream if p.problem_id in free][: len(free)]
    assert len(set(first)) == len(free)
    assert problem_stream(problems, 64, 0, 0.75, 8) == stream[:64]  # deterministic from the seed


def test_sandbox_reward_grades_completions_with_the_coarse_reward(problems):
    from models import load_policy
    from sandbox import LocalSandboxPool

    tokenizer = load_policy("tiny:gpt2").tokenizer
    problem = next(p for p in problems if p.meta["supervised"])
    body = problem.meta["reference_body"]
    completions = {"passed": body, "compile_error": "    return (\n", "runtime_error": "    return 1 // 0\n",
                   "failed": "    return None\n"}
    eos = tokenizer.eos_token_id
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + [eos, 5, 6] for text in completions.values()]
    with LocalSandboxPool(1) as pool:
        reward = SandboxCoarseReward([problem], tokenizer, pool)
        rewards = reward(prompts=[problem.prompt] * 4, completions=list(completions.values()), completion_ids=ids,
                         problem_id=[problem.problem_id] * 4)
    assert rewards == [1.0, -1.0, -0.6, -0.3]  # the tokens after EOS are not part of the program
    assert reward.graded == 4 and reward.passed == 1
    assert reward.outcomes == {outcome: 1 for outcome in completions}
