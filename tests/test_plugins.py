"""The dataset plug-in point on the real loading path: a loader named in `tasks.loaders.LOADERS` is what
``--data.format`` / ``eval --format`` read, with the usual split and limit selection. (The other plug-in points are
tested beside their code: rewards in test_rewards_scoring.py, generation backends in test_models_loading.py,
weight-sync strategies in test_weights_transport.py.)"""
from __future__ import annotations

import pytest

from tasks import load_problems
from tasks.loaders import LOADERS
from tasks.problem import Problem
from tasks.problem import TestSuite as Suite  # aliased: pytest would try to collect a class named Test*


def toy_loader(source: str, split: str | None) -> list[Problem]:
    return [Problem(problem_id=f"{source}/{i}", source="toy", prompt=f"def double_{i}(x):\n",
                    tests=Suite("assert", [f"assert double_{i}(2) == 4"]), split="train" if i < 3 else "test")
            for i in range(5)]


def test_a_named_loader_is_a_problem_format(monkeypatch):
    with pytest.raises(ValueError, match="unknown problem format 'toy'"):
        load_problems("anything", fmt="toy")
    monkeypatch.setitem(LOADERS, "toy", toy_loader)
    problems = load_problems("anything", fmt="toy", split="train", limit=2)
    assert [p.problem_id for p in problems] == ["anything/0", "anything/1"]
    assert [p.split for p in load_problems("x", fmt="toy", split="test")] == ["test", "test"]
    with pytest.raises(ValueError, match="has no problems in split 'heldout'"):
        load_problems("x", fmt="toy", split="heldout")
