"""Configuration: presets load into typed dataclasses; overrides apply; bad keys and values are named."""
from __future__ import annotations

import pytest

from configs import (
    ConfigError,
    deepspeed_config_path,
    load_config,
    presets,
    save_config,
)
from configs.schema import Config


def test_required_presets_exist_and_load():
    assert {"smoke", "local", "codet5-apps", "codegen-apps"} <= set(presets())
    for name in presets():
        assert isinstance(load_config(name), Config)


def test_paper_preset_carries_spec_values():
    cfg = load_config("codet5-apps")
    assert cfg.learner.lr == 2e-6 and cfg.learner.weight_decay == 0.05 and cfg.learner.warmup_steps == 500
    assert cfg.buffer.capacity == 6400 and cfg.sampler.samples_per_problem == 20 and cfg.sampler.top_p == 0.95
    assert cfg.model.max_prompt_tokens == 800 and cfg.model.max_new_tokens == 512
    # codegen-apps inherits from codet5-apps and changes only what differs
    cg = load_config("codegen-apps")
    assert cg.sampler.samples_per_problem == 10 and cg.model.kind == "causal" and cg.learner.lr == 2e-6


def test_overrides_apply_with_types():
    cfg = load_config("smoke", ["--learner.lr=1e-5", "--sampler.num_samplers=3", "reward.baseline=best",
                                "--learner.importance_clip=2"])
    assert cfg.learner.lr == 1e-5 and isinstance(cfg.learner.lr, float)
    assert cfg.sampler.num_samplers == 3
    assert cfg.reward.baseline == "best"
    assert cfg.learner.importance_clip == 2.0


@pytest.mark.parametrize(
    "override, named",
    [
        ("--learner.lrr=1", "learner.lrr"),
        ("--nosuch.key=1", "nosuch"),
        ("--sampler.num_samplers=two", "sampler.num_samplers"),
        ("--sampler.num_samplers=1.5", "sampler.num_samplers"),
        ("--reward.baseline=mean", "reward.baseline"),
        ("--reward.adaptive=3", "reward.adaptive"),
        ("--sampler.top_p=1.5", "sampler.top_p"),
        ("--learner.lr=0", "learner.lr"),
        ("--buffer.min_fill=100000", "buffer.min_fill"),
        ("--learner.warm_start_lr_end=0", "learner.warm_start_lr_end"),
        ("--learner.checkpoint_every_s=-1", "learner.checkpoint_every_s"),
        ("--run.max_wall_s=-5", "run.max_wall_s"),
        ("--learner.online=maybe", "learner.online"),
        ("--reward.fine_grained_scale=log", "reward.fine_grained_scale"),
        ("--reward.penalti=0.3", "reward.penalti"),
        ("--reward.penalty=-1", "reward.penalty"),
        ("--reward.function=mean", "reward.function"),
        ("learner.lr", "learner.lr"),
    ],
)
def test_bad_overrides_name_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config("smoke", [override])


def test_a_baseline_that_needs_greedy_decodes_needs_them_on():
    for baseline in ("greedy", "best"):
        with pytest.raises(ConfigError, match="reward.baseline: .* sampler.greedy_baseline is false"):
            load_config("smoke", [f"--reward.baseline={baseline}", "--sampler.greedy_baseline=false"])
    assert load_config("smoke", ["--reward.baseline=group", "--sampler.greedy_baseline=false"])


def test_unknown_preset_and_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner:\n  lr: 1e-3\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"learner\.bogus"):
        load_config(str(bad))


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("smoke", ["--learner.lr=3e-4"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(str(path)) == cfg


def test_deepspeed_config_names():
    assert deepspeed_config_path("zero2").name == "zero2.json"
    with pytest.raises(ConfigError, match="learner.deepspeed_config"):
        deepspeed_config_path("zero9")


def test_resource_mappings_are_typed():
    cfg = load_config("smoke", ["--sampler.resources={sampler_slot: 1}"])
    assert cfg.sampler.resources == {"sampler_slot": 1.0}
    with pytest.raises(ConfigError, match=r"sampler\.resources"):
        load_config("smoke", ["--sampler.resources=3"])
    with pytest.raises(ConfigError, match=r"sampler\.resources\.slot"):
        load_config("smoke", ["--sampler.resources={slot: many}"])


def test_learning_rate_schedule_warm_start_decay_then_rl_warmup():
    from learner.engine import lr_multiplier

    cfg = load_config("smoke", ["--learner.warm_start_steps=11", "--learner.warm_start_lr=1e-3",
                                "--learner.warm_start_lr_end=2e-4", "--learner.lr=1e-4", "--learner.warmup_steps=4"])
    lrs = [lr_multiplier(step, cfg.learner) * cfg.learner.lr for step in range(11 + 6)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(6e-4) and lrs[10] == pytest.approx(2e-4)
    assert lrs[11:] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4])  # RL warm-up from the warm start's end
    constant = load_config("smoke", ["--learner.warm_start_steps=11", "--learner.warm_start_lr=1e-3"]).learner
    assert [lr_multiplier(s, constant) * constant.lr for s in range(11)] == pytest.approx([1e-3] * 11)
