"""Models: loading a policy (model + tokenizer) by hub name, local path or tiny preset, generation backends
(`models.backend`: generate with behaviour log-probs, load weights), and the one place where device / dtype /
distributed-backend choices are made.

Light at import time (no torch or transformers until a function runs), so command-line modules may import it.
"""
from models.backend import BACKENDS, GenerationBackend, HFBackend, load_backend
from models.device import (
    default_dtype,
    dist_backend,
    num_gpus,
    resolve_dtype,
    torch_device,
)
from models.loading import ModelLoadError, Policy, load_policy
from models.tiny import PRESETS as TINY_PRESETS
from models.tiny import build_tiny, ensure_tiny

__all__ = [
    "BACKENDS",
    "GenerationBackend",
    "HFBackend",
    "load_backend",
    "TINY_PRESETS",
    "ModelLoadError",
    "Policy",
    "build_tiny",
    "default_dtype",
    "dist_backend",
    "ensure_tiny",
    "load_policy",
    "num_gpus",
    "resolve_dtype",
    "torch_device",
]
