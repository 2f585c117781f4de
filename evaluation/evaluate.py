"""`evaluate()`: sample n programs per problem from a policy, grade them, report pass@k.

    problems ──chunks──> EvalSampler actors (each loads the policy; generate, then grade in the sandbox pool)
             <──(samples, verdicts)──  ──> pass@k by problem, group (APPS difficulty, synthetic template kind)

The learning experiment calls it once per checkpoint; `launch.py eval` (`evaluation.command`) wraps it and writes
the files. Grading uses the problems' stronger grading tests where they exist. With ``samplers=0`` everything runs
in this process without Ray.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.pass_at_k import report, tally
from learner.checkpoints import model_dir

MAX_SEQUENCES_PER_CALL = 64  # bounds generate()'s batch (memory) whatever n and the chunk size are
GREEDY_NOTE = "temperature 0: greedy decoding, so n was forced to 1"


class EvalError(ValueError):
    """Bad input to an evaluation (model path, dataset, arguments); the message names the problem."""


@dataclass
class EvalResult:
    summary: dict
    samples: list[dict] = field(default_factory=list)  # problem_id, sample_index, program, truncated
    verdicts: list = field(default_factory=list)  # sandbox Verdicts, parallel to `samples`
    out_dir: Path | None = None

    def pass_at(self, k: int, grouping: str | None = None, group: str | None = None) -> float | None:
        """pass@k overall, or of one group (``pass_at(1, "template_kind", "tests-only")``); None when k > n."""
        rep = self.summary["report"]
        row = rep["overall"] if grouping is None else rep["by"][grouping][group]
        return row["pass@k"].get(str(k))


def check_settings(n: int, temperature: float, samplers: int) -> None:
    if n < 1 or temperature < 0 or samplers < 0:
        raise EvalError(f"need n >= 1, temperature >= 0 and samplers >= 0; got n={n}, temperature={temperature}, "
                        f"samplers={samplers}")


def resolve_model(name_or_path: str) -> str:
    """A train run dir -> its latest checkpoint's ``hf/``; a checkpoint dir -> its ``hf/``; else unchanged."""
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith("tiny:") or not path.is_dir() or (path / "config.json").is_file():
        return name_or_path
    found = model_dir(path)
    if found is not None:
        return str(found)
    raise EvalError(f"--model {name_or_path}: a directory, but not a saved model (no config.json), a checkpoint "
                    "(no hf/config.json) nor a train run directory (no checkpoints/step_*/hf/)")


