"""Load a policy (model + tokenizer) by hub name, local directory or tiny preset, through one code path.

``load_policy("Salesforce/codet5-large-ntp-py")``, ``load_policy("/ckpt/step-500")`` and
``load_policy("tiny:gpt2")`` all end in the same ``from_pretrained`` calls; only where the files come from
differs. Seq2seq (T5 / CodeT5) or causal (GPT-2 / CodeGen) is read from the model's config
(``is_encoder_decoder``) unless ``kind`` forces it.

A name that cannot be loaded fails fast with one sentence (`ModelLoadError`): a local directory is checked
first, the hub is not contacted when ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` is set, and otherwise one
short reachability probe replaces ``huggingface_hub``'s half-minute of retries.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.device import resolve_dtype, torch_device

KINDS = ("seq2seq", "causal")
_TRUE = {"1", "true", "yes", "on"}
_HUB_PROBE_TIMEOUT_S = 3.0


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded; the message is one sentence naming it and why."""


@dataclass
class Policy:
    """A loaded policy: a transformers model, its tokenizer, and which family it is."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    is_seq2seq: bool
    name_or_path: str

    @property
    def kind(self) -> str:
        return "seq2seq" if self.is_seq2seq else "causal"

    @property
    def device(self) -> Any:
        return self.model.device


def hub_offline() -> bool:
    """Whether the hub must not be contacted: the environment says so (read now, not at import time)."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return env in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable() -> bool:
    """One HEAD request to the hub endpoint with a short timeout, through huggingface_hub's own HTTP session
    (so proxies configured for it apply)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 - any failure to connect means "unreachable" for this purpose
        return False


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or os.sep in name.replace("/", "")


def resolve_source(name_or_path: str) -> tuple[str, bool]:
    """(where to load from, local_files_only) for a name; raises `ModelLoadError` when it cannot be loaded."""
    if name_or_path.startswith("tiny:"):
        from models.tiny import TinyPresetError, ensure_tiny

        try:
            return str(ensure_tiny(name_or_path)), True
        except TinyPresetError as exc:
            raise ModelLoadError(str(exc)) from None
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but not a saved model (no config.json in it)")
        return str(path), True
    if path.exists() or _looks_like_path(name_or_path):
        raise ModelLoadError(f"model path {name_or_path!r} is not an existing directory with a saved model")
    if hub_offline():
        return name_or_path, True
    if not _hub_reachable():
        # The local hub cache may still hold it; only that is tried.
        return name_or_path, True
    return name_or_path, False


def _not_found(name: str, local_only: bool) -> ModelLoadError:
    if local_only:
        why = "offline: HF_HUB_OFFLINE=1" if hub_offline() else "the hub did not answer"
        return ModelLoadError(
            f"model {name!r} is neither a local directory nor in the local hub cache, and the model hub is not "
            f"reachable ({why}); pass a saved model directory or a tiny preset such as 'tiny:gpt2'"
        )
    return ModelLoadError(f"model {name!r} is neither a local directory nor a model on the hub")


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    import transformers

    # transformers renamed `torch_dtype` to `dtype` in 4.56; setup.cfg allows versions on both sides.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_policy(name_or_path: str, *, kind: str | None = None, device: Any = None, dtype: Any = None) -> Policy:
    """Load model and tokenizer from a hub name, a local ``save_pretrained`` directory or ``tiny:<preset>``.

    ``kind``: ``"seq2seq"`` or ``"causal"`` to override the config's ``is_encoder_decoder``. ``device`` and
    ``dtype`` default to `models.device.torch_device` / `models.device.default_dtype`. Causal tokenizers get a
    pad token (eos when they have none) and left padding, which batched generation needs.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    source, local_only = resolve_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError):
        # OSError: missing files or no connection; ValueError: huggingface_hub rejects the repo id's form.
        if Path(source).is_dir():
            raise ModelLoadError(f"{source}: config.json could not be read as a model config") from None
        raise _not_found(name_or_path, local_only) from None

    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False)) if kind is None else kind == "seq2seq"
    auto_class = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    device = str(device) if device is not None else torch_device()
    torch_dtype = resolve_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = auto_class.from_pretrained(
            source, config=config, local_files_only=local_only, **_dtype_kwargs(torch_dtype)
        )
    except OSError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model {name_or_path!r}: its files could not be loaded ({first_line})") from None
    except ValueError as exc:  # e.g. a config the requested auto class has no model for
        family = "seq2seq" if is_seq2seq else "causal"
        raise ModelLoadError(f"model {name_or_path!r} cannot be loaded as a {family} LM: {exc}") from None

    if not is_seq2seq:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    return Policy(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq, name_or_path=name_or_path)
