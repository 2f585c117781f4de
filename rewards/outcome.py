"""Outcome rewards R(w) (RLTF-SPEC.md sections 1-2): the coarse reward of a verdict's outcome, the adaptive
reward that grades a `failed` program by the fraction of its tests it passed, and the registry that names them.

A new outcome reward is one function of a verdict, named in `REWARD_FUNCTIONS` (and in the ``Literal`` of
``RewardConfig.function`` in configs/schema.py) and chosen with ``--reward.function=<name>``::

    def strict_reward(verdict: Verdict) -> float:
        return 1.0 if verdict.outcome == "passed" else -1.0

It lives here (or in a module this one imports): samplers resolve the name in their own processes.

An ``infra_error`` verdict says the sandbox failed, not the program: it has no reward, and these functions
raise `NoRewardError` for it rather than invent a number (the sampler drops such samples).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from configs.schema import RewardConfig
    from sandbox.verdict import Verdict

COMPILE_ERROR_REWARD = -1.0
RUNTIME_ERROR_REWARD = -0.6
FAILED_REWARD = -0.3
PASSED_REWARD = 1.0

COARSE_REWARDS: dict[str, float] = {
    "compile_error": COMPILE_ERROR_REWARD,
    "runtime_error": RUNTIME_ERROR_REWARD,
    "failed": FAILED_REWARD,
    "passed": PASSED_REWARD,
}

# Adaptive: -0.3 at pass ratio 0, rising linearly to +1.0 at pass ratio 1.
ADAPTIVE_BASE = FAILED_REWARD
ADAPTIVE_SLOPE = PASSED_REWARD - FAILED_REWARD  # 1.3


class NoRewardError(ValueError):
    """The verdict carries no information about the program (``infra_error``), so it has no reward."""


def coarse_reward(outcome: str | Verdict) -> float:
    """-1.0 compile error, -0.6 runtime error (timeouts and memory kills included), -0.3 failed, +1.0 passed."""
    name = outcome if isinstance(outcome, str) else outcome.outcome
    if name == "infra_error":
        raise NoRewardError("an infra_error verdict (the sandbox failed, not the program) has no reward")
    try:
        return COARSE_REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown outcome {name!r}; expected one of {sorted(COARSE_REWARDS)}") from None


def adaptive_reward(verdict: Verdict) -> float:
    """The coarse reward, except that a ``failed`` program earns ``-0.3 + 1.3 * pass_ratio``."""
    reward = coarse_reward(verdict)
    if verdict.outcome != "failed":
        return reward
    return ADAPTIVE_BASE + ADAPTIVE_SLOPE * verdict.pass_ratio


# ``reward.function`` -> R(w)
REWARD_FUNCTIONS: dict[str, Callable[[Verdict], float]] = {"coarse": coarse_reward, "adaptive": adaptive_reward}


def outcome_reward(verdict: Verdict, cfg: RewardConfig) -> float:
    """R(w) as training uses it: ``reward.function`` when set, else adaptive or coarse as ``reward.adaptive`` says."""
    name = cfg.function or ("adaptive" if cfg.adaptive else "coarse")
    try:
        function = REWARD_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"reward.function: no outcome reward named {name!r} is registered "
                         f"(registered: {', '.join(sorted(REWARD_FUNCTIONS))})") from None
    return function(verdict)
