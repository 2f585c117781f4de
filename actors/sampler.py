"""The sampler actor: generate programs from a policy copy, grade them in the sandbox, push trajectories.

One loop per sampler (`run`), one batch of problems per turn, in two stages that overlap:

    generate (this thread):  refresh weights if a newer version is published  ->  N samples (+ 1 greedy) per problem
    grade (a second thread): sandbox pool (parallel workers)  ->  rewards  ->  online buffer (back-pressure)

While batch k is graded, scored and pushed, batch k + 1 is generated; batch k + 1 is handed over only once
batch k is in the buffer, so back-pressure still bounds how far the sampler runs ahead (one batch more than
``buffer.max_unread``). The model is used by the generating thread (weights load between its batches) and by
`evaluate` (held-out evaluation, called from another thread), in turns under one lock; the grading thread never
touches it.

It is a threaded Ray actor (``max_concurrency`` > 1): `run` loops in one thread while `status` and `stop` answer
from others. `stop` lets the current batch finish and be pushed, then `run` returns: scaling a sampler down
loses nothing it has already generated.
"""
from __future__ import annotations

import collections
import concurrent.futures
import copy
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from cluster.metrics import RunMetrics
from configs.schema import Config
from rewards import BatchScorer, GradedSample, Trajectory
from tasks.problem import Problem

if TYPE_CHECKING:
    from models.generation import GeneratedProgram

log = logging.getLogger(__name__)


@dataclass
class SamplerStatus:
    """What a sampler reports (`Sampler.status`): its weight version, what it produced, its process."""

    sampler_id: str
    policy_version: int = 0
    samples: int = 0  # programs generated and scored so far (infra errors left out)
    problems: int = 0
    passed: int = 0
    reward_sum: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    weight_sync_s: list[float] = field(default_factory=list)  # push -> running, per switch (recent)
    pid: int = 0
    pool_generation: int = 0  # the sandbox pool it grades on (`Fleet` resizes pools by generation)


@dataclass
class GeneratedBatch:
    """One batch between the two stages: what was generated, and by which weight version."""

    problems: list[Problem]
    prompts: list[list[int]]
    samples: list[GeneratedProgram]
    greedy: list[GeneratedProgram]
    policy_version: int


