"""Tiny model presets built from a config on the spot, for tests and the offline default (no hub here).

Each preset is a real Hugging Face model + tokenizer saved with ``save_pretrained``, so it is loaded back
through exactly the path that loads ``Salesforce/codet5-*`` or ``Salesforce/codegen-*`` (`models.loading`):

- ``tiny-t5``: a 2-layer T5 with ``ByT5Tokenizer`` (bytes are tokens: nothing to download or train).
- ``tiny-gpt2``: a ~3.4M-parameter GPT-2 with a 384-token byte-level BPE trained here with ``tokenizers``;
  digits are split one per token so that constants in programs are spelled digit by digit.
- ``tiny-codegen``: a ~0.5M-parameter CodeGen with the same kind of BPE (exercises the CodeGen code path).

A config names a preset as ``tiny:<family>`` or ``tiny:<family>:<seed>`` (``tiny:gpt2``, ``tiny:t5:3``);
`ensure_tiny` builds it on first use into ``$RLTF_CACHE`` (default ``~/.cache/rltf``), keyed by preset, seed and
the corpus its tokenizer was trained on.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CACHE_ENV = "RLTF_CACHE"
BPE_VOCAB_SIZE = 384
EOS_TOKEN = "<|endoftext|>"
# Bump when a preset's architecture or tokenizer recipe changes, so stale cache entries are not reused.
PRESET_VERSION = "v1"
# The stdlib fallback corpus is capped: BPE on a few MB takes about a second, and more text changes little.
_STDLIB_CORPUS_CHARS = 3_000_000


def _t5_config() -> Any:
    from transformers import T5Config

    # ByT5's vocabulary: 3 specials (pad=0, eos=1, unk=2) + 256 bytes + 125 sentinel ids = 384.
    return T5Config(
        vocab_size=384, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="relu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )


def _gpt2_config() -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=BPE_VOCAB_SIZE, n_positions=512, n_embd=256, n_layer=4, n_head=4,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )


def _codegen_config() -> Any:
    from transformers import CodeGenConfig

    return CodeGenConfig(
        vocab_size=BPE_VOCAB_SIZE, n_positions=512, n_ctx=512, n_embd=128, n_layer=2, n_head=4, rotary_dim=16,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )


# preset -> (config factory, model class name in transformers, tokenizer kind)
PRESETS: dict[str, tuple[Callable[[], Any], str, str]] = {
    "tiny-t5": (_t5_config, "T5ForConditionalGeneration", "byt5"),
    "tiny-gpt2": (_gpt2_config, "GPT2LMHeadModel", "bpe"),
    "tiny-codegen": (_codegen_config, "CodeGenForCausalLM", "bpe"),
}


class TinyPresetError(ValueError):
    """An unknown tiny preset name."""


def preset_name(name: str) -> str:
    """Normalise ``t5`` / ``tiny-t5`` / ``tiny_t5`` to the preset key ``tiny-t5``."""
    key = name.strip().lower().replace("_", "-")
    if not key.startswith("tiny-"):
        key = "tiny-" + key
    if key not in PRESETS:
        raise TinyPresetError(f"unknown tiny preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return key


def parse_tiny_name(name: str) -> tuple[str, int]:
    """``"tiny:gpt2"`` -> (``"tiny-gpt2"``, 0); ``"tiny:t5:3"`` -> (``"tiny-t5"``, 3)."""
    if not name.startswith("tiny:"):
        raise TinyPresetError(f"{name!r} is not a tiny preset name (expected 'tiny:<family>[:<seed>]')")
    parts = name[len("tiny:"):].split(":")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
        raise TinyPresetError(f"{name!r}: expected 'tiny:<family>' or 'tiny:<family>:<integer seed>'")
    return preset_name(parts[0]), int(parts[1]) if len(parts) == 2 else 0


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rltf").expanduser()


# ---------------------------------------------------------------------------------------------- corpora


def synthetic_corpus(seed: int = 0) -> list[str]:
    """Prompts and supervised reference programs of the generated problem family (`tasks.synthetic`).

    References of ``tests-only`` templates are left out: the tokenizer should not learn merges from programs
    that training is never meant to see."""
    from tasks.synthetic import synthetic_family

    texts = []
    for problem in synthetic_family(seed=seed):
        texts.append(problem.prompt)
        if problem.meta.get("supervised", True) and problem.split == "train":
            # Solutions are whole programs (prefix included); the prompt is already in the corpus above.
            texts.extend(s[len(problem.program_prefix):] for s in problem.solutions)
    return texts


def stdlib_corpus(max_chars: int = _STDLIB_CORPUS_CHARS) -> list[str]:
    """Python source of the standard library (always present offline), up to ``max_chars`` characters."""
    texts, total = [], 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return texts


def default_corpus_tag() -> str:
    """Which default corpus this installation has: ``"synthetic"`` when `tasks.synthetic` provides the generated
    family, else ``"stdlib"``. Cheap (an import, no generation), since it is part of every tiny cache key."""
    try:
        from tasks.synthetic import synthetic_family
    except ImportError:
        return "stdlib"
    return "synthetic" if callable(synthetic_family) else "stdlib"


@functools.lru_cache(maxsize=1)
def default_corpus() -> tuple[str, list[str]]:
    """(tag, texts): the generated problem family when `tasks.synthetic` is importable, else the standard
    library's Python source. Cached per process; callers must not mutate the list."""
    tag = default_corpus_tag()
    return tag, synthetic_corpus() if tag == "synthetic" else stdlib_corpus()


