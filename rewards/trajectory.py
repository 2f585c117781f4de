"""`Trajectory`: one scored program, the contract between the rewards (which make it), the online buffer (which
holds it) and the learner (which trains on it). Defined here and nowhere else.

Everything in it is plain Python data (ints, floats, strings, lists), so Ray serialises it cheaply and a buffer
snapshot is a pickle of trajectories with no torch or model objects inside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
    reward: float  # R(w): the program's outcome reward (reward.function, or adaptive / coarse)
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
