"""The one place where device, dtype and distributed-backend choices are made.

Every other part (samplers, learner ranks, benchmarks) asks these functions instead of testing
``torch.cuda.is_available()`` itself, so that one environment variable moves the whole system:

- ``RLTF_DEVICE``: ``cpu``, ``cuda`` or ``cuda:N`` (default: ``cuda`` when a GPU is visible, else ``cpu``).
- ``RLTF_DTYPE``: ``float32``, ``bfloat16`` or ``float16`` (default: float32 on CPU; bfloat16 on a GPU that
  supports it, else float16).

torch is imported inside the functions: this module is imported by command-line modules whose ``--help``
must stay fast.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_ENV = "RLTF_DEVICE"
DTYPE_ENV = "RLTF_DTYPE"

_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


class DeviceError(ValueError):
    """A device or dtype setting that cannot be honoured on this machine."""


def torch_device() -> str:
    """The device name models and tensors go to: ``"cuda"`` (or ``"cuda:N"``) or ``"cpu"``.

    A string rather than ``torch.device`` so it can sit in configs, logs and Ray actor options unchanged;
    ``model.to(torch_device())`` accepts it.
    """
    import torch

    requested = os.environ.get(DEVICE_ENV, "").strip().lower()
    if not requested:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or (requested.startswith("cuda:") and requested[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"{DEVICE_ENV}={requested!r} asks for a GPU, but torch sees no CUDA device here")
        if ":" in requested and int(requested[5:]) >= torch.cuda.device_count():
            raise DeviceError(
                f"{DEVICE_ENV}={requested!r} names GPU {requested[5:]}, but only "
                f"{torch.cuda.device_count()} are visible"
            )
        return requested
    raise DeviceError(f"{DEVICE_ENV}={requested!r} is not a device this project supports (cpu, cuda, cuda:N)")


def is_cuda(device: str | None = None) -> bool:
    """Whether ``device`` (default: `torch_device()`) is a CUDA device."""
    return (device or torch_device()).startswith("cuda")


def dist_backend(device: str | None = None) -> str:
    """The ``torch.distributed`` backend for ranks on ``device``: NCCL between GPUs, gloo on CPU."""
    return "nccl" if is_cuda(device) else "gloo"


def num_gpus() -> int:
    """GPUs this process may use: 0 when the device is forced to CPU, so Ray asks for none."""
    import torch

    return torch.cuda.device_count() if is_cuda() else 0


def default_dtype(device: str | None = None) -> torch.dtype:
    """The dtype to load weights in. CPU kernels are fast and exact only in float32; on GPUs half precision
    halves memory (bfloat16 where the card has it, since it needs no loss scaling)."""
    import torch

    requested = os.environ.get(DTYPE_ENV, "").strip().lower()
    if requested:
        return resolve_dtype(requested)
    device = device or torch_device()
    if not is_cuda(device):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_dtype(dtype: str | torch.dtype | None, device: str | None = None) -> torch.dtype:
    """Turn a dtype name (``"bf16"``, ``"float32"``, ...) or ``torch.dtype`` into a ``torch.dtype``;
    None means `default_dtype(device)`."""
    import torch

    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).strip().lower())
    if name is None:
        raise DeviceError(f"dtype {dtype!r} is not one of {sorted(set(_DTYPE_NAMES))}")
    return getattr(torch, name)
