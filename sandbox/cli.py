"""`launch.py execute`: grade programs produced anywhere against problems' unit tests, JSONL in, JSONL out.

Input: a problems file or folder in any format `tasks.load_problems` reads, and a samples file as `tasks.read_samples`
reads it: the project's ``{"problem_id", "program"}`` rows, human-eval's ``{"task_id", "completion"}`` or evalplus's
``{"task_id", "solution"}``, with the project's ids or the dataset's own. Output: each input row, in order, with its
verdict (Verdict.summary()) and ``passed`` added (`tasks.result_row`), to ``--out`` or standard output. Progress
goes to standard error.
``--rewards`` adds fields computed by a function the caller passes as ``annotate`` (launch.py passes
`rewards.verdict_rewards`): the rewards depend on the sandbox, never the reverse. Every line records the
isolation level the program ran under.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", required=True, help="problems file or folder (MBPP, HumanEval, APPS, ...)")
    parser.add_argument("--samples", required=True,
                        help='samples file (JSONL or JSON, .gz too): {"problem_id", "program"}, human-eval\'s '
                             '{"task_id", "completion"} or evalplus\'s {"task_id", "solution"} rows; ids as the '
                             "project's or the dataset's own (MBPP 11, HumanEval/0, APPS 4000)")
    parser.add_argument("--out", default="-", help="where to write verdicts as JSONL (default: standard output)")
    parser.add_argument("--format", default=None, help="problem format (default: detected from the file)")
    parser.add_argument("--workers", type=int, default=0, help="sandbox workers (default: two per core)")
    parser.add_argument("--grading-tests", action="store_true", help="grade with the stronger grading tests")
    parser.add_argument("--test-timeout", type=float, default=None, help="seconds per test (default: config)")
    parser.add_argument("--program-timeout", type=float, default=None, help="seconds per program (default: config)")
    parser.add_argument("--rewards", action="store_true",
                        help="add the RLTF rewards to each line: reward, adaptive_reward, fine_category, blamed_line "
                             '(a sample line may carry "truncated": true when generation hit the length limit)')
    parser.add_argument("--isolation", choices=("auto", "full", "none"), default=None,
                        help="auto (default): namespaces and seccomp, cgroups where available, and stop with an "
                             "explanation when namespaces are unavailable; full: also require cgroups; none: rlimits "
                             "only (unsafe for untrusted programs)")


def run(args: argparse.Namespace, annotate=None) -> int:
    """``annotate(verdict, program, truncated=...) -> dict``: the extra fields of ``--rewards``."""
    from configs.schema import SandboxConfig
    from sandbox.forkserver import SandboxUnavailable
    from sandbox.local_pool import LocalSandboxPool, detach_grader_process
    from tasks import load_problems, read_samples, result_row, write_jsonl

    if args.rewards and annotate is None:
        print("error: --rewards needs the reward functions (run it through launch.py execute)", file=sys.stderr)
        return 2

    try:
        samples = read_samples(args.samples, load_problems(args.problems, fmt=args.format, split=None))
    except (OSError, ValueError) as exc:  # ProblemFormatError / SampleFormatError name file, line and field
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = SandboxConfig(num_workers=args.workers)
    if args.test_timeout is not None:
        limits.test_timeout_s = args.test_timeout
    if args.program_timeout is not None:
        limits.program_timeout_s = args.program_timeout
    if args.isolation is not None:
        limits.isolation = args.isolation
    jobs = [(s.problem, s.program) for s in samples]
    out_path = args.out if args.out == "-" else os.path.abspath(args.out)
    detach_grader_process()  # the inputs are read: from here on this process only grades
    start, last = time.monotonic(), [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or done == total:
            last[0] = now
            rate = done / max(now - start, 1e-9)
            print(f"\rexecute: {done}/{total} programs ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)

    try:
        pool = LocalSandboxPool(args.workers, limits)
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pool:
        print(f"execute: {len(jobs)} programs on {len(pool.servers)} sandbox workers, isolation "
              f"{pool.isolation_level}", file=sys.stderr)
        verdicts = pool.run(jobs, use_grading_tests=args.grading_tests, progress=progress)
    print(file=sys.stderr)
    rows = []
    for verdict, sample in zip(verdicts, samples):
        line = verdict.summary()
        if args.rewards:
            line.update(annotate(verdict, sample.program, truncated=sample.truncated))
        rows.append(result_row(sample, line))
    write_jsonl(rows, out_path)
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict.outcome] = counts.get(verdict.outcome, 0) + 1
    print(f"execute: {counts}", file=sys.stderr)
    return 0