def sample_chunk(backend, problems: Sequence, *, n: int, greedy: bool, temperature: float, top_p: float,
                 max_new_tokens: int, max_prompt_tokens: int, seed: int) -> list[dict]:
    """n programs for each problem, grouped by problem then sample index; seeded so a chunk is reproducible."""
    import torch

    torch.manual_seed(seed)
    prompts = [backend.encode_prompt(p.prompt, max_prompt_tokens) for p in problems]
    per_problem: list[list[dict]] = [[] for _ in problems]
    per_call = max(1, MAX_SEQUENCES_PER_CALL // len(problems))
    while len(per_problem[0]) < n:
        m = min(per_call, n - len(per_problem[0]))
        for g in backend.generate(prompts, num_samples=m, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, greedy=greedy):
            problem, rows = problems[g.prompt_index], per_problem[g.prompt_index]
            rows.append({"problem_id": problem.problem_id, "sample_index": len(rows),
                         "program": problem.program_prefix + g.text, "truncated": g.truncated})
    return [row for rows in per_problem for row in rows]


def grade(pool, problems: Sequence, samples: Sequence[dict], use_grading_tests: bool = True) -> list:
    """Verdicts for samples (in order) from a `LocalSandboxPool` or `RaySandboxPool`."""
    by_id = {p.problem_id: p for p in problems}
    return pool.run([(by_id[s["problem_id"]], s["program"]) for s in samples], use_grading_tests=use_grading_tests)


def summarise(problems: Sequence, samples: Sequence[dict], verdicts: Sequence, ks: Sequence[int]) -> dict:
    """pass@k and the outcome mix overall, by APPS difficulty, by synthetic template kind and by template where they
    apply."""
    groupings = {
        "difficulty": {p.problem_id: p.difficulty for p in problems if p.difficulty},
        "template_kind": {p.problem_id: p.meta["template_kind"] for p in problems if p.meta.get("template_kind")},
        "template": {p.problem_id: p.meta["template"] for p in problems if p.meta.get("template")},
    }
    tallies = tally([s["problem_id"] for s in samples], [v.outcome for v in verdicts])
    return report(tallies, ks, groupings)


class EvalSampler:
    """Ray actor: one policy copy; generates a chunk of problems, then grades it in the sandbox pool."""

    def __init__(self, model: str, kind: str | None, threads: int) -> None:
        import torch

        from models.backend import HFBackend

        torch.set_num_threads(threads)
        self.backend = HFBackend(model, kind=kind)

    def run_chunk(self, problems: list, gen: dict, seed: int, pool, use_grading_tests: bool) -> tuple:
        samples = sample_chunk(self.backend, problems, seed=seed, **gen)
        return samples, grade(pool, problems, samples, use_grading_tests)


def create_eval_actors(n: int, model: str, kind: str | None, threads: int, actor_options: dict) -> list:
    """``n`` `EvalSampler` actors, each with ``actor_options`` (its CPUs, GPUs and custom resources)."""
    import ray

    return [ray.remote(EvalSampler).options(**actor_options).remote(model, kind, threads) for _ in range(n)]


def evaluate(policy_name_or_path: str, problems: Sequence, n: int = 20, ks: Sequence[int] = (1, 5, 10), *,
             temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 96, max_prompt_tokens: int = 256,
             kind: str | None = None, samplers: int = 2, workers: int = 0, seed: int = 0, limits=None,
             use_grading_tests: bool = True, ray_address: str | None = None, chunk_problems: int = 4,
             show_progress: bool = True, actor_options: dict | None = None) -> EvalResult:
    """Sample ``n`` programs per problem (greedy and n=1 when ``temperature`` is 0), grade, report pass@``ks``.

    ``samplers`` Ray actors share the problems in chunks (0: generate in this process, no Ray), each created with
    ``actor_options`` (`cluster.placement.actor_options(cfg, "eval")`; default one CPU) and running on the GPU Ray
    gives it; ``workers`` sandbox workers grade (0: two per core in this process, one per core as Ray actors). Ray
    is started (and stopped) here unless it is already running."""
    from configs.schema import SandboxConfig

    check_settings(n, temperature, samplers)
    model = resolve_model(policy_name_or_path)
    graded = [p for p in problems if len((p.eval_tests if use_grading_tests else p.tests).cases) > 0]
    if not graded:
        raise EvalError(f"none of the {len(problems)} problems has tests to grade with")
    greedy, n_requested, n = temperature == 0, n, 1 if temperature == 0 else n
    limits = limits or SandboxConfig(num_workers=workers)
    gen = dict(n=n, greedy=greedy, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
               max_prompt_tokens=max_prompt_tokens)
    chunk = max(1, min(chunk_problems, MAX_SEQUENCES_PER_CALL // n))
    chunks = [graded[i:i + chunk] for i in range(0, len(graded), chunk)]
    results: list[tuple | None] = [None] * len(chunks)
    start, last_print = time.monotonic(), 0.0

    def collect(index: int, result: tuple) -> None:
        nonlocal last_print
        results[index] = result
        done = [r for r in results if r is not None]
        if show_progress and (time.monotonic() - last_print > 2.0 or len(done) == len(chunks)):
            last_print = time.monotonic()
            programs, passed = sum(len(r[1]) for r in done), sum(v.passed for r in done for v in r[1])
            print(f"eval: {sum(len(r[0]) for r in done) // n}/{len(graded)} problems | {programs} programs | "
                  f"{programs / (last_print - start):.1f} programs/s | pass {passed / programs:.3f}",
                  file=sys.stderr, flush=True)

    if samplers == 0:
        from models.backend import HFBackend
        from sandbox import LocalSandboxPool

        backend = HFBackend(model, kind=kind)
        with LocalSandboxPool(workers, limits) as pool:
            for i, part in enumerate(chunks):
                part_samples = sample_chunk(backend, part, seed=seed * 1_000_003 + i, **gen)
                collect(i, (part_samples, grade(pool, part, part_samples, use_grading_tests)))
    else:
        _evaluate_on_ray(model, kind, samplers, workers, limits, ray_address, chunks, gen, seed, use_grading_tests,
                         collect, actor_options or {"num_cpus": 1})

    # Chunks finish in any order; the outputs are in problem order whatever the scheduling was.
    samples = [s for r in results for s in r[0]]
    verdicts = [v for r in results for v in r[1]]
    elapsed = time.monotonic() - start
    summary = {
        "model": policy_name_or_path, "model_path": model, "problems": len(graded),
        "problems_without_tests": len(problems) - len(graded), "n": n, "n_requested": n_requested,
        "greedy": greedy, "note": GREEDY_NOTE if greedy and n_requested != 1 else "", "ks": list(ks),
        "unavailable_k": [k for k in ks if k > n], "temperature": temperature, "top_p": top_p,
        "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens, "seed": seed,
        "samplers": samplers, "grading_tests": use_grading_tests, "samples": len(samples),
        "truncated": sum(s["truncated"] for s in samples), "wall_s": round(elapsed, 2),
        "programs_per_s": round(len(samples) / max(elapsed, 1e-9), 2),
        "report": summarise(graded, samples, verdicts, ks),
    }
    return EvalResult(summary=summary, samples=samples, verdicts=verdicts)


def _evaluate_on_ray(model, kind, samplers, workers, limits, ray_address, chunks, gen, seed, use_grading_tests,
                     collect, actor_options):
    import ray

    from cluster.connect import init_ray
    from cluster.dispatch import dispatch
    from sandbox.pool import RaySandboxPool, create_sandbox_workers

    started = init_ray(ray_address, "rltf-eval", num_cpus=samplers)
    actors, handles = [], []
    try:
        # Sandbox workers reserve no CPU: they wait on their children, and the samplers wait while they grade.
        # Custom resources (sandbox.resources) still steer them to sandbox nodes.
        handles = create_sandbox_workers(workers or limits.num_workers, limits, num_cpus=0, resources=limits.resources)
        pool = RaySandboxPool(handles, limits, resources=limits.resources)
        threads = max(1, (os.cpu_count() or 1) // samplers)
        actors = create_eval_actors(samplers, model, kind, threads, actor_options)
        dispatch(actors, range(len(chunks)),
                 lambda actor, index: actor.run_chunk.remote(chunks[index], gen, seed * 1_000_003 + index, pool,
                                                             use_grading_tests),
                 collect)
    finally:
        for handle in actors + handles:
            ray.kill(handle, no_restart=True)
        if started:
            ray.shutdown()
