"""The learning experiment: does RL from unit tests teach what reference solutions cannot?

    python bench/learning.py            # the whole experiment: 43 minutes on 2 CPU cores
    python bench/learning.py --quick    # every code path in a few minutes; its numbers mean nothing

1. Warm start (one run, shared by every arm): supervised training on the references of the `supervised`
   templates of the generated family (configs/learning.yaml).
2. Arms x seeds, each from the warm-start checkpoint for the same wall-clock budget of training, all on one
   embedded Ray cluster, one run at a time (runs interleaved by seed, so drift in machine speed hits every arm):
      supervised    the control: supervised steps only, no samplers (learner.rl=false)
      coarse        RLTF's loop with the coarse reward only (+ the 1:1 supervised anchor, as in the paper)
      coarse+fine   + fine-grained blame of the error line
      rltf          + the adaptive pass-ratio reward: the full method
      offline       rltf's rewards on one fixed buffer sampled by the starting policy (learner.online=false)
   Each run checkpoints half-way through its budget and at the end.
3. Every checkpoint is evaluated on unseen held-out instances, graded by their stronger grading tests, separately
   for `tests-only` and `supervised` templates (pass@1 and pass@5 from n samples, the unbiased estimator); the
   starting checkpoint twice with different sampling seeds: the evaluation noise.
4. bench/results/learning.json (every number), docs/RESULTS.md (tables, verdict, commands) and
   docs/learning_curves.png (held-out pass@1 against wall-clock seconds of training, per arm).
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

from bench.learning_arms import ARMS, KINDS  # noqa: E402
from bench.learning_report import write_report  # noqa: E402


def log(message: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {message}", flush=True)


def heldout_problems(per_template: dict[str, int]):
    """The first instances of each template's held-out split (constants never seen in training)."""
    from tasks import load_problems

    seen: dict[str, int] = {}
    chosen = []
    for problem in load_problems("synthetic", split="heldout"):
        template, kind = problem.meta["template"], problem.meta["template_kind"]
        if seen.get(template, 0) < per_template[kind]:
            seen[template] = seen.get(template, 0) + 1
            chosen.append(problem)
    return chosen


def train(name: str, overrides: list[str], out_dir: Path) -> dict:
    """One run of configs/learning.yaml with ``overrides``, on the connected Ray; returns its summary."""
    from configs import load_config
    from train.command import run_controller

    cfg = load_config("learning", [f"--run.name={name}", f"--run.output_dir={out_dir}", *overrides])
    run_dir = out_dir / name
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: give another --out-dir, or remove it")
    started = time.time()
    summary = run_controller(cfg, run_dir, teardown=True).to_dict()
    summary["run_wall_s"] = round(time.time() - started, 1)
    summary["accepted"] = buffer_accepted(run_dir)
    return summary


def buffer_accepted(run_dir: Path) -> int:
    """Programs the run's buffer accepted (the samplers' statuses are gone once an offline run stops them)."""
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "buffer_closed":
            return record["buffer_accepted"]
    return 0


def checkpoints(run_dir: Path) -> list[tuple[float, Path]]:
    """(seconds of training when saved, hf/ directory) of every checkpoint of a run, in order."""
    from learner.checkpoints import RunCheckpoints

    return [(c.state().train_s, c.hf_dir) for c in RunCheckpoints(run_dir).all()]


