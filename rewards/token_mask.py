"""Blamed line -> mask over the program's *sampled* tokens (RLTF-SPEC.md section 3).

The sampled ids are what the learner trains on, and they need not equal a fresh tokenization of the program
text (a model may spell ``return`` as ``ret`` + ``urn``). So the mask is computed from the sampled ids:

- byte-level tokenizers (ByT5; byte-level BPE as in GPT-2, CodeGen, CodeT5 and the tiny presets): each id's
  exact bytes come from the vocabulary, so the ids' byte spans are exact, whatever the segmentation (and when
  the bytes are not valid UTF-8, one incremental decoding pass gives their character spans);
- any other fast tokenizer: its character offsets from a fresh tokenization, used only when that tokenization
  gives exactly the sampled ids.

A token is blamed when its span overlaps the blamed line's characters (its newline excluded). The line is found
by its number, never by searching its text. For causal LMs the executed program may be
``program_prefix + completion`` while the ids cover only the completion (``completion_start`` = length of the
prefix): a line inside the prefix blames no token.
"""
from __future__ import annotations

import codecs
import json
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np


class TokenMaskError(ValueError):
    """The sampled ids cannot be lined up with the program text."""


def line_span(program: str, line: int) -> tuple[int, int]:
    """Character span [start, end) of 1-based ``line`` in ``program``, without its newline."""
    if line < 1:
        raise ValueError(f"line numbers start at 1, got {line}")
    start = 0
    for _ in range(line - 1):
        newline = program.find("\n", start)
        if newline < 0:
            raise ValueError(f"the program has fewer than {line} lines")
        start = newline + 1
    end = program.find("\n", start)
    return start, len(program) if end < 0 else end


# ----------------------------------------------------------------------------------- bytes of each sampled id

_BYTES_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's reversible map from its printable stand-in characters back to bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_DECODER = _gpt2_byte_decoder()


def _backend_decoder_type(tokenizer: Any) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    if decoder.get("type") == "Sequence":  # a ByteLevel step inside a sequence still means byte-level tokens
        types = {d.get("type") for d in decoder.get("decoders", [])}
        return "ByteLevel" if "ByteLevel" in types else "Sequence"
    return decoder.get("type")


class _TokenBytes:
    """Per-tokenizer table: sampled id -> the exact bytes it adds to decoded text (b"" for special tokens,
    which decoding with ``skip_special_tokens=True`` drops)."""

    def __init__(self, tokenizer: Any):
        self.special = set(tokenizer.all_special_ids)
        if type(tokenizer).__name__ == "ByT5Tokenizer":
            self.kind, self.offset = "byt5", int(getattr(tokenizer, "offset", 3))
            self.byte_count = 256
        elif _backend_decoder_type(tokenizer) == "ByteLevel":
            self.kind = "bytelevel"
            # Added tokens (CodeGen's runs of spaces, for instance) are literal text, not byte-level symbols.
            self.added = {idx: tok for tok, idx in tokenizer.get_added_vocab().items()}
            self.tokenizer = weakref.proxy(tokenizer)
        else:
            self.kind = "other"
        self.cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        if token_id in self.special:
            return b""
        if self.kind == "byt5":
            byte = token_id - self.offset
            return bytes([byte]) if 0 <= byte < self.byte_count else b""
        cached = self.cache.get(token_id)
        if cached is None:
            if token_id in self.added:
                cached = self.added[token_id].encode("utf-8")
            else:
                text = self.tokenizer.convert_ids_to_tokens(int(token_id))
                try:
                    cached = bytes(_BYTE_DECODER[c] for c in text)
                except (KeyError, TypeError):
                    raise TokenMaskError(f"token id {token_id} ({text!r}) is not a byte-level symbol") from None
            self.cache[token_id] = cached
        return cached


def _token_table(tokenizer: Any) -> _TokenBytes:
    try:
        table = _BYTES_CACHE.get(tokenizer)
        if table is None:
            table = _BYTES_CACHE[tokenizer] = _TokenBytes(tokenizer)
        return table
    except TypeError:  # a tokenizer that cannot be weakly referenced: build the table each call
        return _TokenBytes(tokenizer)


