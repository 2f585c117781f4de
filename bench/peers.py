"""Peers on the same work: this system's learning-experiment arms beside TRL's GRPOTrainer.

    pip install -e '.[bench]'      # trl, accelerate (or run it in another environment that has them)
    python bench/peers.py --start-model runs/learning/warm-start/checkpoints/step_000300/hf   # ~20 min on 2 cores
    python bench/peers.py --start-model ... --budget-s 10 --seeds 1 --lrs 2e-5 --eval-n 1 \
        --heldout-tests-only 1 --heldout-supervised 1 --readme ''                          # every code path, ~4 min

Both sides start from the learning experiment's warm start and train for the same wall-clock budget on the same
2 cores, on the same training problems drawn the same way, with the same prompts, sandbox and coarse reward, and
are scored by the same held-out evaluation (bench/learning.py's: unseen instances, their grading tests, pass@1
from n samples), half-way and at the end:
- TRL (bench/peers_trl.py): `trl.GRPOTrainer`, its learning rate chosen fairly: the best held-out tests-only pass@1
  of ``--lrs`` on seed 0, then ``--seeds`` seeds at it;
- this system: the arms named by ``--arms`` (bench/learning_arms.py; `coarse` is the one with TRL's reward), each
  on an embedded Ray cluster exactly as bench/learning.py runs it, ``--seeds`` seeds.
Measured per run: programs generated and graded per second of training, optimizer steps, RL sequences trained
on, held-out pass@1 of both kinds of problems. The starting model is evaluated twice (the evaluation noise).

Writes bench/results/peers.json (every number), bench/results/peers_curves.png and the table between the
``peers`` markers of README.md (bench/peers_report.py; `python bench/peers_report.py` redraws from the JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.learning import checkpoints, evaluate_model, heldout_problems, save, train  # noqa: E402
from bench.learning_arms import ARMS  # noqa: E402
from bench.peers_report import BEGIN, END, summarise, write_outputs  # noqa: E402
from bench.peers_trl import log, run_trl  # noqa: E402

DEFAULT_LRS = (2e-4, 5e-5, 2e-5)


def run_ours(args, arm: str, seed: int, start_model: str, heldout, out_dir: Path) -> dict:
    """One run of this system's ``arm`` for ``args.budget_s`` seconds (as bench/learning.py runs it), evaluated
    half-way and at the end."""
    overrides = [f"--model.name_or_path={start_model}", "--learner.warm_start_steps=0", f"--run.seed={seed}",
                 f"--run.max_wall_s={args.budget_s}", f"--learner.checkpoint_every_s={args.budget_s / 2 + 1}",
                 *ARMS[arm][1], *args.overrides]
    summary = train(f"{arm.replace('+', '-')}-seed{seed}", overrides, out_dir)
    run_dir = Path(summary["run_dir"])
    points = [{"train_s": train_s, **evaluate_model(model_dir, heldout, args, seed=0)}
              for train_s, model_dir in checkpoints(run_dir)]
    graded = summary.get("samples") or 0  # programs the samplers generated and graded (zero-return ones included)
    return {"arm": arm, "seed": seed, "steps": summary["step"], "programs_graded": graded,
            "programs_per_s": round(graded / args.budget_s, 2), "trained_on_accepted": summary["accepted"],
            "heldout": points[-1], "points": points, "run_wall_s": summary["run_wall_s"],
            "curve": graded_curve(run_dir), **learner_timing(run_dir)}


def graded_curve(run_dir: Path) -> list[dict]:
    """Programs graded against seconds of training, from the run's progress records (training begins with the
    first weight publish)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next((r["time"] for r in records if r.get("event") == "publish"), None)
    if start is None:
        return []
    return [{"train_s": round(r["time"] - start, 2), "step": r["step"], "graded": r["samples"],
             "reward": r.get("batch_mean_reward")} for r in records if r.get("kind") == "learner" and "samples" in r]