def evaluate_model(model_dir: Path, problems, args, seed: int) -> dict:
    from evaluation.evaluate import evaluate

    result = evaluate(str(model_dir), problems, n=args.eval_n, ks=(1, 5), temperature=args.eval_temperature,
                      top_p=0.95, max_new_tokens=args.max_new_tokens, max_prompt_tokens=192, samplers=2, workers=2, seed=seed,
                      chunk_problems=12,
                      show_progress=False)
    scores: dict = {kind: {f"pass@{k}": result.pass_at(k, "template_kind", kind) for k in (1, 5)} for kind in KINDS}
    by = result.summary["report"]["by"]
    scores["outcomes"] = by["template_kind"]["tests-only"]["outcome_fractions"]
    tests_only = {p.meta["template"] for p in problems if p.meta["supervised"] is False}
    scores["tests_only_by_template"] = {name: row["pass@k"]["1"] for name, row in by["template"].items()
                                        if name in tests_only}  # pass@1 = the fraction of its samples passing
    scores["eval_s"] = result.summary["wall_s"]
    return scores


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm [3]")
    parser.add_argument("--budget-s", type=float, default=75.0, help="seconds of training per arm run [75]")
    parser.add_argument("--warm-start-steps", type=int, default=300)
    parser.add_argument("--start-model", default=None,
                        help="skip the warm start and start every arm from this saved model (hf/ directory)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--eval-n", type=int, default=5, help="samples per held-out problem [5]")
    parser.add_argument("--eval-temperature", type=float, default=0.8)
    parser.add_argument("--heldout-tests-only", type=int, default=10, help="held-out instances per tests-only template")
    parser.add_argument("--heldout-supervised", type=int, default=2, help="held-out instances per supervised template")
    parser.add_argument("--out-dir", default="runs/learning", help="run directories go here")
    parser.add_argument("--results", default="bench/results/learning.json")
    parser.add_argument("--docs", default="docs", help="RESULTS.md and learning_curves.png go here")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for every run, e.g. --set learner.lr=1e-4 (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, not the method")
    args = parser.parse_args(argv)
    args.overrides, args.max_new_tokens = [], 96  # 96: configs/learning.yaml's model.max_new_tokens
    if args.quick:
        args.seeds, args.warm_start_steps = 1, 4
        args.budget_s = min(args.budget_s, 15.0)
        args.eval_n, args.heldout_tests_only, args.heldout_supervised = 2, 1, 1
        args.max_new_tokens = 32
        args.overrides = ["--buffer.capacity=24", "--buffer.min_fill=8", "--buffer.max_unread=8",
                          f"--model.max_new_tokens={args.max_new_tokens}",
                          "--sampler.problems_per_batch=4",
                          "--learner.batch_size=8", "--learner.supervised_batch_size=8"]
    args.overrides += [f"--{item.removeprefix('--')}" for item in args.set]
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from cluster.connect import init_ray

    began = time.time()
    out_dir = Path(args.out_dir).resolve()
    arms = args.arms.split(",")
    problems = heldout_problems({"tests-only": args.heldout_tests_only, "supervised": args.heldout_supervised})
    log(f"{len(arms)} arms x {args.seeds} seeds, {args.budget_s:.0f} s of training each; held-out set "
        f"{sum(p.meta['supervised'] is False for p in problems)} tests-only + "
        f"{sum(p.meta['supervised'] is True for p in problems)} supervised problems, n={args.eval_n}")
    init_ray(None, "rltf-learning", num_cpus=6)
    results: dict = {"settings": {k: v for k, v in vars(args).items()}, "runs": [], "commands": sys.argv}
    try:
        if args.start_model:
            start_model = Path(args.start_model)
            results["warm_start"] = {"run_wall_s": 0.0, "steps": 0, "model": str(start_model)}
        else:
            log(f"warm start: {args.warm_start_steps} supervised steps")
            warm = train("warm-start", [*args.overrides, f"--learner.warm_start_steps={args.warm_start_steps}",
                                        "--learner.total_steps=0", "--learner.num_cpus=2"], out_dir)
            start_model = Path(warm["model_dir"])
            results["warm_start"] = {"run_wall_s": warm["run_wall_s"], "steps": warm["step"]}
            log(f"warm start done in {warm['run_wall_s']:.0f} s")
        log("evaluating the starting model twice (the evaluation noise)")
        results["start"] = [evaluate_model(start_model, problems, args, seed) for seed in (0, 1)]
        log("start: " + ", ".join(f"{kind} pass@1 {results['start'][0][kind]['pass@1']:.3f}/"
                                  f"{results['start'][1][kind]['pass@1']:.3f}" for kind in KINDS))
        for seed in range(args.seeds):
            # the main comparison first, so that its numbers arrive early
            for arm in sorted(arms, key=lambda a: ("supervised", "rltf").index(a) if a in ("supervised", "rltf") else 2):
                overrides = [f"--model.name_or_path={start_model}", "--learner.warm_start_steps=0",
                             f"--run.seed={seed}", f"--run.max_wall_s={args.budget_s}",
                             f"--learner.checkpoint_every_s={args.budget_s / 2 + 1}", *ARMS[arm][1], *args.overrides]
                log(f"{arm}, seed {seed}: training for {args.budget_s:.0f} s")
                summary = train(f"{arm.replace('+', '-')}-seed{seed}", overrides, out_dir)
                run = {"arm": arm, "seed": seed, "steps": summary["step"], "samples": summary["accepted"],
                       "run_wall_s": summary["run_wall_s"], "points": []}
                for train_s, model_dir in checkpoints(Path(summary["run_dir"])):
                    scores = evaluate_model(model_dir, problems, args, seed=0)
                    run["points"].append({"train_s": train_s, **scores})
                final = run["points"][-1]
                log(f"{arm}, seed {seed}: {run['steps']} steps; held-out pass@1 tests-only "
                    f"{final['tests-only']['pass@1']:.3f}, supervised {final['supervised']['pass@1']:.3f}")
                results["runs"].append(run)
                save(results, args, began)
    finally:
        ray.shutdown()
    results["total_wall_s"] = round(time.time() - began, 1)
    save(results, args, began)
    write_report(results, ARMS, Path(args.docs))
    log(f"done in {results['total_wall_s'] / 60:.1f} min: {args.results}, {args.docs}/RESULTS.md, "
        f"{args.docs}/learning_curves.png")
    return 0


def save(results: dict, args, began: float) -> None:
    results["elapsed_s"] = round(time.time() - began, 1)
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
