"""The TRL side of bench/peers.py: `trl.GRPOTrainer` on the learning experiment's work.

`trl.GRPOTrainer` trains the learning experiment's warm start (a tiny GPT-2 saved with `save_pretrained`; TRL loads
it from the path) on the same work as bench/learning.py's `coarse` arm:
- the same training problems, drawn as this system's sampler draws them (configs/learning.yaml: three quarters of
  the slots for problems without a trainable reference, each kind in its own shuffled order), with the same
  prompt text and token ids (TRL tokenises a prompt as `models.encoding.encode_prompt` does; checked below);
- a reward function that grades each completion in this project's sandbox (`sandbox.LocalSandboxPool`, training
  tests) and scores it with this project's coarse reward (`rewards.coarse_reward`: +1 passed, -0.3 failed,
  -0.6 runtime error, -1 compile error; an infra_error gets no reward, as in the sampler);
- 32 RL sequences per optimizer step (8 problems x 4 samples, the sampler's batch and group size), the same
  generation settings (temperature, top-p, max new tokens), the same AdamW settings (weight decay, clipping at
  1.0) and warm-up (5 steps, then constant);
- 2 cores (torch threads = 2), a wall-clock budget of training enforced by a `TrainerCallback` (which also saves
  the model half-way, as this system's runs checkpoint half-way), then the same held-out evaluation.
Everything else is TRL's default GRPO (loss "dapo", group-scaled advantages, beta 0, one iteration per generation
batch): what a TRL user gets. Batching, tuned as a TRL user would on this machine (pilots at lr 5e-5, seed 0, in
bench/results/peers.json: ``trl.tuning_pilots``): 4 generations per prompt (the sampler's group; 8 learned no
better: held-out tests-only 0.263 against 0.249, same speed), one micro-batch of 32 (it fits, and one batch is
fastest on CPU), and one generation batch per step (64 reused over 2 steps gave 35% more programs/s and collapsed
to empty programs).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def problem_stream(problems, n: int, seed: int, reference_free_share: float | None, per_batch: int) -> list:
    """``n`` problems in the order this system's sampler draws them (actors.sampler.Sampler._next_problems):
    per slot, a problem without a trainable reference with probability ``reference_free_share``, each kind in its
    own reshuffled order. Rounded up to whole batches."""
    rng = random.Random(f"{seed}/trl")
    pools = {"free": [p for p in problems if not p.trainable_reference],
             "referenced": [p for p in problems if p.trainable_reference], "all": list(problems)}
    order: dict[str, list] = {kind: [] for kind in pools}
    out = []
    while len(out) < n or len(out) % per_batch:
        kind = "all" if reference_free_share is None else (
            "free" if rng.random() < reference_free_share else "referenced")
        if not pools[kind]:
            kind = "all"
        if not order[kind]:
            order[kind] = list(pools[kind])
            rng.shuffle(order[kind])
        out.append(order[kind].pop())
    return out


class SandboxCoarseReward:
    """TRL reward function: each completion graded in the project's sandbox, scored by its coarse reward."""

    __name__ = "sandbox_coarse"  # TRL names a reward function's metrics after it

    def __init__(self, problems, tokenizer, pool) -> None:
        self.by_id = {p.problem_id: p for p in problems}
        self.tokenizer, self.pool = tokenizer, pool
        self.graded = self.passed = 0
        self.seconds = 0.0
        self.outcomes: dict[str, int] = {}

    def __call__(self, prompts, completions, completion_ids, problem_id, **_) -> list:
        from rewards import NoRewardError, coarse_reward

        started = time.perf_counter()
        eos = self.tokenizer.eos_token_id
        jobs = []
        for ids, pid in zip(completion_ids, problem_id):
            ids = list(ids)
            body = ids[: ids.index(eos)] if eos in ids else ids
            # Decoded as models.generation.generate_programs decodes a sample: the text must spell the ids.
            text = self.tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            problem = self.by_id[pid]
            jobs.append((problem, problem.program_prefix + text))
        verdicts = self.pool.run(jobs)  # training tests, as the sampler grades
        rewards = []
        for verdict in verdicts:
            self.outcomes[verdict.outcome] = self.outcomes.get(verdict.outcome, 0) + 1
            try:
                rewards.append(coarse_reward(verdict))
            except NoRewardError:
                rewards.append(None)  # the sandbox failed, not the program: TRL leaves it out
        self.graded += len(verdicts)
        self.passed += sum(v.outcome == "passed" for v in verdicts)
        self.seconds += time.perf_counter() - started
        return rewards


