"""The one place where device, dtype and distributed-backend choices are made.

Every other part (samplers, learner ranks, eval actors, benchmarks) asks these functions instead of testing
``torch.cuda.is_available()`` itself, so that one environment variable moves the whole system:

- ``RLTF_DEVICE``: ``cpu``, ``cuda`` or ``cuda:N``. Default: inside a Ray actor, the GPU Ray assigned to it
  (`gpu_assignment`, from ``ray.get_gpu_ids()``), or the CPU when it asked Ray for none (it must not take a GPU
  that Ray gave to another actor); outside Ray, ``cuda`` when a GPU is visible, else ``cpu``.
- ``RLTF_DTYPE``: ``float32``, ``bfloat16`` or ``float16`` for inference copies (samplers, evaluation; default:
  float32 on CPU; bfloat16 on a GPU that supports it, else float16). The learner always loads float32 weights
  (`master_dtype`): DeepSpeed casts its compute copy to the precision of its JSON and keeps fp32 master weights.

torch is imported inside the functions: this module is imported by command-line modules whose ``--help``
must stay fast.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_ENV = "RLTF_DEVICE"
DTYPE_ENV = "RLTF_DTYPE"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"

_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


class DeviceError(ValueError):
    """A device or dtype setting that cannot be honoured on this machine."""


@dataclass(frozen=True)
class GpuAssignment:
    """The GPUs Ray gave this process and what follows from them: the index torch knows the first one by (its
    local rank: the DeepSpeed ``LOCAL_RANK``) and the device name. Derived without touching CUDA, so it is the
    same on a GPU node and on a CPU machine whose Ray advertises logical GPUs."""

    gpu_ids: tuple[str, ...]  # Ray's ids (the physical GPU indices of the node)
    visible: Optional[str]  # CUDA_VISIBLE_DEVICES as this process sees it (None: unset, every GPU visible)
    local_rank: int

    @property
    def device(self) -> str:
        return f"cuda:{self.local_rank}"


def ray_gpu_ids() -> list[str]:
    """The GPU ids Ray assigned to this process (``ray.get_gpu_ids()``); [] outside Ray or when it asked for none."""
    if "ray" not in sys.modules:  # Ray workers always have ray imported: this process is not one
        return []
    import ray

    return [str(i) for i in ray.get_gpu_ids()] if ray.is_initialized() else []


def in_ray_actor() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def visible_index(gpu_id: str, visible: Optional[str]) -> int:
    """torch's index of physical GPU ``gpu_id`` when ``CUDA_VISIBLE_DEVICES`` is ``visible`` (None: all GPUs)."""
    if visible is None:
        return int(gpu_id)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if gpu_id not in ids:
        raise DeviceError(f"GPU {gpu_id} (assigned by Ray) is not in {VISIBLE_ENV}={visible!r}")
    return ids.index(gpu_id)


def gpu_assignment() -> Optional[GpuAssignment]:
    """This process's GPU as Ray assigned it, or None when Ray gave it none."""
    ids = ray_gpu_ids()
    if not ids:
        return None
    visible = os.environ.get(VISIBLE_ENV)
    return GpuAssignment(tuple(ids), visible, visible_index(ids[0], visible))


def share_visible_gpus(gpu_ids: Sequence[str]) -> None:
    """Make ``gpu_ids`` (this node's GPUs of one process group, this process's own among them) visible here.

    Ray shows each actor only its own GPU; ranks of one NCCL group on a node then cannot use peer-to-peer copies
    between their GPUs. As Ray Train does, every rank on a node sees the group's GPUs of that node and picks its
    own by index (its local rank). Must run before CUDA is initialised in this process."""
    import torch

    own = ray_gpu_ids()
    if own and own[0] not in gpu_ids:
        raise DeviceError(f"cannot share GPUs {list(gpu_ids)}: this process was assigned GPU {own[0]}")
    if torch.cuda.is_initialized():
        raise DeviceError("CUDA is already initialised in this process: its visible GPUs can no longer change")
    os.environ[VISIBLE_ENV] = ",".join(gpu_ids)


def torch_device() -> str:
    """The device name models and tensors go to: ``"cuda"`` / ``"cuda:N"`` or ``"cpu"`` (see the module doc).

    A string rather than ``torch.device`` so it can sit in configs, logs and Ray actor options unchanged;
    ``model.to(torch_device())`` accepts it.
    """
    import torch

    requested = os.environ.get(DEVICE_ENV, "").strip().lower()
    if not requested:
        assigned = gpu_assignment()
        if assigned is not None:
            if not torch.cuda.is_available():
                raise DeviceError(f"Ray assigned GPU {assigned.gpu_ids[0]} to this process, but torch sees no CUDA "
                                  f"device (a CPU build of torch?); install a CUDA build or set {DEVICE_ENV}=cpu")
            return assigned.device
        if in_ray_actor():
            return "cpu"  # it asked Ray for no GPU: every GPU it can see belongs to other actors
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


def collective_device(backend: str, device: str | None = None) -> str:
    """Where the tensors of a collective on a ``backend`` group must live: NCCL takes only CUDA tensors (on the
    process's own GPU, ``device``, default `torch_device()`); gloo takes CPU tensors."""
    if backend == "nccl":
        device = device or torch_device()
        if not is_cuda(device):
            raise DeviceError(f"an NCCL group needs CUDA tensors, but this process runs on {device!r}")
        return device
    return "cpu"


def num_gpus() -> int:
    """GPUs this process may use: 0 when the device is forced to CPU, so Ray asks for none."""
    import torch

    return torch.cuda.device_count() if is_cuda() else 0


def master_dtype() -> torch.dtype:
    """The dtype the learner loads its weights in: float32, always. Under a DeepSpeed JSON with fp16 or bf16 on,
    DeepSpeed casts the module to that precision for compute and keeps these float32 values as the optimizer's
    master weights (loading in half precision would round them first); without it, training is float32."""
    import torch

    return torch.float32


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
