"""Per-token returns (RLTF-SPEC.md section 4): ``r_t = R(w) - R(baseline) - penalty * mask_t``.

- Baseline (`BaselineTracker`, one per sampler, remembering each problem): ``greedy`` = the reward of the latest
  greedy decode of the problem (the released code), ``best`` = the best reward seen for the problem (the paper),
  ``group`` = the mean reward of the problem's other samples in the same batch (`group_baselines`; leave-one-out,
  so a sample is never its own baseline), ``none`` = 0.
- Penalty on blamed tokens: ``flat`` = ``penalty`` (0.3, the released code); ``paper`` = ``penalty * T / B``
  with T the program's tokens and B the blamed ones.

Settings come from ``configs.schema.RewardConfig`` or plain keyword values (`reward_settings`). Returns are
numpy float32 arrays; the learner turns them into tensors.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from configs.schema import RewardConfig

BASELINES = ("greedy", "best", "group", "none")
SCALES = ("flat", "paper")


def reward_settings(cfg: Any = None, **overrides: Any) -> RewardConfig:
    """A validated `RewardConfig` from a `RewardConfig`, a mapping, an object with the same attributes, or
    None (defaults), with keyword ``overrides`` applied."""
    if cfg is None:
        values: dict[str, Any] = {}
    elif isinstance(cfg, dict):
        values = dict(cfg)
    else:
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RewardConfig) if hasattr(cfg, f.name)}
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(RewardConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"reward settings: unknown key(s) {unknown}; known: {sorted(known)}")
    settings = RewardConfig(**values)
    if settings.baseline not in BASELINES:
        raise ValueError(f"reward settings: baseline must be one of {BASELINES}, got {settings.baseline!r}")
    if settings.fine_grained_scale not in SCALES:
        raise ValueError(
            f"reward settings: fine_grained_scale must be one of {SCALES}, got {settings.fine_grained_scale!r}"
        )
    cap = settings.baseline_cap
    if cap is not None and (not isinstance(cap, (int, float)) or isinstance(cap, bool)):
        raise ValueError(f"reward settings: baseline_cap must be a number or null, got {cap!r}")
    for name in ("adaptive", "fine_grained"):
        if not isinstance(getattr(settings, name), bool):
            raise ValueError(f"reward settings: {name} must be true or false, got {getattr(settings, name)!r}")
    if not isinstance(settings.penalty, (int, float)) or isinstance(settings.penalty, bool) or settings.penalty < 0:
        raise ValueError(f"reward settings: penalty must be a number >= 0, got {settings.penalty!r}")
    return settings


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
        if mode not in BASELINES:
            raise ValueError(f"baseline mode must be one of {BASELINES}, got {mode!r}")
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


def token_returns(reward: float, baseline: float, mask: Sequence[float] | np.ndarray, cfg: Any = None,
                  **overrides: Any) -> np.ndarray:
    """``r_t = reward - baseline - penalty * mask_t`` for one program (float32, one entry per token)."""
    settings = cfg if isinstance(cfg, RewardConfig) and not overrides else reward_settings(cfg, **overrides)
    mask_array = np.asarray(mask, dtype=np.float32).reshape(-1)
    returns = np.full(mask_array.shape, reward - baseline, dtype=np.float32)
    return returns - np.float32(penalty_per_token(mask_array, settings)) * mask_array


def batch_token_returns(rewards: Sequence[float], baselines: Sequence[float], masks: Sequence[Any],
                        cfg: Any = None, **overrides: Any) -> list[np.ndarray]:
    """`token_returns` for a batch of programs of different lengths (one array per program)."""
    if not len(rewards) == len(baselines) == len(masks):
        raise ValueError(
            f"batch sizes differ: {len(rewards)} rewards, {len(baselines)} baselines, {len(masks)} masks"
        )
    settings = reward_settings(cfg, **overrides)
    return [token_returns(r, b, m, settings) for r, b, m in zip(rewards, baselines, masks)]


def pad_returns(
    returns: Sequence[np.ndarray], width: int | None = None, pad: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a batch of per-token returns into (batch, width) plus a 0/1 validity mask of the same shape."""
    width = max((len(r) for r in returns), default=0) if width is None else width
    out = np.full((len(returns), width), pad, dtype=np.float32)
    valid = np.zeros((len(returns), width), dtype=np.float32)
    for row, values in enumerate(returns):
        n = min(len(values), width)
        out[row, :n] = values[:n]
        valid[row, :n] = 1.0
    return out, valid
