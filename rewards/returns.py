"""Per-token returns (RLTF-SPEC.md section 4): ``r_t = R(w) - R(baseline) - penalty * mask_t``.

- Baseline (`BaselineTracker`, one per sampler, remembering each problem): ``greedy`` = the reward of the latest
  greedy decode of the problem (the released code), ``best`` = the best reward seen for the problem (the paper),
  ``group`` = the mean reward of the problem's other samples in the same batch (`group_baselines`; leave-one-out,
  so a sample is never its own baseline), ``none`` = 0.
- Penalty on blamed tokens: ``flat`` = ``penalty`` (0.3, the released code); ``paper`` = ``penalty * T / B``
  with T the program's tokens and B the blamed ones.

Settings come from ``configs.schema.RewardConfig``, checked once when the config is loaded (`configs.validate`).
Returns are numpy float32 arrays; the learner turns them into tensors.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from configs.schema import RewardConfig


def group_baselines(groups: Sequence[Any], rewards: Sequence[float]) -> list[float]:
    """Leave-one-out baselines: for each program, the mean reward of the *other* programs of its group (its
    problem, in one sampler batch); 0 for a program alone in its group. Returns then sum to zero within a group
    (before the fine-grained penalty): a problem every sample passes, or every sample fails, teaches nothing,
    and the passing samples of a mixed problem are pushed up exactly as far as the failing ones are pushed down."""
    if len(groups) != len(rewards):
        raise ValueError(f"{len(groups)} groups for {len(rewards)} rewards")
    totals: dict[Any, list[float]] = {}
    for g, r in zip(groups, rewards):
        entry = totals.setdefault(g, [0.0, 0])
        entry[0] += r
        entry[1] += 1
    out = []
    for g, r in zip(groups, rewards):
        total, count = totals[g]
        out.append((total - r) / (count - 1) if count > 1 else 0.0)
    return out


class BaselineTracker:
    """Per-problem memory of rewards for the baseline ``R(w_baseline)``.

    The sampler reports every scored program (`observe_greedy` for the greedy decode, `observe_sample` for the
    others) and asks `baseline` before it reports a sample, so a sample is never its own baseline. A problem
    with no greedy decode yet has baseline 0 in ``greedy`` mode; ``best`` counts every program seen so far,
    greedy or sampled. ``group`` needs the whole batch (`group_baselines`): here, like ``none``, it is 0.
    """

    def __init__(self, mode: str = "greedy"):
        self.mode = mode
        self._greedy: dict[str, float] = {}
        self._best: dict[str, float] = {}

    def observe_greedy(self, problem_id: str, reward: float) -> None:
        """The reward of this policy's greedy decode of the problem (the ``greedy`` baseline)."""
        self.observe(problem_id, reward, greedy=True)

    def observe_sample(self, problem_id: str, reward: float) -> None:
        """The reward of a sampled program (counts towards ``best`` only)."""
        self.observe(problem_id, reward, greedy=False)

    def observe(self, problem_id: str, reward: float, *, greedy: bool = False) -> None:
        if greedy:
            self._greedy[problem_id] = float(reward)
        best = self._best.get(problem_id)
        if best is None or reward > best:
            self._best[problem_id] = float(reward)

    def baseline(self, problem_id: str) -> float:
        if self.mode == "greedy":
            return self._greedy.get(problem_id, 0.0)
        if self.mode == "best":
            return self._best.get(problem_id, 0.0)
        return 0.0

    def has_baseline(self, problem_id: str) -> bool:
        table = {"greedy": self._greedy, "best": self._best}.get(self.mode)
        return True if table is None else problem_id in table

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "greedy": dict(self._greedy), "best": dict(self._best)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BaselineTracker:
        tracker = cls(state["mode"])
        tracker._greedy.update(state.get("greedy", {}))
        tracker._best.update(state.get("best", {}))
        return tracker

    def __len__(self) -> int:
        return len(self._best)


def penalty_per_token(mask: np.ndarray, settings: RewardConfig) -> float:
    """The extra negative reward each blamed token gets (0 when fine-grained feedback is off)."""
    blamed = float(np.sum(mask))
    if not settings.fine_grained or blamed == 0:
        return 0.0
    if settings.fine_grained_scale == "paper":
        return settings.penalty * len(mask) / blamed
    return settings.penalty


def token_returns(reward: float, baseline: float, mask: Sequence[float] | np.ndarray, penalty: float) -> np.ndarray:
    """``r_t = reward - baseline - penalty * mask_t`` for one program (float32, one entry per token): the one
    implementation of RLTF's per-token return."""
    mask_array = np.asarray(mask, dtype=np.float32).reshape(-1)
    return (np.float32(reward - baseline) - np.float32(penalty) * mask_array).astype(np.float32)
