"""Peers on the same work: TRL's GRPOTrainer against this system's learning-experiment arms.

    pip install -e '.[bench]'      # trl, accelerate
    python bench/peers.py --start-model runs/learning/warm-start/checkpoints/step_000300/hf

The TRL side (this file, for now): `trl.GRPOTrainer` trains the learning experiment's warm start (a tiny GPT-2
saved with `save_pretrained`; TRL loads it from the path) on the same work as bench/learning.py's `coarse` arm:
- the same training problems, drawn as this system's sampler draws them (configs/learning.yaml: three quarters of
  the slots for problems without a trainable reference, each kind in its own shuffled order), with the same
  prompt text and token ids (TRL tokenises a prompt as `models.encoding.encode_prompt` does; checked below);
- a reward function that grades each completion in this project's sandbox (`sandbox.LocalSandboxPool`, training
  tests) and scores it with this project's coarse reward (`rewards.coarse_reward`: +1 passed, -0.3 failed,
  -0.6 runtime error, -1 compile error; an infra_error gets no reward, as in the sampler);
- 32 RL sequences per optimizer step (8 problems x 4 samples, the sampler's batch and group size), the same
  generation settings (temperature, top-p, max new tokens), the same AdamW settings (weight decay, clipping at
  1.0) and warm-up (5 steps, then constant);
- 2 cores (torch threads = 2), a wall-clock budget of training enforced by a `TrainerCallback`, then the same
  held-out evaluation as bench/learning.py (`bench.learning.evaluate_model`).
The learning rate is chosen fairly: the best held-out tests-only pass@1 of ``--lrs`` on seed 0, then ``--seeds``
seeds at it. Everything else is TRL's default GRPO (loss "dapo", group-scaled advantages, beta 0, one iteration
per generation batch): what a TRL user gets. Batching, tuned as a TRL user would on this machine (pilots at lr
5e-5, seed 0, in bench/results/peers.json: ``trl.tuning_pilots``): 4 generations per prompt (the sampler's group;
8 learned no better: held-out tests-only 0.263 against 0.249, same speed), one micro-batch of 32 (it fits, and one
batch is fastest on CPU), and one generation batch per step (64 reused over 2 steps gave 35% more programs/s and
collapsed to empty programs).

Writes bench/results/peers.json and bench/results/peers_trl_curves.png (training reward against seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, once per step

from bench.learning import evaluate_model, heldout_problems  # noqa: E402
from bench.learning_arms import KINDS  # noqa: E402

DEFAULT_LRS = (2e-4, 5e-5, 2e-5)


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
        self.lock = threading.Lock()

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


def budget_callback(budget_s: float, reward_fn: SandboxCoarseReward):
    """Stops training ``budget_s`` seconds after it began; records the training reward of every step."""
    from transformers import TrainerCallback

    class WallClockBudget(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = self.last_print = 0.0
            self.curve: list[dict] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() - self.t0 >= budget_s:
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
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

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
        budget = budget_callback(args.budget_s, reward)
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
    scores = evaluate_model(model_dir, heldout, args, seed=0)
    return {"lr": lr, "seed": seed, "steps": steps, "train_s": round(train_s, 2), "setup_s": round(setup_s, 2),
            "programs_graded": reward.graded, "programs_per_s": round(reward.graded / train_s, 2),
            "train_pass_rate": round(reward.passed / max(reward.graded, 1), 4), "outcomes": reward.outcomes,
            "reward_s": round(reward.seconds, 2), "steps_per_s": round(steps / train_s, 3),
            "heldout": scores, "curve": budget.curve, "model_dir": str(model_dir), "py_spy": profile,
            "tuning": {"num_generations": args.num_generations, "grad_accum": args.grad_accum,
                       "generation_batch": args.generation_batch or per_step}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start-model", required=True, help="the learning experiment's warm start (hf/ directory)")
    parser.add_argument("--lrs", default=",".join(f"{x:g}" for x in DEFAULT_LRS),
                        help="learning rates tried on seed 0; the best then runs on every seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=75.0, help="seconds of training per run [75]")
    parser.add_argument("--threads", type=int, default=2, help="torch threads [2: the machine's cores]")
    parser.add_argument("--num-generations", type=int, default=4, help="samples per prompt (GRPO group) [4]")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step [1]")
    parser.add_argument("--generation-batch", type=int, default=0,
                        help="sequences generated at once (TRL's generation_batch_size; a multiple of 32 reuses one "
                             "generation for several optimizer steps) [0: one step's 32]")
    parser.add_argument("--sandbox-workers", type=int, default=2)
    parser.add_argument("--py-spy", action="store_true",
                        help="sample this process with py-spy during training: where TRL's seconds go")
    parser.add_argument("--max-steps", type=int, default=2000, help="upper bound; the budget stops training")
    parser.add_argument("--eval-n", type=int, default=5)
    parser.add_argument("--eval-temperature", type=float, default=0.8)
    parser.add_argument("--heldout-tests-only", type=int, default=10)
    parser.add_argument("--heldout-supervised", type=int, default=2)
    parser.add_argument("--out-dir", default="runs/peers")
    parser.add_argument("--results", default="bench/results/peers.json")
    parser.add_argument("--png", default="bench/results/peers_trl_curves.png")
    args = parser.parse_args(argv)
    args.lr_list = [float(x) for x in args.lrs.split(",")]
    args.max_new_tokens = 96  # bench/learning.py's evaluation setting (configs/learning.yaml)
    return args


def best_lr(sweep: list[dict]) -> float:
    """Highest held-out tests-only pass@1, then supervised pass@1."""
    best = max(sweep, key=lambda r: (r["heldout"]["tests-only"]["pass@1"], r["heldout"]["supervised"]["pass@1"]))
    return best["lr"]


def main(argv=None) -> int:
    args = parse_args(argv)
    from tasks import load_problems

    out_dir = Path(args.out_dir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    train_problems = [p for p in load_problems("synthetic", split="train") if p.tests.cases]
    heldout = heldout_problems({"tests-only": args.heldout_tests_only, "supervised": args.heldout_supervised})
    results: dict = {"settings": {k: v for k, v in vars(args).items()}, "load_avg_start": os.getloadavg(),
                     "trl": {"sweep": [], "runs": []}}
    began = time.time()
    log("evaluating the starting model")
    results["start"] = evaluate_model(Path(args.start_model), heldout, args, seed=0)
    for lr in args.lr_list:
        run = run_trl(args, args.start_model, lr, 0, train_problems, heldout, out_dir)
        results["trl"]["sweep"].append(run)
        report(run)
        save(results, args, began)
    lr = best_lr(results["trl"]["sweep"])
    results["trl"]["best_lr"] = lr
    results["trl"]["runs"] = [r for r in results["trl"]["sweep"] if r["lr"] == lr]
    for seed in range(1, args.seeds):
        run = run_trl(args, args.start_model, lr, seed, train_problems, heldout, out_dir)
        results["trl"]["runs"].append(run)
        report(run)
        save(results, args, began)
    results["load_avg_end"] = os.getloadavg()
    save(results, args, began)
    plot_curves(results, Path(args.png))
    summarise(results)
    return 0


def report(run: dict) -> None:
    h = run["heldout"]
    log(f"TRL lr {run['lr']:g} seed {run['seed']}: {run['steps']} steps, {run['programs_per_s']:.1f} programs/s; "
        f"held-out pass@1 tests-only {h['tests-only']['pass@1']:.3f}, supervised {h['supervised']['pass@1']:.3f}")


def summarise(results: dict) -> None:
    import statistics

    runs = results["trl"]["runs"]
    print(f"\nTRL GRPO, lr {results['trl']['best_lr']:g} (best of the sweep), {len(runs)} seeds:")
    columns = {"programs/s": [r["programs_per_s"] for r in runs], "optimizer steps": [r["steps"] for r in runs]}
    for kind in KINDS:
        columns[f"held-out {kind} pass@1"] = [r["heldout"][kind]["pass@1"] for r in runs]
    for key, values in columns.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {key:28s} {statistics.mean(values):8.3f} ± {spread:.3f}   ({', '.join(f'{v:g}' for v in values)})")


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in results["trl"]["sweep"] + results["trl"]["runs"][1:]:
        xs = [p["train_s"] for p in run["curve"]]
        ys = [float(p["reward"]) for p in run["curve"]]
        smooth = [sum(ys[max(0, i - 9): i + 1]) / len(ys[max(0, i - 9): i + 1]) for i in range(len(ys))]
        ax.plot(xs, smooth, lw=1.2, label=f"TRL GRPO lr {run['lr']:g} seed {run['seed']} ({run['steps']} steps)")
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("training reward (mean coarse reward of a step's\n32 programs, mean of the last 10 steps)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(results: dict, args, began: float) -> None:
    results["elapsed_s"] = round(time.time() - began, 1)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
