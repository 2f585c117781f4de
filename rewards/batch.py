"""Rewards end to end for one batch: a sampler's graded programs in, trajectories with per-token returns out.

    BatchScorer.score_batch(samples, greedy)   one call per sampler batch
      greedy decodes  ->  the `greedy` / `best` baselines of their problems
      each sample     ->  R(w), blame and token mask (`rewards.scoring.score`)
                      ->  its baseline (`reward.baseline`, capped by `reward.baseline_cap`)
                      ->  r_t = R(w) - baseline - penalty * mask_t
                      ->  a `Trajectory`, unless its returns are all 0 and `sampler.skip_zero_returns` is on

A `BatchScorer` lives as long as its sampler: the `greedy` and `best` baselines remember each problem across
batches. Settings were checked once, when the config was loaded.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from configs.schema import RewardConfig
from rewards.returns import BaselineTracker, group_baselines
from rewards.scoring import ScoredProgram, score_program
from rewards.trajectory import Trajectory

if TYPE_CHECKING:
    from models.generation import GeneratedProgram
    from sandbox.verdict import Verdict
    from tasks.problem import Problem

BASELINES_FROM_GREEDY = ("greedy", "best")  # the baselines that use greedy decodes


@dataclass
class GradedSample:
    """One generated program of a batch and its verdict: what a sampler hands to the rewards."""

    problem: Problem
    prompt_ids: list[int]
    program: GeneratedProgram  # token_ids, logprobs, text (the completion), truncated
    verdict: Verdict
    group: int = 0  # samples of one problem slot of the batch share a group (the `group` baseline's unit)


@dataclass
class ScoredBatch:
    trajectories: list[Trajectory] = field(default_factory=list)
    scored: int = 0  # samples that got a reward (an infra_error gets none), skipped ones included
    passed: int = 0
    reward_sum: float = 0.0


class BatchScorer:
    def __init__(self, cfg: RewardConfig, tokenizer: Any, skip_zero_returns: bool = False) -> None:
        self.cfg, self.tokenizer, self.skip_zero_returns = cfg, tokenizer, skip_zero_returns
        self.baselines = BaselineTracker(cfg.baseline)

    @property
    def needs_greedy(self) -> bool:
        """Whether the baseline uses one greedy decode per problem (`group` and `none` do without)."""
        return self.cfg.baseline in BASELINES_FROM_GREEDY

    def _score(self, sample: GradedSample) -> ScoredProgram | None:
        return score_program(sample.verdict, sample.problem, sample.program, self.tokenizer, self.cfg)

    def score_batch(self, samples: Sequence[GradedSample], greedy: Sequence[GradedSample] = (), *, policy_version: int = 0,
                    sampler_id: str = "") -> ScoredBatch:
        """Trajectories of ``samples`` (in order); ``greedy``: this policy's greedy decodes of the batch's problems."""
        for g in greedy:  # the greedy decode of this policy is its problem's baseline (RLTF's released code)
            scored = self._score(g)
            if scored is not None:
                self.baselines.observe_greedy(g.problem.problem_id, scored.reward)
        graded: list[tuple[GradedSample, ScoredProgram]] = []
        baselines: list[float] = []
        for sample in samples:
            scored = self._score(sample)
            if scored is None:
                continue  # infra_error: the sandbox failed, not the program; no reward either way
            graded.append((sample, scored))
            baselines.append(self.baselines.baseline(sample.problem.problem_id))
            self.baselines.observe_sample(sample.problem.problem_id, scored.reward)  # after: never its own baseline
        if self.cfg.baseline == "group":
            baselines = group_baselines([s.group for s, _ in graded], [sc.reward for _, sc in graded])
        if self.cfg.baseline_cap is not None:
            baselines = [min(b, self.cfg.baseline_cap) for b in baselines]

        out, now = ScoredBatch(), time.time()
        for (sample, scored), baseline in zip(graded, baselines):
            out.scored += 1
            out.passed += sample.verdict.outcome == "passed"
            out.reward_sum += scored.reward
            returns = scored.returns(baseline)
            if self.skip_zero_returns and not returns.any():
                continue  # no gradient in it, only learner time
            out.trajectories.append(Trajectory(
                problem_id=sample.problem.problem_id, prompt_ids=sample.prompt_ids,
                program_ids=sample.program.token_ids, returns=returns.tolist(),
                behaviour_logprobs=sample.program.logprobs, policy_version=policy_version, reward=scored.reward,
                baseline_reward=baseline, outcome=sample.verdict.outcome, fine_category=scored.category,
                blamed_line=scored.blamed_line, sampler_id=sampler_id, created_at=now,
            ))
        return out
