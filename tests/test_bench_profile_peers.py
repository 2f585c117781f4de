"""The profile's stack categories (bench/profile_report.py), the TRL side's problem stream and sandbox reward
(bench/peers_trl.py) and the peers report (bench/peers_report.py), without Ray or TRL: the reward grades real
programs in a real sandbox pool."""
from __future__ import annotations

import collections

import pytest

from bench.peers_trl import SandboxCoarseReward, problem_stream
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


def peers_results(ours: list[float], trl: list[float]) -> dict:
    def scores(tests_only: float) -> dict:
        return {"tests-only": {"pass@1": tests_only, "pass@5": tests_only}, "supervised": {"pass@1": 0.78, "pass@5": 0.8}}

    def run(arm: str, seed: int, value: float, per_s: float) -> dict:
        points = [{"train_s": 37.0, **scores(value - 0.01)}, {"train_s": 75.0, **scores(value)}]
        return {"arm": arm, "lr": 2e-5, "seed": seed, "steps": 50, "programs_per_s": per_s, "heldout": points[-1],
                "points": points, "curve": [{"train_s": 10.0, "graded": 300}, {"train_s": 70.0, "graded": 3000}]}

    return {"settings": {"budget_s": 75.0, "seeds": 3}, "commands": ["bench/peers.py"], "elapsed_s": 600,
            "load_avg_start": [0.5], "load_avg_end": [0.7], "start": [scores(0.19), scores(0.188)],
            "ours": [run("coarse", i, v, 48.0) for i, v in enumerate(ours)],
            "trl": {"best_lr": 2e-5, "runs": [run("trl", i, v, 32.0) for i, v in enumerate(trl)],
                    "sweep": [run("trl", 0, trl[0], 32.0)]}}


def test_peers_report_counts_a_difference_only_beyond_noise_and_seed_spread(tmp_path):
    from bench.peers_report import BEGIN, END, markdown, verdicts, write_outputs

    clear = peers_results([0.31, 0.33, 0.35], [0.25, 0.252, 0.257])
    assert "`coarse` against TRL: +0.077" in verdicts(clear)[0] and verdicts(clear)[0].endswith("**above**")
    overlapping = peers_results([0.24, 0.33, 0.35], [0.25, 0.252, 0.257])  # one seed below TRL's best seed
    assert verdicts(overlapping)[0].endswith("**no difference**")
    assert "| programs generated and graded per second of training | 48.0 ± 0.0 | 32.0 ± 0.0 |" in markdown(clear)
    assert "| 1.50x | 1.00 |" in markdown(clear)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\nafter\n")
    write_outputs(clear, tmp_path / "curves.png", readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\nafter\n") and "old table" not in text
    assert "1.50x" in text and (tmp_path / "curves.png").stat().st_size > 0
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="peers markers"):
        write_outputs(clear, tmp_path / "curves.png", readme)
