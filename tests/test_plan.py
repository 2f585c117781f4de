"""`launch.py plan`: memory estimates for the paper's models (built from their known architectures on the meta device,
no download) next to DeepSpeed's own estimator, and the verdicts for the presets on 80 GB and 40 GB GPUs."""
from __future__ import annotations

import pytest

from configs import load_config
from tests.conftest import REPO_ROOT

PAPER_MODELS = {"Salesforce/codet5-large-ntp-py": (0.73e9, 0.78e9), "Salesforce/codegen-2B-mono": (2.7e9, 2.8e9)}


@pytest.mark.parametrize("model", sorted(PAPER_MODELS))
@pytest.mark.parametrize("deepspeed_config", ["zero2_bf16", "zero2_offload_bf16", "zero2_offload_fp16"])
@pytest.mark.parametrize("ranks", [4, 8])
def test_model_states_match_deepspeeds_own_estimator(model: str, deepspeed_config: str, ranks: int) -> None:
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from learner.memory import learner_memory
    from models.architecture import architecture

    arch = architecture(model)
    low, high = PAPER_MODELS[model]
    assert low < arch.params < high, f"{model}: {arch.params} parameters"
    cfg = load_config("codet5-apps", [f"--model.name_or_path={model}", f"--learner.num_ranks={ranks}",
                                      f"--learner.deepspeed_config={deepspeed_config}"])
    mem = learner_memory(cfg, arch, ranks_per_node=ranks)
    offload = "offload" in deepspeed_config
    cpu, gpu = estimate_zero2_model_states_mem_needs(arch.params, num_gpus_per_node=ranks, cpu_offload=offload)
    assert mem.deepspeed_gpu == gpu
    assert abs(mem.model_states - gpu) <= 2, (mem.parts, gpu)
    assert mem.cpu_per_node == cpu
    # Without offload the optimizer states are partitioned over the ranks: twice the ranks, half of them.
    if not offload:
        assert mem.parts["optimizer states"] == pytest.approx(16 * arch.params / ranks)


def test_activation_estimates_shrink_with_checkpointing_and_program_only_logits() -> None:
    from models.architecture import activation_bytes, architecture

    arch = architecture("Salesforce/codegen-2B-mono")
    shape = dict(batch=16, prompt=800, program=512)
    full = activation_bytes(arch, checkpointing=False, program_only_logits=False, **shape)
    lean = activation_bytes(arch, checkpointing=True, program_only_logits=True, **shape)
    assert full["layers"] > 10 * lean["layers"]
    assert full["logits"] / lean["logits"] == pytest.approx((800 + 512) / 512)


def _plan(capsys, *argv: str) -> tuple[int, str, str]:
    from launch import main

    code = main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("preset, memory, fits", [
    ("codet5-apps", 40, True), ("codet5-apps", 80, True), ("codegen-apps", 80, True), ("codegen-apps", 40, False),
    ("codegen-apps-40g", 40, True),
])
def test_presets_fit_the_gpus_they_are_for_and_plan_refuses_the_others(capsys, preset, memory, fits) -> None:
    code, out, err = _plan(capsys, "--config", preset, "--node", "CPU=96,GPU=8", "--gpu-memory-gb", str(memory))
    assert code == (0 if fits else 1), err
    for name in ("learner-0", "learner-3", "sampler-0", "sampler-3", "sandbox-0..31", "eval-7"):
        assert f"  {name} " in out
    assert "DeepSpeed's estimator (estimate_zero2_model_states_mem_needs)" in out
    if not fits:
        assert "refused: node-0 GPU 0 would need" in err and f"but has {memory} GB" in err


def test_plan_refuses_what_cannot_be_placed_and_bad_nodes(capsys) -> None:
    code, _, err = _plan(capsys, "--config", "codet5-apps", "--node", "CPU=96,GPU=4")
    assert code == 1 and "refused: sampler-0 asks for {CPU: 2, GPU: 1}" in err
    cluster = str(REPO_ROOT / "cluster" / "cluster.yaml")
    code, _, err = _plan(capsys, "--config", "codegen-apps-cluster", "--cluster", cluster)
    assert code == 0, err
    code, _, err = _plan(capsys, "--config", "codet5-apps", "--node", "CPU=96,GPU")
    assert code == 2 and "'GPU' is not NAME=NUMBER" in err
