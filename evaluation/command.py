"""`launch.py eval`: evaluate a model on a dataset and write ``samples.jsonl``, ``verdicts.jsonl`` (the
`launch.py execute` form plus ``sample_index``, so ``execute --grading-tests`` re-grades it), ``summary.json`` and
``results.md``."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from evaluation.evaluate import (
    EvalError,
    EvalResult,
    check_settings,
    evaluate,
    resolve_model,
)
from evaluation.pass_at_k import parse_ks, results_markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", required=True, help="hub name, model dir, tiny:<preset>, train run dir or checkpoint dir")
    add("--dataset", required=True, help="problems file or folder, dataset hub name, or 'synthetic'")
    add("--format", default=None, help="problem format (default: detected)")
    add("--split", default=None, help="keep only this split (e.g. test, heldout); default: all")
    add("--limit", type=int, default=None, help="at most this many problems (after the split)")
    add("--n", type=int, default=20, help="samples per problem [20]")
    add("--k", default="1,5,10", help="comma-separated k of pass@k [1,5,10]")
    add("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy with n=1 [0.8]")
    add("--top-p", type=float, default=0.95, help="nucleus sampling threshold [0.95]")
    add("--max-new-tokens", type=int, default=96, help="program length limit in tokens [96]")
    add("--max-prompt-tokens", type=int, default=256, help="prompt length limit in tokens (keeps the end) [256]")
    add("--kind", choices=("seq2seq", "causal"), default=None, help="model family (default: from its config)")
    add("--samplers", type=int, default=None,
        help="evaluation actors, each with a policy copy; 0 = no Ray [eval.num_actors of --config, else 2]")
    add("--config", default=None, help="a preset or YAML file: its eval section places the evaluation actors (CPUs, "
        "GPUs, custom resources; e.g. one GPU each) and its sandbox section sets the grading limits")
    add("--workers", type=int, default=0, help="sandbox workers (default: one per core)")
    add("--out", default=None, help="output directory (default: runs/eval-<model>-<time>)")
    add("--address", default=None, help="join this Ray cluster (default: an embedded local Ray)")
    add("--seed", type=int, default=0, help="sampling seed [0]")


def _slug(model: str) -> str:
    path = Path(model.rstrip("/"))
    parts = [p for p in path.parts[-3:] if p not in ("hf", "checkpoints")] if path.exists() else [model]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-")[:60] or "model"


def write_outputs(result: EvalResult, out: Path, title: str, regrade: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(s) + "\n" for s in result.samples)
    with open(out / "verdicts.jsonl", "w", encoding="utf-8") as handle:
        for s, v in zip(result.samples, result.verdicts):
            handle.write(json.dumps({**v.summary(), "sample_index": s["sample_index"]}) + "\n")
    (out / "summary.json").write_text(json.dumps({**result.summary, "regrade_command": regrade}, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(result.summary, title, regrade))
    result.out_dir = out


def run(args: argparse.Namespace) -> int:
    from models.loading import ModelLoadError, resolve_source
    from tasks import DatasetUnavailableError, ProblemFormatError, load_problems

    from cluster.placement import actor_options
    from configs import ConfigError, load_config

    try:  # everything that can be wrong with the input fails here, in one sentence, before any model loads
        cfg = load_config(args.config) if args.config else None
        samplers = args.samplers if args.samplers is not None else cfg.eval.num_actors if cfg else 2
        ks = parse_ks(args.k)
        check_settings(args.n, args.temperature, samplers)
        resolve_source(resolve_model(args.model))
        problems = load_problems(args.dataset, fmt=args.format, split=args.split, limit=args.limit)
    except (EvalError, ConfigError, ModelLoadError, DatasetUnavailableError, ProblemFormatError, OSError,
            ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / f"eval-{_slug(args.model)}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        result = evaluate(args.model, problems, args.n, ks, temperature=args.temperature, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                          kind=args.kind, samplers=samplers, workers=args.workers, seed=args.seed,
                          ray_address=args.address, limits=cfg.sandbox if cfg else None,
                          actor_options=actor_options(cfg, "eval") if cfg else None)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = f" ({args.split})" if args.split else ""
    regrade = (f"python launch.py execute --problems {args.dataset}{f' --format {args.format}' if args.format else ''}"
               f" --samples {out / 'samples.jsonl'} --grading-tests --out {out / 'regraded.jsonl'}")
    write_outputs(result, out, f"pass@k of {args.model} on {args.dataset}{split}", regrade)
    print((out / "results.md").read_text())
    print(f"eval: wrote {out}/samples.jsonl, verdicts.jsonl, summary.json, results.md", file=sys.stderr)
    return 0
