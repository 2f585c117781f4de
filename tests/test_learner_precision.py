"""Mixed precision on a real DeepSpeed engine (CPU, bf16): fp32 master weights move at the paper's lr 2e-6 where bf16
weights cannot, and a pure half-precision optimizer path is refused, from the JSON and from the built engine."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from configs import load_config
from learner.engine import PrecisionError, build_deepspeed_config
from rewards.trajectory import Trajectory

ray = pytest.importorskip("ray")


def test_a_pure_bf16_optimizer_json_is_refused_before_anything_loads(tmp_path) -> None:
    pure = tmp_path / "pure_bf16.json"
    pure.write_text(json.dumps({"zero_optimization": {"stage": 2},
                                "bf16": {"enabled": True, "bf16_master_weights_and_grads": True}}))
    with pytest.raises(PrecisionError, match="bf16_master_weights_and_grads .*without float32 master weights"):
        build_deepspeed_config(load_config("smoke", [f"--learner.deepspeed_config={pure}"]).learner)
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"fp16": {"enabled": True}, "bf16": {"enabled": True}}))
    with pytest.raises(PrecisionError, match="fp16 and bf16 are both enabled"):
        build_deepspeed_config(load_config("smoke", [f"--learner.deepspeed_config={both}"]).learner)
    for name in ("zero2_bf16", "zero2_offload_bf16", "zero2_offload_fp16", "zero0"):
        build_deepspeed_config(load_config("smoke", [f"--learner.deepspeed_config={name}"]).learner)


def _master_and_compute(rank) -> dict:
    """Inside the rank: each parameter's fp32 master copy (DeepSpeed's public accessor) and its compute copy."""
    from deepspeed.utils import safe_get_full_fp32_param

    return {n: (safe_get_full_fp32_param(p).detach().clone(), p.detach().clone())
            for n, p in rank.engine.module.named_parameters()}


def _bf16_engine_without_mixed_precision(rank) -> str:
    """Inside the rank: a model loaded in bf16 under a JSON with neither fp16 nor bf16 on (the learner's old path on
    GPUs): the optimizer would update bf16 weights."""
    from configs import load_config
    from learner.engine import check_master_weights, init_engine
    from models import load_policy

    model = load_policy(rank.cfg.model.name_or_path, dtype="bfloat16", device="cpu").model
    engine = init_engine(model, load_config("smoke", ["--learner.deepspeed_config=zero0"]).learner)
    try:
        check_master_weights(engine)
    except PrecisionError as exc:
        return str(exc)
    return "accepted"


@pytest.mark.slow
def test_one_step_at_lr_2e_6_moves_the_fp32_master_weights_and_pure_bf16_is_refused(tmp_path, ray_temp_dir):
    from cluster.connect import init_ray
    from learner.rank import LearnerRank
    from models import build_tiny

    model_dir = build_tiny("tiny-gpt2", tmp_path / "model")
    cfg = load_config("smoke", [f"--model.name_or_path={model_dir}", "--learner.deepspeed_config=zero2_bf16",
                                "--learner.lr=2e-6", "--learner.warmup_steps=0", "--learner.warm_start_steps=0",
                                "--learner.supervised_ratio=0", "--learner.batch_size=4"])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    init_ray(None, "test-precision", num_cpus=2, log_to_driver=False, _temp_dir=ray_temp_dir)
    try:
        rank = ray.remote(LearnerRank).options(num_cpus=1).remote(cfg, 0, 1)
        addr, port = ray.get(rank.rendezvous_address.remote())
        info = ray.get(rank.setup.remote(addr, port, []))
        assert info["precision"] == "bfloat16 compute, float32 master"
        before = ray.get(rank.__ray_call__.remote(_master_and_compute))
        shard = [Trajectory(problem_id=f"p{i}", prompt_ids=[5, 6, 7], program_ids=[8 + i, 9, 10, 11],
                            returns=[1.0, -0.5, 1.0, 0.3], behaviour_logprobs=[-3.0] * 4, policy_version=0,
                            reward=1.0, baseline_reward=0.0, outcome="passed") for i in range(4)]
        ray.get(rank.train_step.remote(shard))
        after = ray.get(rank.__ray_call__.remote(_master_and_compute))
        moved_master = moved_compute = total = 0
        for name, (master, compute) in before.items():
            assert master.dtype == torch.float32 and compute.dtype == torch.bfloat16
            delta = (after[name][0] - master).abs()
            total += master.numel()
            moved_master += int((delta > 1e-7).sum())
            moved_compute += int((after[name][1] != compute).sum())
            assert float(delta.max()) < 1e-5, f"{name}: an Adam step at lr 2e-6 moved a weight by {delta.max()}"
        # Adam's first step moves every weight with a gradient by ~lr in fp32; in bf16 such a step mostly rounds
        # away, which is why the optimizer must not update the bf16 copy itself.
        assert moved_master > 0.5 * total, f"only {moved_master} of {total} master weights moved"
        assert moved_compute < 0.2 * total, f"{moved_compute} of {total} bf16 weights changed after one step"
        refusal = ray.get(rank.__ray_call__.remote(_bf16_engine_without_mixed_precision))
        assert "would update bfloat16 weights" in refusal and "pure half-precision" in refusal
        ray.kill(rank)
    finally:
        ray.shutdown()
