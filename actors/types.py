"""Plain dataclasses that cross between actors: defined once, here, and nowhere else.

Everything in them is plain Python data (ints, floats, strings, lists), so Ray serialises them cheaply and a
buffer snapshot is a pickle of them with no torch or model objects inside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Trajectory:
    """One sampled program for one problem, scored, ready for the learner.

    ``returns`` holds the per-token return r_t of RLTF-SPEC.md section 4 (baseline already subtracted, the
    fine-grained penalty already applied on blamed tokens), aligned with ``program_ids``.
    """

    problem_id: str
    prompt_ids: list[int]
    program_ids: list[int]
    returns: list[float]
    behaviour_logprobs: list[float]
    policy_version: int
    reward: float  # R(w): the coarse or adaptive reward of this program
    baseline_reward: float  # R(w_baseline) subtracted from it
    outcome: str  # the sandbox verdict's outcome
    fine_category: str = "ignore"  # line | whole | ignore
    blamed_line: Optional[int] = None
    sampler_id: str = ""
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if not (len(self.program_ids) == len(self.returns) == len(self.behaviour_logprobs)):
            raise ValueError(
                f"trajectory for {self.problem_id}: program_ids ({len(self.program_ids)}), returns "
                f"({len(self.returns)}) and behaviour_logprobs ({len(self.behaviour_logprobs)}) differ in length"
            )


@dataclass
class SupervisedExample:
    """A reference solution for the supervised micro-steps and the warm start."""

    problem_id: str
    prompt_ids: list[int]
    program_ids: list[int]


@dataclass
class PublishedWeights:
    """What a weight transport announces: a version and when the learner pushed it."""

    version: int
    pushed_at: float
    step: int = 0


@dataclass
class SamplerStatus:
    sampler_id: str
    policy_version: int
    samples: int = 0  # programs generated and pushed so far
    problems: int = 0
    passed: int = 0
    reward_sum: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    weight_sync_s: list[float] = field(default_factory=list)  # push -> running, per switch (recent)
    busy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
