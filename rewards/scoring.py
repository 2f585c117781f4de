"""Scoring one program: its verdict and sampled tokens into an outcome reward, a fine-grained blame and the
blamed-token mask (`score`, `score_program`), and the four fields ``launch.py execute --rewards`` prints
(`verdict_rewards`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from configs.schema import RewardConfig
from rewards.fine_grained import classify
from rewards.outcome import adaptive_reward, coarse_reward, outcome_reward
from rewards.returns import penalty_per_token, token_returns
from rewards.token_mask import TokenMaskError, blame_mask

if TYPE_CHECKING:
    from sandbox.verdict import Verdict


@dataclass
class ScoredProgram:
    """Everything the rewards say about one sampled program; `returns` adds the baseline."""

    reward: float  # R(w) for training: reward.function, or adaptive / coarse as configured
    coarse_reward: float
    adaptive_reward: float
    category: str  # "line" | "whole" | "ignore"
    blamed_line: int | None
    mask: np.ndarray  # float32, 1.0 on blamed tokens (all zeros when fine-grained feedback is off)
    penalty: float  # extra negative reward per blamed token (flat or paper-scaled)
    mask_error: str = ""  # why a `line` blame could not be placed on tokens (then the mask is empty)

    def returns(self, baseline: float = 0.0) -> np.ndarray:
        """Per-token ``r_t = R(w) - baseline - penalty * mask_t`` (float32, one per sampled token)."""
        return token_returns(self.reward, baseline, self.mask, self.penalty)


def score(
    verdict: Verdict,
    program: str,
    token_ids: Sequence[int],
    tokenizer: Any,
    cfg: RewardConfig | None = None,
    *,
    truncated: bool = False,
    completion_start: int = 0,
) -> ScoredProgram | None:
    """Score one program; None for an ``infra_error`` verdict (no reward: the sampler drops the sample).

    ``program``: the executed text (``program_prefix + completion``); ``token_ids``: the sampled ids of the
    completion without padding (special tokens such as EOS may stay: they cover no characters);
    ``completion_start``: ``len(program_prefix)``; ``truncated``: generation hit the length limit;
    ``cfg``: the run's ``RewardConfig`` (None: the defaults).
    """
    settings = cfg or RewardConfig()
    if verdict.outcome == "infra_error":
        return None
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
        reward=outcome_reward(verdict, settings), coarse_reward=coarse_reward(verdict),
        adaptive_reward=adaptive_reward(verdict),
        category=blame.category, blamed_line=blame.line, mask=mask, penalty=penalty_per_token(mask, settings),
        mask_error=mask_error,
    )


def score_program(
    verdict: Verdict, problem: Any, generated: Any, tokenizer: Any, cfg: RewardConfig | None = None
) -> ScoredProgram | None:
    """`score` for a sampler's generated program: ``problem`` gives ``program_prefix``; ``generated`` gives
    ``text`` (the completion), ``token_ids`` and ``truncated`` (as `models.generation.GeneratedProgram` does)."""
    prefix = getattr(problem, "program_prefix", "") or ""
    return score(verdict, prefix + generated.text, generated.token_ids, tokenizer, cfg,
                 truncated=bool(generated.truncated), completion_start=len(prefix))


def verdict_rewards(verdict: Verdict, program: str, *, truncated: bool = False) -> dict[str, Any]:
    """The four fields ``launch.py execute --rewards`` adds to a verdict line: ``reward`` (coarse),
    ``adaptive_reward``, ``fine_category`` and ``blamed_line``. All four are None for ``infra_error``.
    They describe the program, not a training run, so no reward setting changes them."""
    if verdict.outcome == "infra_error":
        return {"reward": None, "adaptive_reward": None, "fine_category": None, "blamed_line": None}
    blame = classify(verdict, program, truncated=truncated)
    return {
        "reward": coarse_reward(verdict),
        "adaptive_reward": adaptive_reward(verdict),
        "fine_category": blame.category,
        "blamed_line": blame.line,
    }