class Sampler:
    def __init__(self, cfg: Config, sampler_id: str, problems: list[Problem], buffer: Any, sandbox_pool: Any,
                 weight_sync: Any) -> None:
        import torch

        from models.backend import load_backend

        torch.set_num_threads(max(1, int(cfg.sampler.num_cpus)))
        self.cfg, self.sampler_id = cfg, sampler_id
        self.problems = [p for p in problems if len(p.tests.cases) > 0]
        if not self.problems:
            raise ValueError(f"sampler {sampler_id}: none of the {len(problems)} problems has tests")
        self.buffer, self.pool, self.weight_sync = buffer, sandbox_pool, weight_sync
        self.backend = load_backend(cfg.sampler.backend, cfg.model.name_or_path, kind=cfg.model.kind)
        self.version = 0
        self.scorer = BatchScorer(cfg.reward, self.backend.tokenizer, cfg.sampler.skip_zero_returns)
        self.rng = random.Random(f"{cfg.run.seed}/{sampler_id}")
        indices = range(len(self.problems))
        self.pools = {"all": list(indices),
                      "free": [i for i in indices if not self.problems[i].trainable_reference],
                      "referenced": [i for i in indices if self.problems[i].trainable_reference]}
        self.order: dict[str, list[int]] = {kind: [] for kind in self.pools}
        self.status_ = SamplerStatus(sampler_id=sampler_id, pid=os.getpid())
        self.stopping = False
        self._prompt_ids: dict[str, list[int]] = {}
        self.metrics = RunMetrics(cfg.run.name, "sampler")
        self._next_pool: Optional[tuple[Any, int]] = None
        # The loop's generation, weight loads and `evaluate` (called from another thread) take turns on the model.
        self._model_lock = threading.Lock()

    # --- weights -------------------------------------------------------------------------------------------
    def refresh_weights(self) -> bool:
        """Load the newest published weights if they are newer than ours. Called between batches."""
        import ray

        with self._model_lock:  # also called from `evaluate`'s thread: one fetch per version
            info = self.weight_sync.latest()
            if info is None or info.version <= self.version:
                return False
            try:
                info, state = self.weight_sync.fetch()
            except ray.exceptions.ObjectLostError:
                # Their sender (learner rank 0) died: keep ours until its restarted group publishes the next one.
                return False
            self.backend.load_weights(state)
            self.version = info.version
        lag = time.time() - info.pushed_at
        self.status_.policy_version = info.version
        self.status_.weight_sync_s = (self.status_.weight_sync_s + [lag])[-20:]
        self.metrics.record("rltf_weight_sync_seconds", lag, sampler=self.sampler_id)
        self.metrics.record("rltf_policy_version", info.version, sampler=self.sampler_id)
        log.info("sampler %s now runs weight version %d (%.2f s after its push)", self.sampler_id, info.version, lag)
        return True

    # --- one batch -----------------------------------------------------------------------------------------
    def _next_problems(self) -> list[Problem]:
        """Each problem once per pass over a shuffled order; with ``reference_free_share`` set, that share of
        the slots goes to problems without a trainable reference (those only RL can teach), each kind in its
        own shuffled order."""
        share = self.cfg.sampler.reference_free_share
        batch = []
        while len(batch) < self.cfg.sampler.problems_per_batch:
            kind = "all" if share is None else ("free" if self.rng.random() < share else "referenced")
            if not self.pools[kind]:
                kind = "all"  # no problem of that kind at all
            if not self.order[kind]:
                self.order[kind] = list(self.pools[kind])
                self.rng.shuffle(self.order[kind])
            batch.append(self.problems[self.order[kind].pop()])
        return batch

    def prompt_ids(self, problem: Problem) -> list[int]:
        """The problem's prompt as token ids (encoded once per problem)."""
        if problem.problem_id not in self._prompt_ids:
            self._prompt_ids[problem.problem_id] = self.backend.encode_prompt(problem.prompt,
                                                                              self.cfg.model.max_prompt_tokens)
        return self._prompt_ids[problem.problem_id]

    def generate_batch(self) -> GeneratedBatch:
        """Generate one batch of problems with the weights loaded now (the generating thread's stage)."""
        cfg = self.cfg
        problems = self._next_problems()
        prompts = [self.prompt_ids(p) for p in problems]
        with self._model_lock:
            samples = self.backend.generate(prompts, num_samples=cfg.sampler.samples_per_problem,
                                            max_new_tokens=cfg.model.max_new_tokens,
                                            temperature=cfg.sampler.temperature, top_p=cfg.sampler.top_p)
            greedy = (self.backend.generate(prompts, num_samples=1, max_new_tokens=cfg.model.max_new_tokens,
                                            greedy=True) if self.scorer.needs_greedy else [])
        return GeneratedBatch(problems, prompts, samples, greedy, self.version)

    def grade_batch(self, batch: GeneratedBatch) -> list[Trajectory]:
        """Grade a generated batch in the sandbox and score it into trajectories (the grading thread's stage)."""
        problems, prompts, programs = batch.problems, batch.prompts, batch.samples + batch.greedy
        jobs = [(problems[g.prompt_index], problems[g.prompt_index].program_prefix + g.text) for g in programs]
        self.metrics.record("rltf_sandbox_queue_depth", len(jobs), sampler=self.sampler_id)
        verdicts = self.pool.run(jobs)
        self.metrics.record("rltf_sandbox_queue_depth", 0, sampler=self.sampler_id)
        graded = [GradedSample(problems[g.prompt_index], prompts[g.prompt_index], g, verdict, group=g.prompt_index)
                  for g, verdict in zip(programs, verdicts)]
        n = len(batch.samples)
        scored = self.scorer.score_batch(graded[:n], graded[n:], policy_version=batch.policy_version,
                                         sampler_id=self.sampler_id)
        st = self.status_
        for verdict in verdicts[:n]:
            st.outcomes[verdict.outcome] = st.outcomes.get(verdict.outcome, 0) + 1
        st.samples += scored.scored
        st.passed += scored.passed
        st.reward_sum += scored.reward_sum
        st.problems += len(problems)
        self.metrics.record("rltf_samples_total", len(scored.trajectories), sampler=self.sampler_id)
        for outcome, count in collections.Counter(v.outcome for v in verdicts).items():
            self.metrics.record("rltf_programs_total", count, outcome=outcome)
        return scored.trajectories

    def sample_batch(self) -> list[Trajectory]:
        """Generate, grade and score one batch, one stage after the other."""
        return self.grade_batch(self.generate_batch())

    # --- held-out evaluation --------------------------------------------------------------------------------
    def evaluate(self, problems: list[Problem], seed: int) -> dict[str, Any]:
        """Held-out evaluation with the newest published weights (``eval`` settings of the run): one greedy and
        ``eval.samples_per_problem`` sampled programs per problem, graded on the grading tests. Runs between the
        loop's generations; the loop's random state is left as it was."""
        import torch

        from evaluation.evaluate import sample_chunk

        settings = self.cfg.eval
        gen = dict(max_new_tokens=self.cfg.model.max_new_tokens, max_prompt_tokens=self.cfg.model.max_prompt_tokens,
                   top_p=settings.top_p, seed=seed)
        self.refresh_weights()
        with self._model_lock:
            rng, version = torch.get_rng_state(), self.version
            greedy = sample_chunk(self.backend, problems, n=1, greedy=True, temperature=1.0, **gen)
            sampled = sample_chunk(self.backend, problems, n=settings.samples_per_problem, greedy=False,
                                   temperature=settings.temperature, **gen)
            torch.set_rng_state(rng)
        rows = [(row, "greedy") for row in greedy] + [(row, "sampled") for row in sampled]
        by_id = {p.problem_id: p for p in problems}
        verdicts = self.pool.run([(by_id[row["problem_id"]], row["program"]) for row, _ in rows],
                                 use_grading_tests=True)
        return {"version": version, "problem_ids": [row["problem_id"] for row, _ in rows],
                "decoding": [decoding for _, decoding in rows], "outcomes": [v.outcome for v in verdicts]}

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self, max_batches: Optional[int] = None) -> SamplerStatus:
        """Sample until `stop` (or ``max_batches``); every batch ends up in the buffer before `run` returns."""
        batches = 0
        pushing: Optional[concurrent.futures.Future] = None  # the previous batch: grade, score, push
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grade") as grader:
            while not self.stopping and (max_batches is None or batches < max_batches):
                self.refresh_weights()
                if self.version == 0:
                    time.sleep(0.2)  # nothing published yet: never sample from weights the learner did not send
                    continue
                batch = self.generate_batch()
                if pushing is not None and self._wait_pushed(pushing) == 0:
                    pushing = None
                    break  # the buffer is closed: the run is ending
                if self._next_pool is not None:  # switched while no batch is being graded
                    (self.pool, self.status_.pool_generation), self._next_pool = self._next_pool, None
                pushing = grader.submit(self._grade_and_push, batch)
                batches += 1
            if pushing is not None:
                self._wait_pushed(pushing)
        return self.status()

    def _grade_and_push(self, batch: GeneratedBatch) -> int:
        """Grade and score a batch, then put it into the buffer. Returns how many the buffer accepted; -1 for a
        batch with nothing to push, 0 once the buffer is closed."""
        trajectories = self.grade_batch(batch)
        return self._put(trajectories) if trajectories else -1

    def _put(self, trajectories: list[Trajectory]) -> int:
        """Into the buffer, waiting while back-pressure holds the batch."""
        import ray

        return ray.get(self.buffer.put.remote(trajectories, uuid.uuid4().hex))  # the id makes a retry idempotent

    def _wait_pushed(self, pushing: concurrent.futures.Future) -> int:
        """Wait until the previous batch is in the buffer. Meanwhile keep taking new weights (this thread owns the
        model): a collective publish waits for every sampler, and the learner frees buffer space only after it."""
        while True:
            try:
                return pushing.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                self.refresh_weights()

    def set_sandbox_pool(self, pool: Any, generation: int) -> None:
        """A resized sandbox pool, taken up at the next batch boundary (`run` reports ``pool_generation``)."""
        self._next_pool = (pool, generation)

    def stop(self) -> None:
        self.stopping = True

    def status(self) -> SamplerStatus:
        return copy.deepcopy(self.status_)
