"""Learner ranks on a real local Ray with real DeepSpeed: data-parallel ZeRO-2 equals one rank on the whole batch."""
from __future__ import annotations

import json
import random

import pytest
import torch

from cluster.connect import init_ray
from configs import load_config
from rewards.trajectory import Trajectory

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    init_ray(None, "test-learner", num_cpus=4, log_to_driver=False)
    yield
    ray.shutdown()


def trajectories(n: int, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(3, 12)  # ranks get different token counts: the loss must still be the global mean
        out.append(Trajectory(
            problem_id=f"p{i}", prompt_ids=[rng.randrange(5, 300) for _ in range(rng.randint(2, 6))],
            program_ids=[rng.randrange(5, 300) for _ in range(length)],
            returns=[rng.uniform(-1.3, 1.0) for _ in range(length)],
            behaviour_logprobs=[-5.0] * length, policy_version=0, reward=0.0, baseline_reward=0.0, outcome="failed",
        ))
    return out


def train_once(model_dir: str, world: int, shards: list[list[Trajectory]]) -> dict[str, torch.Tensor]:
    from learner.rank import LearnerRank

    cfg = load_config("smoke", [
        f"--model.name_or_path={model_dir}", f"--learner.num_ranks={world}", "--learner.deepspeed_config=zero2",
        "--learner.supervised_ratio=0", "--learner.warm_start_steps=0", "--learner.warmup_steps=0",
        f"--learner.batch_size={len(shards[0])}", "--learner.lr=1e-3",
    ])
    cls = ray.remote(LearnerRank).options(num_cpus=1)
    ranks = [cls.remote(cfg, r, world) for r in range(world)]
    addr, port = ray.get(ranks[0].rendezvous_address.remote())
    ray.get([r.setup.remote(addr, port, []) for r in ranks])
    metrics = ray.get([r.train_step.remote(s) for r, s in zip(ranks, shards)])
    assert all(m["step"] == 1 for m in metrics)
    params = ray.get(ranks[0].parameters_snapshot.remote())
    if world > 1:  # every rank holds the same full parameters after the step
        other = ray.get(ranks[1].parameters_snapshot.remote())
        for k in params:
            torch.testing.assert_close(params[k], other[k])
    for r in ranks:
        ray.kill(r)
    return params


def test_two_zero2_ranks_match_one_rank_on_combined_batch(local_ray, tmp_path):
    from models import build_tiny, load_policy

    model_dir = build_tiny("tiny-gpt2", tmp_path / "model")
    # Dropout draws different masks in different processes; the comparison needs the deterministic model.
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config_path.write_text(json.dumps(config))
    before = load_policy(str(model_dir)).model.state_dict()
    batch = trajectories(8)
    two = train_once(str(model_dir), 2, [batch[:4], batch[4:]])
    one = train_once(str(model_dir), 1, [batch])
    moved = off = total = 0
    for key in one:
        # Adam's first step is lr * g / (|g| + eps): for a gradient element near eps, summation-order noise (the
        # shards pad differently) moves it by a fraction of lr. Allow 10% of one step (lr = 1e-3) anywhere and
        # more than 1% on at most one element in 10,000; a wrong normalisation would move most by a whole step.
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-4)
        off += int(((two[key] - one[key]).abs() > 1e-5).sum())
        total += one[key].numel()
        moved += not torch.equal(one[key], before[key].cpu())
    assert off <= total // 10_000, f"{off} of {total} parameters differ by more than 1% of one step"
    assert moved > len(one) // 2, "the step should have changed most parameter tensors"
