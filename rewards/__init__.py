"""Rewards from unit-test feedback (RLTF-SPEC.md sections 1-4): verdicts in, trajectories with per-token returns out.

`BatchScorer.score_batch` is what a sampler calls once per batch (`rewards.batch`); the parts under it:
`rewards.outcome` (coarse and adaptive rewards R(w), and the registry of outcome rewards), `rewards.fine_grained`
(line / whole / ignore), `rewards.token_mask` (blamed line -> sampled tokens), `rewards.returns` (baselines and
the per-token return r_t), `rewards.scoring` (one program: reward, blame, mask), `rewards.trajectory` (the
`Trajectory` contract). `verdict_rewards` gives the four fields ``launch.py execute --rewards`` prints.
Imports numpy and plain-data contracts only (no sandbox, model or Ray), so command-line modules may import it.
"""
from rewards.batch import BatchScorer, GradedSample, ScoredBatch
from rewards.fine_grained import Blame, classify
from rewards.outcome import (
    REWARD_FUNCTIONS,
    NoRewardError,
    adaptive_reward,
    coarse_reward,
    outcome_reward,
)
from rewards.returns import (
    BaselineTracker,
    group_baselines,
    penalty_per_token,
    token_returns,
)
from rewards.scoring import ScoredProgram, score, score_program, verdict_rewards
from rewards.token_mask import TokenMaskError, blame_mask, line_token_mask
from rewards.trajectory import Trajectory

__all__ = [
    "REWARD_FUNCTIONS", "BaselineTracker", "BatchScorer", "Blame", "GradedSample", "NoRewardError", "ScoredBatch",
    "ScoredProgram", "TokenMaskError", "Trajectory", "adaptive_reward", "blame_mask", "classify", "coarse_reward",
    "group_baselines", "line_token_mask", "outcome_reward", "penalty_per_token", "score",
    "score_program", "token_returns", "verdict_rewards",
]
