"""The shape of a model from its config alone, and the memory its activations and generation take.

`launch.py plan` estimates each GPU's memory before anything loads. The config comes from a local directory or a
tiny preset, from the hub (config.json only), or, for the paper's models, from their known architectures, so a plan
works offline: CodeT5-large (770M) and CodeGen-2B/350M. The parameter count is exact (the model is built on
PyTorch's meta device: shapes, no memory).

Activation estimates follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", section 4.1): a layer keeps ``s*b*h*34 + 5*a*s^2*b`` bytes in half precision (eager attention, dropout
masks, a 4h MLP); with activation checkpointing only each layer's input (``2*s*b*h``) stays, plus one layer's full
activations while it is recomputed. Encoder-decoder models add the cross-attention. Logits cost
``b * positions * V * (model bytes + 8)`` (the float32 copy for the log-softmax and its gradient).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

# Architectures of the paper's models (their hub config.json), for plans without the hub.
_CODET5_LARGE = ("t5", dict(vocab_size=32100, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_decoder_layers=24,
                            num_heads=16, feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0))
KNOWN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "Salesforce/codet5-large-ntp-py": _CODET5_LARGE,
    "Salesforce/codet5-large": _CODET5_LARGE,
    "Salesforce/codegen-2B-mono": ("codegen", dict(vocab_size=51200, n_embd=2560, n_layer=32, n_head=32,
                                                   rotary_dim=64, n_positions=2048, n_ctx=2048)),
    "Salesforce/codegen-350M-mono": ("codegen", dict(vocab_size=51200, n_embd=1024, n_layer=20, n_head=16,
                                                     rotary_dim=32, n_positions=2048, n_ctx=2048)),
}
GB = 1e9


@dataclass(frozen=True)
class Architecture:
    name: str
    seq2seq: bool
    params: int
    hidden: int
    heads: int
    encoder_layers: int  # 0 for a causal LM
    decoder_layers: int  # the layers of a causal LM
    vocab: int
    source: str  # where the config came from


def model_config(name_or_path: str) -> tuple[Any, str]:
    """(transformers config, where it came from) without loading any weights."""
    from transformers import AutoConfig, CONFIG_MAPPING

    from models.loading import resolve_source

    if name_or_path in KNOWN_ARCHITECTURES:
        model_type, values = KNOWN_ARCHITECTURES[name_or_path]
        return CONFIG_MAPPING[model_type](**values), "known architecture"
    source, local_only = resolve_source(name_or_path)
    return AutoConfig.from_pretrained(source, local_files_only=local_only), source


def architecture(name_or_path: str, kind: Optional[str] = None) -> Architecture:
    """The architecture of a model by hub name, path or tiny preset (``kind`` forces seq2seq or causal)."""
    config, source = model_config(name_or_path)
    return describe(config, name_or_path, source, kind)


def describe(config: Any, name: str, source: str = "config", kind: Optional[str] = None) -> Architecture:
    """The architecture of a transformers config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    seq2seq = bool(getattr(config, "is_encoder_decoder", False)) if kind is None else kind == "seq2seq"
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights count once
    text = config.get_text_config() if hasattr(config, "get_text_config") else config

    def first(*names: str) -> int:
        return int(next(getattr(text, n) for n in names if getattr(text, n, None) is not None))

    layers = first("num_hidden_layers", "num_layers", "n_layer")
    return Architecture(
        name=name, seq2seq=seq2seq, params=params, hidden=first("hidden_size", "d_model", "n_embd"),
        heads=first("num_attention_heads", "num_heads", "n_head"),
        encoder_layers=layers if seq2seq else 0,
        decoder_layers=first("num_decoder_layers", "num_layers") if seq2seq else layers,
        vocab=first("vocab_size"), source=source)


def _layer(s: int, b: int, h: int, a: int) -> float:
    return 34 * s * b * h + 5 * a * s * s * b


def activation_bytes(arch: Architecture, batch: int, prompt: int, program: int, *, checkpointing: bool,
                     value_bytes: int = 2, program_only_logits: bool = True) -> dict[str, float]:
    """Peak activation memory of one micro-batch's forward and backward: ``layers`` and ``logits`` (bytes)."""
    h, a, b, scale = arch.hidden, arch.heads, batch, value_bytes / 2
    if arch.seq2seq:
        enc, dec = prompt, program
        enc_layer = _layer(enc, b, h, a)
        dec_layer = _layer(dec, b, h, a) + 11 * dec * b * h + 4 * enc * b * h + 5 * a * dec * enc * b
        if checkpointing:
            kept = arch.encoder_layers * 2 * enc * b * h + arch.decoder_layers * 2 * dec * b * h + 2 * enc * b * h
            layers = kept + max(enc_layer, dec_layer)
        else:
            layers = arch.encoder_layers * enc_layer + arch.decoder_layers * dec_layer
        positions = program
    else:
        s = prompt + program
        layers = (arch.decoder_layers * 2 * s * b * h + _layer(s, b, h, a) if checkpointing
                  else arch.decoder_layers * _layer(s, b, h, a))
        positions = program if program_only_logits else s
    return {"layers": layers * scale, "logits": b * positions * arch.vocab * (value_bytes + 8)}


def generation_bytes(arch: Architecture, sequences: int, prompt: int, new_tokens: int,
                     value_bytes: int = 2) -> dict[str, float]:
    """Memory of one `generate` call for ``sequences`` sequences: ``weights``, ``kv_cache`` (with a seq2seq model's
    encoder output and cross-attention keys and values) and ``step_logits`` (float32 logits of one step, processed
    scores and probabilities; behaviour log-probs gathered per step, nothing stacked)."""
    h, n = arch.hidden, sequences
    if arch.seq2seq:
        cache = (2 * arch.decoder_layers * (new_tokens + prompt) + prompt) * h * n * value_bytes
    else:
        cache = 2 * arch.decoder_layers * (prompt + new_tokens) * h * n * value_bytes
    return {"weights": arch.params * value_bytes, "kv_cache": cache, "step_logits": 3 * n * arch.vocab * 4}