def token_spans(token_ids: Sequence[int], tokenizer: Any, completion: str) -> tuple[np.ndarray, str]:
    """[start, end) spans of each sampled id in ``completion`` (the text the ids spell), in bytes or in
    characters; the second value says which (``"bytes"`` or ``"chars"``).

    Ids may spell more than ``completion`` (the sampler cut the text at a stop sequence); spans past its end
    are harmless. Ids that spell something else raise `TokenMaskError`."""
    ids = [int(t) for t in token_ids]
    table = _token_table(tokenizer)
    if table.kind == "other":
        return _spans_from_offsets(ids, tokenizer, completion), "chars"
    pieces = [table(t) for t in ids]
    spelled = b"".join(pieces)
    if spelled.startswith(completion.encode("utf-8")):
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        ends = np.cumsum(lengths)
        return np.stack([ends - lengths, ends], axis=1).reshape(-1, 2), "bytes"
    # Not valid UTF-8 (an untrained model emits stray high bytes): decoding replaced (byte-level BPE) or dropped
    # (ByT5) the bad bytes, so the text is matched character by character instead.
    for errors in ("replace", "ignore"):
        spans, text = _char_spans(pieces, errors)
        if text.startswith(completion):
            return spans, "chars"
    raise TokenMaskError(
        f"the {len(ids)} sampled ids spell {spelled[:60]!r}..., not the program text {completion[:60]!r}... "
        "(decode with skip_special_tokens=True and clean_up_tokenization_spaces=False)"
    )


def _char_spans(pieces: list[bytes], errors: str) -> tuple[np.ndarray, str]:
    """Character spans of byte pieces decoded as one UTF-8 stream: a character whose bytes straddle tokens
    belongs to every token holding some of them. One incremental decoder pass: no prefix is decoded twice."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    spans, parts, emitted = [], [], 0
    for piece in pieces:
        start = emitted  # a character left incomplete by earlier tokens is completed at this index
        text = decoder.decode(piece)
        parts.append(text)
        emitted += len(text)
        pending = 1 if decoder.getstate()[0] else 0  # this token's last bytes start a character not yet out
        spans.append((start, emitted + pending) if piece else (emitted, emitted))
    parts.append(decoder.decode(b"", final=True))
    return np.array(spans, dtype=np.int64).reshape(-1, 2), "".join(parts)


def _spans_from_offsets(ids: list[int], tokenizer: Any, completion: str) -> np.ndarray:
    if not getattr(tokenizer, "is_fast", False):
        raise TokenMaskError(f"{type(tokenizer).__name__} is neither byte-level nor fast: no token offsets")
    encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    content = [t for t in ids if t not in special]
    if list(encoded["input_ids"]) != content:
        raise TokenMaskError(
            "the sampled ids are not the tokenizer's own segmentation of the program, and this tokenizer is not "
            "byte-level, so its offsets cannot place them"
        )
    offsets = iter(encoded["offset_mapping"])
    spans = [(0, 0) if t in special else tuple(next(offsets)) for t in ids]
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


# ------------------------------------------------------------------------------------------------ the masks


def line_token_mask(
    token_ids: Sequence[int], tokenizer: Any, program: str, line: int, completion_start: int = 0
) -> np.ndarray:
    """1.0 on the sampled tokens overlapping ``line`` of ``program``, 0.0 elsewhere.

    ``program`` is the executed text and ``completion_start`` the number of its leading characters (the
    prompt's ``program_prefix``) that the ids do not cover."""
    mask = np.zeros(len(token_ids), dtype=np.float32)
    start, end = line_span(program, line)
    start = max(start, completion_start)
    if end <= start:  # the line lies in the prefix (or is empty): no sampled token wrote it
        return mask
    completion = program[completion_start:]
    spans, unit = token_spans(token_ids, tokenizer, completion)
    if unit == "bytes":
        lo = len(completion[: start - completion_start].encode("utf-8"))
        hi = lo + len(program[start:end].encode("utf-8"))
    else:
        lo, hi = start - completion_start, end - completion_start
    if len(spans):
        overlaps = (spans[:, 0] < hi) & (spans[:, 1] > lo) & (spans[:, 1] > spans[:, 0])
        mask[overlaps] = 1.0
    return mask


def blame_mask(
    category: str,
    line: int | None,
    token_ids: Sequence[int],
    tokenizer: Any,
    program: str,
    completion_start: int = 0,
) -> np.ndarray:
    """The token mask of a fine-grained verdict: the blamed line's tokens for ``line``, every token for
    ``whole``, none for ``ignore``. ``token_ids`` are the program's sampled ids without padding."""
    if category == "whole":
        return np.ones(len(token_ids), dtype=np.float32)
    if category == "ignore":
        return np.zeros(len(token_ids), dtype=np.float32)
    if category != "line" or line is None:
        raise ValueError(f"category must be 'line' (with a line), 'whole' or 'ignore'; got {category!r}, {line!r}")
    return line_token_mask(token_ids, tokenizer, program, line, completion_start)