# ------------------------------------------------------------------------------------------- tokenizers


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = BPE_VOCAB_SIZE) -> Any:
    """A byte-level BPE (GPT-2 style) trained on ``corpus``, digits split one per token, as a
    ``PreTrainedTokenizerFast`` whose eos and pad are ``<|endoftext|>`` (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets must cover every character (spaces included) for the reward token masks.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        padding_side="left", clean_up_tokenization_spaces=False,
    )


def _byt5_tokenizer() -> Any:
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


# ---------------------------------------------------------------------------------------------- building


def build_tiny(preset: str, out_dir: str | os.PathLike, corpus: Iterable[str] | None = None, seed: int = 0) -> Path:
    """Build preset ``preset`` with weights initialised from ``seed``, save model and tokenizer to ``out_dir``
    with ``save_pretrained``, and return the directory. ``corpus`` trains the BPE presets' tokenizer
    (default: `default_corpus`); it is ignored by ``tiny-t5``."""
    import torch
    import transformers

    key = preset_name(preset)
    make_config, model_class, tokenizer_kind = PRESETS[key]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if tokenizer_kind == "byt5":
        tokenizer = _byt5_tokenizer()
    else:
        tokenizer = train_bpe_tokenizer(default_corpus()[1] if corpus is None else corpus)
        if tokenizer.eos_token_id != 0:  # the configs above hard-code id 0 for eos/pad/bos
            raise RuntimeError(f"BPE tokenizer put {EOS_TOKEN} at id {tokenizer.eos_token_id}, expected 0")

    config = make_config()
    # A small corpus can yield fewer than BPE_VOCAB_SIZE tokens; the model must never emit ids the tokenizer lacks.
    config.vocab_size = len(tokenizer)
    # fork_rng: building a model must not move the caller's global random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config)
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    if config.is_encoder_decoder:
        generation.decoder_start_token_id = config.decoder_start_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_cache_dir(preset: str, seed: int = 0) -> Path:
    """Where `ensure_tiny` keeps a preset; the corpus tag is part of the key because it shapes the tokenizer."""
    key = preset_name(preset)
    corpus_tag = "bytes" if PRESETS[key][2] == "byt5" else default_corpus_tag()
    return cache_root() / "tiny" / f"{key}-seed{seed}-{corpus_tag}-{PRESET_VERSION}"


def ensure_tiny(name: str) -> Path:
    """The directory of tiny preset ``name`` (``tiny:gpt2``, ``tiny:t5:1``, ...), built on first use.

    Safe when several processes (sampler actors) ask at once: each builds into its own temporary directory and
    renames it into place; the build is deterministic, so whichever rename wins is the same model."""
    preset, seed = parse_tiny_name(name)
    target = tiny_cache_dir(preset, seed)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_tiny(preset, tmp, seed=seed)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
