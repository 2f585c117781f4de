"""Configuration loading: YAML presets and files into the typed `Config`, plus `--section.key=value` overrides.

    cfg = load_config("smoke", ["--learner.lr=1e-5", "--sampler.num_samplers=2"])

Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the key (``learner.lr``).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from configs.schema import Config

PRESET_DIR = Path(__file__).resolve().parent
DEEPSPEED_DIR = PRESET_DIR / "deepspeed"


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names the key."""


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field's type annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if annotation is float and type(value) is int:
        return float(value)
    if annotation is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        # PyYAML follows YAML 1.1, which reads `1e-5` (no dot) as a string.
        return float(value)
    if annotation in (int, float, str, bool) and type(value) is not annotation:
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, key)
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    # A preset may start from another one: `base: local`.
    base = data.pop("base", None)
    if base is not None:
        data = _merge(_read_yaml(_resolve(str(base))), data)
    return data


def _resolve(preset_or_path: str) -> Path:
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset = PRESET_DIR / f"{preset_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"unknown preset {preset_or_path!r} (presets: {', '.join(presets())})")
    return preset


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """`--learner.lr=1e-5` (or `learner.lr=1e-5`) into {"learner": {"lr": 1e-05}}; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        dotted, raw = text.split("=", 1)
        parts = dotted.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r}: the key must be section.key, e.g. learner.lr")
        value = yaml.safe_load(raw) if raw != "" else ""
        tree.setdefault(parts[0], {})
        if not isinstance(tree[parts[0]], dict):
            raise ConfigError(f"override {item!r}: {parts[0]} is a section")
        tree[parts[0]][parts[1]] = value
    return tree


def validate(cfg: Config) -> Config:
    """Range checks that types alone cannot express."""
    positive = {
        "sampler.samples_per_problem": cfg.sampler.samples_per_problem,
        "sampler.problems_per_batch": cfg.sampler.problems_per_batch,
        "sampler.temperature": cfg.sampler.temperature,
        "model.max_new_tokens": cfg.model.max_new_tokens,
        "model.max_prompt_tokens": cfg.model.max_prompt_tokens,
        "buffer.capacity": cfg.buffer.capacity,
        "learner.num_ranks": cfg.learner.num_ranks,
        "learner.lr": cfg.learner.lr,
        "learner.batch_size": cfg.learner.batch_size,
        "learner.grad_accum": cfg.learner.grad_accum,
        "learner.publish_every": cfg.learner.publish_every,
        "sandbox.test_timeout_s": cfg.sandbox.test_timeout_s,
        "sandbox.program_timeout_s": cfg.sandbox.program_timeout_s,
        "sandbox.memory_mb": cfg.sandbox.memory_mb,
        "eval.limit": cfg.eval.limit,
        "eval.samples_per_problem": cfg.eval.samples_per_problem,
        "eval.temperature": cfg.eval.temperature,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    non_negative = {
        "sampler.num_samplers": cfg.sampler.num_samplers,
        "sandbox.num_workers": cfg.sandbox.num_workers,
        "buffer.min_fill": cfg.buffer.min_fill,
        "learner.total_steps": cfg.learner.total_steps,
        "learner.warm_start_steps": cfg.learner.warm_start_steps,
        "learner.supervised_ratio": cfg.learner.supervised_ratio,
        "learner.warmup_steps": cfg.learner.warmup_steps,
        "learner.weight_decay": cfg.learner.weight_decay,
        "learner.checkpoint_every_s": cfg.learner.checkpoint_every_s,
        "run.max_wall_s": cfg.run.max_wall_s,
        "reward.penalty": cfg.reward.penalty,
        "eval.every_steps": cfg.eval.every_steps,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    for key, top_p in (("sampler.top_p", cfg.sampler.top_p), ("eval.top_p", cfg.eval.top_p)):
        if not 0 < top_p <= 1:
            raise ConfigError(f"{key}: must be in (0, 1], got {top_p}")
    if cfg.eval.every_steps and cfg.eval.source is None and cfg.data.eval_split is None:
        raise ConfigError("eval.every_steps: held-out evaluation needs data.eval_split or eval.source "
                          "(or eval.every_steps=0)")
    share = cfg.sampler.reference_free_share
    if share is not None and not 0 <= share <= 1:
        raise ConfigError(f"sampler.reference_free_share: must be in [0, 1] or null, got {share}")
    if cfg.buffer.min_fill > cfg.buffer.capacity:
        raise ConfigError(
            f"buffer.min_fill ({cfg.buffer.min_fill}) exceeds buffer.capacity ({cfg.buffer.capacity})"
        )
    if cfg.reward.baseline in ("greedy", "best") and not cfg.sampler.greedy_baseline:
        raise ConfigError(f"reward.baseline: {cfg.reward.baseline!r} needs one greedy decode per problem, but "
                          "sampler.greedy_baseline is false (use baseline group or none, or turn greedy decodes on)")
    if cfg.learner.warm_start_lr_end is not None and cfg.learner.warm_start_lr_end <= 0:
        raise ConfigError(f"learner.warm_start_lr_end: must be > 0 or null, got {cfg.learner.warm_start_lr_end}")
    if cfg.learner.importance_clip is not None and cfg.learner.importance_clip <= 0:
        raise ConfigError(f"learner.importance_clip: must be > 0 or null, got {cfg.learner.importance_clip}")
    _validate_resources(cfg)
    return cfg


def _validate_resources(cfg: Config) -> None:
    """Ray resources per role: GPUs are a share of one (< 1) or whole ones, and a learner rank drives one GPU."""
    roles = {"learner": cfg.learner, "sampler": cfg.sampler, "sandbox": cfg.sandbox, "eval": cfg.eval}
    for role, section in roles.items():
        gpus = getattr(section, "num_gpus", 0.0)
        if section.num_cpus < 0 or gpus < 0:
            raise ConfigError(f"{role}.num_cpus / {role}.num_gpus: must be >= 0, got {section.num_cpus} / {gpus}")
        if gpus > 1 and gpus != int(gpus):
            raise ConfigError(f"{role}.num_gpus: a share of one GPU (< 1) or whole GPUs, got {gpus}")
        for name, amount in section.resources.items():
            if amount < 0:
                raise ConfigError(f"{role}.resources.{name}: must be >= 0, got {amount}")
    gpus = cfg.learner.num_gpus
    if gpus not in (0, 1):
        why = "two ranks would share a GPU, which NCCL refuses" if gpus < 1 else "the others would idle"
        raise ConfigError(f"learner.num_gpus: a learner rank drives one GPU, so 0 (CPU) or 1; got {gpus} ({why})")
    if cfg.eval.num_actors < 0:
        raise ConfigError(f"eval.num_actors: must be >= 0, got {cfg.eval.num_actors}")


def load_config(preset_or_path: str = "local", overrides: Iterable[str] = ()) -> Config:
    data = _merge(_read_yaml(_resolve(preset_or_path)), parse_overrides(overrides))
    return validate(_build(Config, data, ""))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def deepspeed_config_path(name_or_path: str) -> Path:
    """A DeepSpeed JSON: a name under configs/deepspeed/ (zero0, zero2, ...) or a path."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise ConfigError(f"learner.deepspeed_config: file {path} does not exist")
        return path
    named = DEEPSPEED_DIR / f"{name_or_path}.json"
    if not named.is_file():
        known = ", ".join(sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json")))
        raise ConfigError(f"learner.deepspeed_config: unknown name {name_or_path!r} (known: {known})")
    return named
