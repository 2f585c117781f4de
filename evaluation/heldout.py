"""Held-out evaluation during training: the curve people watch while a run trains.

At the start of RL, every ``eval.every_steps`` RL steps and at the end, the controller publishes the learner's
weights and asks the run's samplers to evaluate them (`actors.sampler.Sampler.evaluate`: one greedy and
``eval.samples_per_problem`` sampled programs per problem, between their own batches, graded in the sandbox on the
grading tests). One evaluation runs at a time, while training goes on; its record (pass@1 greedy, pass@1 and
pass@n sampled) goes to the run's log (metrics.jsonl, TensorBoard), the Prometheus endpoint
(``rltf_eval_pass_at_k``) and the run's plot. The held-out set is fixed for the run and small (``eval.limit``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from cluster.metrics import RunMetrics
from configs.schema import Config
from evaluation.pass_at_k import score_table, tally
from tasks.problem import Problem

log = logging.getLogger(__name__)


def spread(items: Sequence, limit: int) -> list:
    """At most ``limit`` items taken evenly across ``items`` (held-out sets are often ordered by kind)."""
    if len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def load_heldout(cfg: Config) -> list[Problem]:
    """The run's held-out problems: ``eval.source`` or the ``data.eval_split`` of ``data.source``, those with
    tests, spread down to ``eval.limit``."""
    from tasks import load_problems

    if cfg.eval.source:
        where = cfg.eval.source
        problems = load_problems(cfg.eval.source, fmt=cfg.eval.format, skip_invalid=cfg.data.skip_invalid)
    else:
        where = f"{cfg.data.source} (split {cfg.data.eval_split!r})"
        problems = load_problems(cfg.data.source, fmt=cfg.data.format, split=cfg.data.eval_split,
                                 skip_invalid=cfg.data.skip_invalid)
    graded = [p for p in problems if p.eval_tests.cases]
    if not graded:
        raise ValueError(f"eval: none of the {len(problems)} held-out problems of {where} has tests")
    return spread(graded, cfg.eval.limit)


def heldout_scores(problem_ids: Sequence[str], decoding: Sequence[str], outcomes: Sequence[str],
                   n: int) -> dict[str, Optional[float]]:
    """``eval_pass@1_greedy``, ``eval_pass@1`` and ``eval_pass@<n>`` (sampled) from graded programs."""
    out: dict[str, Optional[float]] = {}
    for kind, ks in (("greedy", (1,)), ("sampled", (1, n))):
        rows = [(pid, outcome) for pid, d, outcome in zip(problem_ids, decoding, outcomes) if d == kind]
        table = score_table(tally([r[0] for r in rows], [r[1] for r in rows]).values(), ks)
        for k in ks:
            out[f"eval_pass@{k}" + ("_greedy" if kind == "greedy" else "")] = table["pass@k"][str(k)]
    return out


class HeldOutEval:
    """Schedules the run's held-out evaluations and reports each one (``on_record(record)``)."""

    def __init__(self, cfg: Config, problems: list[Problem], on_record: Callable[[dict[str, Any]], None],
                 step_of_version: Callable[[int], int]) -> None:
        self.cfg, self.problems = cfg, problems
        self.on_record, self.step_of_version = on_record, step_of_version
        self.metrics = RunMetrics(cfg.run.name, "controller")
        self.next_due = 0  # RL steps
        self.last_step: Optional[int] = None  # learner step of the last evaluation started
        self.task: Optional[asyncio.Future] = None

    def due(self, rl_steps: int, step: int, final: bool = False) -> bool:
        """Whether to start one now (never while one runs; at the end, unless this step was evaluated)."""
        if self.task is not None and not self.task.done():
            return False
        return step != self.last_step and (final or rl_steps >= self.next_due)

    def start(self, samplers: list[Any], rl_steps: int, step: int, version: int) -> None:
        every = self.cfg.eval.every_steps
        self.next_due = (rl_steps // every + 1) * every
        self.last_step = step
        self.task = asyncio.ensure_future(self._run(samplers, step, version))

    async def wait(self) -> None:
        if self.task is not None:
            await self.task

    async def _run(self, samplers: list[Any], step: int, version: int) -> None:
        started = time.time()
        shares = [self.problems[i::len(samplers)] for i in range(len(samplers))]
        seed = self.cfg.run.seed * 1_000_003 + step
        results = await asyncio.gather(*[s.evaluate.remote(share, seed + i)
                                         for i, (s, share) in enumerate(zip(samplers, shares)) if share],
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        done = [r for r in results if not isinstance(r, BaseException)]
        if failed or not done:  # a sampler died mid-evaluation: no partial score, the next one comes on time
            log.warning("held-out evaluation at step %d failed: %s", step, failed[:1])
            self.on_record({"kind": "event", "event": "eval_failed", "step": step,
                            "error": f"{type(failed[0]).__name__}: {failed[0]}"[:300] if failed else "no samplers"})
            return
        evaluated = min(r["version"] for r in done)
        n = self.cfg.eval.samples_per_problem
        scores = heldout_scores([pid for r in done for pid in r["problem_ids"]],
                                [d for r in done for d in r["decoding"]], [o for r in done for o in r["outcomes"]], n)
        for key, value in scores.items():
            k, decoding = key.split("@")[1].split("_")[0], "greedy" if key.endswith("_greedy") else "sampled"
            self.metrics.record("rltf_eval_pass_at_k", value, k=k, decoding=decoding)
        self.on_record({"kind": "eval", "step": self.step_of_version(evaluated), "version": evaluated,
                        "requested_version": version, "eval_problems": len(self.problems), "eval_n": n, **scores,
                        "eval_wall_s": round(time.time() - started, 2)})