def learner_timing(run_dir: Path) -> dict:
    """The learner's step time and the share of its trained-on programs that passed, from the run's log."""
    import statistics

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if r.get("kind") == "learner" and "step_s" in r]
    if not steps:
        return {}
    return {"learner_step_s_median": round(statistics.median(r["step_s"] for r in steps), 3),
            "trained_pass_rate": round(statistics.fmean(r.get("batch_pass_rate", 0.0) for r in steps), 4),
            "policy_lag_mean": round(statistics.fmean(r.get("batch_staleness", 0.0) for r in steps), 2)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start-model", required=True, help="the learning experiment's warm start (hf/ directory)")
    parser.add_argument("--arms", default="coarse", help=f"this system's arms, a comma-separated subset of "
                                                          f"{','.join(ARMS)} [coarse]")
    parser.add_argument("--lrs", default=",".join(f"{x:g}" for x in DEFAULT_LRS),
                        help="TRL learning rates tried on seed 0; the best then runs on every seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=75.0, help="seconds of training per run [75]")
    parser.add_argument("--threads", type=int, default=2, help="TRL's torch threads [2: the machine's cores]")
    parser.add_argument("--num-generations", type=int, default=4, help="TRL samples per prompt (GRPO group) [4]")
    parser.add_argument("--grad-accum", type=int, default=1, help="TRL micro-batches per optimizer step [1]")
    parser.add_argument("--generation-batch", type=int, default=0,
                        help="TRL sequences generated at once (generation_batch_size; a multiple of 32 reuses one "
                             "generation for several optimizer steps) [0: one step's 32]")
    parser.add_argument("--sandbox-workers", type=int, default=2, help="TRL's sandbox workers [2]")
    parser.add_argument("--py-spy", action="store_true",
                        help="sample the TRL process with py-spy during training: where TRL's seconds go")
    parser.add_argument("--max-steps", type=int, default=2000, help="TRL's upper bound; the budget stops training")
    parser.add_argument("--skip-trl", action="store_true", help="this system's arms only (a pilot)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for every run of this system (repeatable)")
    parser.add_argument("--eval-n", type=int, default=5)
    parser.add_argument("--eval-temperature", type=float, default=0.8)
    parser.add_argument("--heldout-tests-only", type=int, default=10)
    parser.add_argument("--heldout-supervised", type=int, default=2)
    parser.add_argument("--out-dir", default="runs/peers")
    parser.add_argument("--results", default="bench/results/peers.json")
    parser.add_argument("--png", default="bench/results/peers_curves.png")
    parser.add_argument("--readme", default="README.md", help="the file whose peers table is rewritten ('' = none)")
    args = parser.parse_args(argv)
    args.lr_list = [float(x) for x in args.lrs.split(",")]
    args.max_new_tokens = 96  # bench/learning.py's evaluation setting (configs/learning.yaml)
    args.overrides = [f"--{item.removeprefix('--')}" for item in args.set]
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    if args.readme and not all(m in Path(args.readme).read_text() for m in (BEGIN, END)):  # before the runs, not after 25 minutes of them
        parser.error(f"--readme {args.readme} has no peers markers ({BEGIN} ... {END}): add them, or --readme ''")
    if not args.skip_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            parser.error("TRL is not installed here: pip install -e '.[bench]' (or --skip-trl)")
    return args


def best_lr(sweep: list[dict]) -> float:
    """Highest held-out tests-only pass@1, then supervised pass@1."""
    best = max(sweep, key=lambda r: (r["heldout"]["tests-only"]["pass@1"], r["heldout"]["supervised"]["pass@1"]))
    return best["lr"]


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from cluster.connect import init_ray
    from tasks import load_problems

    out_dir = Path(args.out_dir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    train_problems = [p for p in load_problems("synthetic", split="train") if p.tests.cases]
    heldout = heldout_problems({"tests-only": args.heldout_tests_only, "supervised": args.heldout_supervised})
    results: dict = {"settings": {k: v for k, v in vars(args).items()}, "commands": sys.argv,
                     "load_avg_start": os.getloadavg(), "trl": {"sweep": [], "runs": []}, "ours": []}
    previous = Path(args.results)
    if previous.exists():  # the batching pilots behind TRL's settings (bench/peers_trl.py) stay with the results
        results["trl"]["tuning_pilots"] = json.loads(previous.read_text())["trl"].get("tuning_pilots", [])
    began = time.time()
    log("evaluating the starting model twice (the evaluation noise)")
    results["start"] = [evaluate_model(Path(args.start_model), heldout, args, seed) for seed in (0, 1)]
    if not args.skip_trl:  # TRL first, alone on the machine (no Ray cluster idling beside it)
        for lr in args.lr_list:
            results["trl"]["sweep"].append(run_trl(args, args.start_model, lr, 0, train_problems, heldout, out_dir))
            save(results, args, began)
        lr = results["trl"]["best_lr"] = best_lr(results["trl"]["sweep"])
        results["trl"]["runs"] = [r for r in results["trl"]["sweep"] if r["lr"] == lr]
        for seed in range(1, args.seeds):
            results["trl"]["runs"].append(run_trl(args, args.start_model, lr, seed, train_problems, heldout, out_dir))
            save(results, args, began)
    init_ray(None, "rltf-peers", num_cpus=6)  # as bench/learning.py: one embedded cluster for every run
    try:
        for seed in range(args.seeds):
            for arm in args.arms.split(","):
                log(f"this system, {arm}, seed {seed}: training for {args.budget_s:.0f} s")
                run = run_ours(args, arm, seed, args.start_model, heldout, out_dir)
                log(f"  {run['steps']} steps, {run['programs_per_s']:.1f} programs graded/s; held-out pass@1 "
                    f"tests-only {run['heldout']['tests-only']['pass@1']:.3f}")
                results["ours"].append(run)
                save(results, args, began)
    finally:
        ray.shutdown()
    results["load_avg_end"] = os.getloadavg()
    save(results, args, began)
    write_outputs(results, Path(args.png), Path(args.readme) if args.readme else None)
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
