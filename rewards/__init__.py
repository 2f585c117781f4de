"""Rewards from unit-test feedback (RLTF-SPEC.md sections 1-4): what a sampler calls once per scored program.

`score` (or `score_program`, from a sampler's generated program) turns a sandbox verdict and the sampled program
into its outcome reward, fine-grained blame and blamed-token mask, whose `returns(baseline)` are the per-token
returns; `verdict_rewards` gives the four fields ``launch.py execute --rewards`` prints.
The parts: `rewards.coarse` (outcome and adaptive rewards), `rewards.fine_grained` (line / whole / ignore),
`rewards.token_mask` (blamed line -> sampled tokens), `rewards.returns` (baselines and per-token returns).
Imports only numpy and the project's plain-data contracts, so command-line modules may import it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewards.coarse import NoRewardError, adaptive_reward, coarse_reward, outcome_reward
from rewards.fine_grained import Blame, classify
from rewards.returns import (
    BaselineTracker,
    batch_token_returns,
    group_baselines,
    pad_returns,
    penalty_per_token,
    reward_settings,
    token_returns,
)
from rewards.token_mask import TokenMaskError, blame_mask, line_token_mask
from sandbox.verdict import Verdict

__all__ = [
    "BaselineTracker", "Blame", "NoRewardError", "ScoredProgram", "TokenMaskError", "adaptive_reward",
    "batch_token_returns", "blame_mask", "classify", "coarse_reward", "group_baselines", "line_token_mask",
    "outcome_reward", "pad_returns", "penalty_per_token", "reward_settings", "score", "score_program",
    "token_returns", "verdict_rewards",
]


@dataclass
class ScoredProgram:
    """Everything the rewards say about one sampled program; `returns` adds the baseline."""

    reward: float  # R(w) for training: adaptive or coarse, as configured
    coarse_reward: float
    adaptive_reward: float
    category: str  # "line" | "whole" | "ignore"
    blamed_line: int | None
    mask: np.ndarray  # float32, 1.0 on blamed tokens (all zeros when fine-grained feedback is off)
    penalty: float  # extra negative reward per blamed token (flat or paper-scaled)
    mask_error: str = ""  # why a `line` blame could not be placed on tokens (then the mask is empty)

    def returns(self, baseline: float = 0.0) -> np.ndarray:
        """Per-token ``r_t = R(w) - baseline - penalty * mask_t`` (float32, one per sampled token)."""
        return (np.float32(self.reward - baseline) - np.float32(self.penalty) * self.mask).astype(np.float32)


def score(
    verdict: Verdict,
    program: str,
    token_ids: Sequence[int],
    tokenizer: Any,
    cfg: Any = None,
    *,
    truncated: bool = False,
    completion_start: int = 0,
) -> ScoredProgram | None:
    """Score one program; None for an ``infra_error`` verdict (no reward: the sampler drops the sample).

    ``program``: the executed text (``program_prefix + completion``); ``token_ids``: the sampled ids of the
    completion without padding (special tokens such as EOS may stay: they cover no characters);
    ``completion_start``: ``len(program_prefix)``; ``truncated``: generation hit the length limit;
    ``cfg``: a ``RewardConfig`` (or mapping, or None for defaults).
    """
    settings = reward_settings(cfg)
    if verdict.outcome == "infra_error":
        return None
    coarse, adaptive = coarse_reward(verdict), adaptive_reward(verdict)
    blame = classify(verdict, program, truncated=truncated)
    mask_error = ""
    if settings.fine_grained:
        try:
            mask = blame_mask(blame.category, blame.line, token_ids, tokenizer, program, completion_start)
        except TokenMaskError as exc:
            # One odd sample (ids that do not spell the text) must not stop a sampler: score it without the
            # fine-grained term and say why.
            mask, mask_error = np.zeros(len(token_ids), dtype=np.float32), str(exc)
    else:
        mask = np.zeros(len(token_ids), dtype=np.float32)
    return ScoredProgram(
        reward=adaptive if settings.adaptive else coarse, coarse_reward=coarse, adaptive_reward=adaptive,
        category=blame.category, blamed_line=blame.line, mask=mask, penalty=penalty_per_token(mask, settings),
        mask_error=mask_error,
    )


def score_program(
    verdict: Verdict, problem: Any, generated: Any, tokenizer: Any, cfg: Any = None
) -> ScoredProgram | None:
    """`score` for a sampler's generated program: ``problem`` gives ``program_prefix``; ``generated`` gives
    ``text`` (the completion), ``token_ids`` and ``truncated`` (as `models.generation.GeneratedProgram` does)."""
    prefix = getattr(problem, "program_prefix", "") or ""
    return score(verdict, prefix + generated.text, generated.token_ids, tokenizer, cfg,
                 truncated=bool(generated.truncated), completion_start=len(prefix))


def verdict_rewards(verdict: Verdict, program: str, cfg: Any = None, *, truncated: bool = False) -> dict[str, Any]:
    """The four fields ``launch.py execute --rewards`` adds to a verdict line: ``reward`` (coarse),
    ``adaptive_reward``, ``fine_category`` and ``blamed_line``. All four are None for ``infra_error``.

    They describe the program, not a training run, so ``cfg`` does not change them (it is checked, so a bad
    reward section still fails here)."""
    reward_settings(cfg)
    if verdict.outcome == "infra_error":
        return {"reward": None, "adaptive_reward": None, "fine_category": None, "blamed_line": None}
    blame = classify(verdict, program, truncated=truncated)
    return {
        "reward": coarse_reward(verdict),
        "adaptive_reward": adaptive_reward(verdict),
        "fine_category": blame.category,
        "blamed_line": blame.line,
    }
