"""The sampler actor: generate programs from a policy copy, grade them in the sandbox, push trajectories.

One loop per sampler (`run`), one batch of problems per turn:

    refresh weights if a newer version is published  ->  N samples (+ 1 greedy) per problem
    ->  sandbox pool (parallel workers)  ->  rewards  ->  online buffer (waits under back-pressure)

It is a threaded Ray actor (``max_concurrency`` > 1): `run` loops in one thread while `status` and `stop` answer
from others. `stop` lets the current batch finish and be pushed, then `run` returns: scaling a sampler down
loses nothing it has already generated.
"""
from __future__ import annotations

import collections
import os
import logging
import random
import time
import uuid
from typing import Any, Optional

from actors.types import SamplerStatus, Trajectory
from cluster.metrics import RunMetrics
from configs.schema import Config
from rewards import BaselineTracker, group_baselines, score_program
from tasks.problem import Problem

log = logging.getLogger(__name__)


class Sampler:
    def __init__(self, cfg: Config, sampler_id: str, problems: list[Problem], buffer: Any, sandbox_pool: Any,
                 transport: Any) -> None:
        import torch

        from models import load_policy

        torch.set_num_threads(max(1, int(cfg.sampler.num_cpus)))
        self.cfg, self.sampler_id = cfg, sampler_id
        self.problems = [p for p in problems if len(p.tests.cases) > 0]
        if not self.problems:
            raise ValueError(f"sampler {sampler_id}: none of the {len(problems)} problems has tests")
        self.buffer, self.pool, self.transport = buffer, sandbox_pool, transport
        self.policy = load_policy(cfg.model.name_or_path, kind=cfg.model.kind)
        self.policy.model.eval()
        self.version = 0
        self.baselines = BaselineTracker(cfg.reward.baseline)
        # Greedy decodes only feed the `greedy` and `best` baselines; `group` and `none` do without them.
        self.decodes_greedy = cfg.sampler.greedy_baseline and cfg.reward.baseline in ("greedy", "best")
        self.rng = random.Random(f"{cfg.run.seed}/{sampler_id}")
        indices = range(len(self.problems))
        self.pools = {"all": list(indices),
                      "free": [i for i in indices if not self.problems[i].trainable_reference],
                      "referenced": [i for i in indices if self.problems[i].trainable_reference]}
        self.order: dict[str, list[int]] = {kind: [] for kind in self.pools}
        self.status_ = SamplerStatus(sampler_id=sampler_id, policy_version=0, extra={"pid": os.getpid(), "pool_generation": 0})
        self.stopping = False
        self.running = False
        self._prompt_ids: dict[str, list[int]] = {}
        self.metrics = RunMetrics(cfg.run.name, "sampler")
        self._next_pool: Optional[tuple[Any, int]] = None

    # --- weights -------------------------------------------------------------------------------------------
    def refresh_weights(self) -> bool:
        """Load the newest published weights if they are newer than ours. Called between batches."""
        info = self.transport.latest()
        if info is None or info.version <= self.version:
            return False
        info, state = self.transport.fetch()
        self.policy.model.load_state_dict(state)
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

    def _prompt(self, problem: Problem) -> list[int]:
        from models.encoding import encode_prompt

        if problem.problem_id not in self._prompt_ids:
            self._prompt_ids[problem.problem_id] = encode_prompt(
                self.policy.tokenizer, problem.prompt, self.cfg.model.max_prompt_tokens)
        return self._prompt_ids[problem.problem_id]

    def sample_batch(self) -> list[Trajectory]:
        """Generate, grade and score one batch of problems (runs in a worker thread)."""
        from models.generation import generate_programs

        cfg, pol = self.cfg, self.policy
        problems = self._next_problems()
        prompts = [self._prompt(p) for p in problems]
        gen = dict(is_seq2seq=pol.is_seq2seq, max_new_tokens=cfg.model.max_new_tokens)
        samples = generate_programs(pol.model, pol.tokenizer, prompts, num_samples=cfg.sampler.samples_per_problem,
                                    temperature=cfg.sampler.temperature, top_p=cfg.sampler.top_p, **gen)
        greedy = (generate_programs(pol.model, pol.tokenizer, prompts, num_samples=1, greedy=True, **gen)
                  if self.decodes_greedy else [])
        jobs = [(problems[s.prompt_index], problems[s.prompt_index].program_prefix + s.text) for s in samples + greedy]
        verdicts = self.pool.run(jobs)
        sample_verdicts, greedy_verdicts = verdicts[: len(samples)], verdicts[len(samples):]

        # The greedy decode of this policy is the baseline of its problem (RLTF's released code).
        for g, verdict in zip(greedy, greedy_verdicts):
            scored = score_program(verdict, problems[g.prompt_index], g, pol.tokenizer, cfg.reward)
            if scored is not None:
                self.baselines.observe_greedy(problems[g.prompt_index].problem_id, scored.reward)

        st = self.status_
        graded, baselines = [], []  # (sample, verdict, scored), and the baseline of each
        for s, verdict in zip(samples, sample_verdicts):
            st.outcomes[verdict.outcome] = st.outcomes.get(verdict.outcome, 0) + 1
            problem = problems[s.prompt_index]
            scored = score_program(verdict, problem, s, pol.tokenizer, cfg.reward)
            if scored is None:
                continue  # infra_error: the sandbox failed, not the program; no reward either way
            graded.append((s, verdict, scored))
            baselines.append(self.baselines.baseline(problem.problem_id))
            self.baselines.observe_sample(problem.problem_id, scored.reward)  # after: never its own baseline
        if cfg.reward.baseline == "group":
            baselines = group_baselines([s.prompt_index for s, _, _ in graded], [sc.reward for _, _, sc in graded])
        if cfg.reward.baseline_cap is not None:
            baselines = [min(b, cfg.reward.baseline_cap) for b in baselines]

        trajectories = []
        now = time.time()
        for (s, verdict, scored), baseline in zip(graded, baselines):
            st.samples += 1
            st.passed += verdict.outcome == "passed"
            st.reward_sum += scored.reward
            returns = scored.returns(baseline)
            if cfg.sampler.skip_zero_returns and not returns.any():
                continue  # no gradient in it, only learner time
            trajectories.append(Trajectory(
                problem_id=problems[s.prompt_index].problem_id,
                prompt_ids=prompts[s.prompt_index],
                program_ids=s.token_ids,
                returns=returns.tolist(),
                behaviour_logprobs=s.logprobs,
                policy_version=self.version,
                reward=scored.reward,
                baseline_reward=baseline,
                outcome=verdict.outcome,
                fine_category=scored.category,
                blamed_line=scored.blamed_line,
                sampler_id=self.sampler_id,
                created_at=now,
            ))
        st.problems += len(problems)
        self.metrics.record("rltf_samples_total", len(trajectories), sampler=self.sampler_id)
        for outcome, count in collections.Counter(v.outcome for v in verdicts).items():
            self.metrics.record("rltf_programs_total", count, outcome=outcome)
        return trajectories

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self, max_batches: Optional[int] = None) -> dict[str, Any]:
        """Sample until `stop` (or ``max_batches``); every batch ends up in the buffer before the next starts."""
        self.running, batches = True, 0
        try:
            while not self.stopping and (max_batches is None or batches < max_batches):
                if self._next_pool is not None:
                    (self.pool, self.status_.extra["pool_generation"]), self._next_pool = self._next_pool, None
                self.refresh_weights()
                if self.version == 0:
                    time.sleep(0.2)  # nothing published yet: never sample from weights the learner did not send
                    continue
                self.status_.busy = True
                trajectories = self.sample_batch()
                self.status_.busy = False
                if trajectories and self._push(trajectories) == 0:
                    break  # the buffer is closed: the run is ending
                batches += 1
        finally:
            self.running = False
            self.status_.busy = False
        return self.status()

    def _push(self, trajectories: list[Trajectory]) -> int:
        """Put a batch into the buffer. While back-pressure holds it, keep taking new weights: a collective
        publish waits for every sampler, and the learner frees buffer space only after that publish."""
        import ray

        ref = self.buffer.put.remote(trajectories, uuid.uuid4().hex)  # the id makes a retried put idempotent
        while not ray.wait([ref], timeout=0.5)[0]:
            self.refresh_weights()
        return ray.get(ref)

    def set_sandbox_pool(self, pool: Any, generation: int) -> None:
        """A resized sandbox pool, taken up at the next batch boundary (`run` reports ``pool_generation``)."""
        self._next_pool = (pool, generation)

    def stop(self) -> None:
        self.stopping = True

    def status(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.status_)