def budget_callback(budget_s: float, reward_fn: SandboxCoarseReward, half_dir: Path):
    """Stops training ``budget_s`` seconds after it began, saves the model into ``half_dir`` at the first step end
    past half the budget, and records the training reward of every step."""
    from transformers import TrainerCallback

    class WallClockBudget(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = self.last_print = 0.0
            self.half_s: float | None = None
            self.curve: list[dict] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            elapsed = time.time() - self.t0
            if self.half_s is None and elapsed >= budget_s / 2:
                self.half_s = round(elapsed, 2)
                model.save_pretrained(half_dir)
                processing_class.save_pretrained(half_dir)
            if elapsed >= budget_s:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.curve.append({"train_s": round(time.time() - self.t0, 2), "step": state.global_step,
                                   "reward": logs["reward"], "graded": reward_fn.graded,
                                   "completion_length": logs.get("completions/mean_length"),
                                   "frac_reward_zero_std": logs.get("frac_reward_zero_std")})
                if time.time() - self.last_print >= 10:
                    self.last_print = time.time()
                    log(f"  {self.curve[-1]['train_s']:5.1f} s: step {state.global_step}, {reward_fn.graded} programs "
                        f"graded, step reward {logs['reward']:+.3f}")

    return WallClockBudget()


class ProcessProfile:
    """py-spy on this process for the training budget; samples by TRL phase (what each second of its thread does)."""

    PHASES = (("reward: sandbox + coarse reward", "_calculate_rewards"), ("generation", "generate ("),
              ("backward", "backward (torch/"), ("optimizer step", "torch/optim/"),
              ("forward for log-probs (loss)", "compute_loss"), ("generation-side log-probs, batching", "_prepare_inputs"))

    def __init__(self, budget_s: float, run_dir: Path) -> None:
        import subprocess

        from bench.profile_run import py_spy

        run_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.rate = run_dir / "py-spy.txt", 20
        self.proc = subprocess.Popen(
            [py_spy(), "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--duration",
             str(int(budget_s)), "--format", "raw", "--idle", "--nonblocking", "--output", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def result(self) -> dict:
        self.proc.wait(timeout=120)
        seconds: dict[str, float] = {}
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "run_trl (" not in stack:
                continue  # the trainer's thread only; the sandbox pool's threads just wait on sockets
            phase = next((name for name, needle in self.PHASES if needle in stack), "other")
            seconds[phase] = seconds.get(phase, 0.0) + int(count) / self.rate
        return {k: round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


def check_prompt_encoding(tokenizer, problems, max_prompt_tokens: int) -> None:
    """TRL tokenises a text prompt with ``tokenizer(text)`` and never cuts it; the sampler uses `encode_prompt`,
    which keeps the last ``max_prompt_tokens``. They agree while no prompt is longer than that."""
    from models.encoding import encode_prompt

    for p in problems:
        if tokenizer(text=p.prompt)["input_ids"] != encode_prompt(tokenizer, p.prompt, max_prompt_tokens):
            raise SystemExit(f"{p.problem_id}: TRL's prompt ids would differ from the sampler's")


def run_trl(args, start_model: str, lr: float, seed: int, train_problems, heldout, out_dir: Path) -> dict:
    """One TRL GRPO run of ``args.budget_s`` seconds; its half-way and final models evaluated on ``heldout``."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from bench.learning import evaluate_model
    from configs import load_config
    from sandbox import LocalSandboxPool

    cfg = load_config("learning", [])  # the learning experiment's sampler, model and learner settings
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    per_step = cfg.learner.batch_size  # 32 RL sequences per optimizer step
    prompts_per_step = per_step // args.num_generations
    stream = problem_stream(train_problems, prompts_per_step * args.max_steps, seed,
                            cfg.sampler.reference_free_share, prompts_per_step)
    check_prompt_encoding(tokenizer, {p.problem_id: p for p in stream}.values(), cfg.model.max_prompt_tokens)
    dataset = Dataset.from_list([{"prompt": p.prompt, "problem_id": p.problem_id} for p in stream])
    run_dir = out_dir / f"trl-lr{lr:g}-seed{seed}"
    config = GRPOConfig(
        output_dir=str(run_dir), seed=seed, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        learning_rate=lr, lr_scheduler_type="constant_with_warmup", warmup_steps=cfg.learner.warmup_steps,
        weight_decay=cfg.learner.weight_decay, max_grad_norm=1.0, max_steps=args.max_steps,
        per_device_train_batch_size=per_step // args.grad_accum, gradient_accumulation_steps=args.grad_accum,
        generation_batch_size=args.generation_batch or None,
        num_generations=args.num_generations, max_completion_length=cfg.model.max_new_tokens,
        temperature=cfg.sampler.temperature, top_p=cfg.sampler.top_p, top_k=0,
        shuffle_dataset=False,  # the stream above is already the sampler's order
        dataloader_num_workers=0, disable_tqdm=True,
    )
    with LocalSandboxPool(args.sandbox_workers, cfg.sandbox) as pool:
        reward = SandboxCoarseReward(train_problems, tokenizer, pool)
        budget = budget_callback(args.budget_s, reward, run_dir / "hf-half")
        trainer = GRPOTrainer(model=start_model, reward_funcs=reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[budget])
        trainer.remove_callback(PrinterCallback)  # one dict per step; the budget callback prints a status line
        spy = ProcessProfile(args.budget_s, run_dir) if args.py_spy else None
        started = time.time()
        trainer.train()
        profile = spy.result() if spy else None
        train_s = time.time() - budget.t0
        setup_s = budget.t0 - started
    model_dir = run_dir / "hf"
    trainer.save_model(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    steps = trainer.state.global_step
    del trainer
    log(f"TRL lr {lr:g} seed {seed}: {steps} steps, {reward.graded} programs graded in {train_s:.1f} s "
        f"({reward.graded / train_s:.1f}/s); evaluating")
    points = [] if budget.half_s is None else [  # None: max_steps ended training before half the budget
        {"train_s": budget.half_s, **evaluate_model(run_dir / "hf-half", heldout, args, seed=0)}]
    scores = evaluate_model(model_dir, heldout, args, seed=0)
    points.append({"train_s": round(train_s, 2), **scores})
    return {"lr": lr, "seed": seed, "steps": steps, "train_s": round(train_s, 2), "setup_s": round(setup_s, 2),
            "programs_graded": reward.graded, "programs_per_s": round(reward.graded / train_s, 2),
            "train_pass_rate": round(reward.passed / max(reward.graded, 1), 4), "outcomes": reward.outcomes,
            "reward_s": round(reward.seconds, 2), "steps_per_s": round(steps / train_s, 3),
            "heldout": scores, "points": points, "curve": budget.curve, "model_dir": str(model_dir), "py_spy": profile,
            "tuning": {"num_generations": args.num_generations, "grad_accum": args.grad_accum,
                       "generation_batch": args.generation_batch or per_step}}
