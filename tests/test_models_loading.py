"""Models: device choices, tiny presets built/saved/loaded through the hub-or-path loader, generation, and the
fast one-sentence failure for names that cannot be loaded."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from models import ModelLoadError, build_tiny, load_policy
from models import device as dev
from models.tiny import BPE_VOCAB_SIZE, parse_tiny_name, train_bpe_tokenizer

PROGRAM = 'def add_17(xs):\n    """Add 17."""\n    return [x + 17 for x in xs if x != 2048]\n'
SMALL_CORPUS = [PROGRAM * 3, "def f(a, b):\n    return a * b - 9\n" * 20, "for i in range(10):\n    print(i)\n" * 20]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    # Tests never contact the hub, and tiny presets named by `tiny:` go to a private cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RLTF_CACHE", str(tmp_path_factory.getbasetemp() / "rltf-cache"))
    monkeypatch.delenv("RLTF_DEVICE", raising=False)
    monkeypatch.delenv("RLTF_DTYPE", raising=False)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # 2 shared cores: torch's second intra-op thread spins against other processes and makes a 0.2 s
    # generation take several seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    start = time.monotonic()
    # The default corpus (generated problems or stdlib source) for one BPE preset; a small one for the other.
    gpt2 = build_tiny("tiny-gpt2", root / "gpt2", seed=0)
    assert time.monotonic() - start < 20.0  # a config naming tiny:gpt2 builds it on first use: keep that quick
    return {
        "tiny-t5": build_tiny("tiny-t5", root / "t5", seed=0),
        "tiny-gpt2": gpt2,
        "tiny-codegen": build_tiny("tiny-codegen", root / "codegen", corpus=SMALL_CORPUS, seed=0),
    }


# ------------------------------------------------------------------------------------------------ device


def test_device_defaults_and_overrides(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dev.torch_device() == expected
    assert dev.dist_backend() == ("nccl" if expected == "cuda" else "gloo")
    monkeypatch.setenv("RLTF_DEVICE", "cpu")
    assert dev.torch_device() == "cpu"
    assert dev.dist_backend() == "gloo"
    assert dev.default_dtype() == torch.float32
    assert dev.num_gpus() == 0
    monkeypatch.setenv("RLTF_DTYPE", "bf16")
    assert dev.default_dtype() == torch.bfloat16
    assert dev.resolve_dtype("fp16") == torch.float16
    with pytest.raises(dev.DeviceError, match="int8"):
        dev.resolve_dtype("int8")
    monkeypatch.setenv("RLTF_DEVICE", "tpu")
    with pytest.raises(dev.DeviceError, match="RLTF_DEVICE='tpu'"):
        dev.torch_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("RLTF_DEVICE", "cuda")
        with pytest.raises(dev.DeviceError, match="no CUDA device"):
            dev.torch_device()


# ------------------------------------------------------------------------------------------- tokenizers


def test_bpe_tokenizer_splits_digits_and_round_trips(tiny_dirs):
    policy = load_policy(str(tiny_dirs["tiny-gpt2"]))
    tok = policy.tokenizer
    assert len(tok) == BPE_VOCAB_SIZE
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    ids = tok("x = 90210 + 7", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["9", "0", "2", "1", "0", "7"]
    text = PROGRAM + "s = 'é ☃ \t tab'\n"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_bpe_training_is_deterministic_and_follows_the_corpus():
    a = train_bpe_tokenizer(SMALL_CORPUS)
    b = train_bpe_tokenizer(SMALL_CORPUS)
    assert a.get_vocab() == b.get_vocab()
    # Merges learnt from the corpus make its frequent words single tokens.
    assert len(a(" return", add_special_tokens=False)["input_ids"]) == 1
    assert len(a(" zebra", add_special_tokens=False)["input_ids"]) > 1


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("preset,seq2seq,model_type", [
    ("tiny-t5", True, "t5"), ("tiny-gpt2", False, "gpt2"), ("tiny-codegen", False, "codegen"),
])
def test_round_trip_build_save_load_generate(tiny_dirs, preset, seq2seq, model_type):
    policy = load_policy(str(tiny_dirs[preset]))
    assert policy.is_seq2seq is seq2seq and policy.kind == ("seq2seq" if seq2seq else "causal")
    assert policy.model.config.model_type == model_type
    assert str(policy.device) == "cpu" and next(policy.model.parameters()).dtype == torch.float32
    tok, model = policy.tokenizer, policy.model
    prompts = ["def add(a, b):\n", '"""Return the list xs reversed."""\ndef rev(xs):\n']
    batch = tok(prompts, return_tensors="pt", padding=True)
    n_new = 12
    greedy = model.generate(**batch, do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new)
    again = model.generate(**batch, do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new)
    assert torch.equal(greedy, again)
    torch.manual_seed(0)
    sampled = model.generate(**batch, do_sample=True, top_p=0.95, temperature=1.0, max_new_tokens=n_new,
                             min_new_tokens=n_new, num_return_sequences=3)
    if seq2seq:  # decoder outputs: start token + new tokens
        assert greedy.shape == (2, n_new + 1) and sampled.shape == (6, n_new + 1)
        new_greedy, new_sampled = greedy[:, 1:], sampled[:, 1:]
    else:  # causal outputs: the left-padded prompt, then the new tokens
        width = batch["input_ids"].shape[1]
        assert greedy.shape == (2, width + n_new) and sampled.shape == (6, width + n_new)
        assert torch.equal(greedy[:, :width], batch["input_ids"])
        new_greedy, new_sampled = greedy[:, width:], sampled[:, width:]
    assert int(new_sampled.max()) < len(tok) and int(new_sampled.min()) >= 0
    # An untrained model's random samples differ from one another.
    assert len({tuple(row.tolist()) for row in new_sampled}) > 1
    texts = tok.batch_decode(new_greedy, skip_special_tokens=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # Decoding is lossless for these tokenizers: re-encoding a decoded sample's text gives the text back.
    for text in texts:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-gpt2"])
def test_hf_backend_generates_with_logprobs_and_takes_new_weights(tiny_dirs, preset):
    """The generation backend interface on today's HF path: programs with one behaviour log-prob per token, and
    `load_weights` changes what the backend runs (the published weights of another seed)."""
    from models import load_backend

    backend = load_backend("hf", str(tiny_dirs[preset]))
    prompts = [backend.encode_prompt("def add(a, b):\n", 32), backend.encode_prompt("def rev(xs):\n", 32)]
    torch.manual_seed(0)
    sampled = backend.generate(prompts, num_samples=3, max_new_tokens=8, temperature=1.0, top_p=0.95)
    assert [p.prompt_index for p in sampled] == [0, 0, 0, 1, 1, 1]
    assert all(len(p.token_ids) == len(p.logprobs) > 0 and max(p.logprobs) <= 0.0 for p in sampled)
    before = backend.generate(prompts, num_samples=1, max_new_tokens=8, greedy=True)
    other = load_policy(str(build_tiny(preset, tiny_dirs[preset].parent / f"{preset}-seed7", seed=7))).model
    backend.load_weights(other.state_dict())
    after = backend.generate(prompts, num_samples=1, max_new_tokens=8, greedy=True)
    assert [p.logprobs for p in after] != [p.logprobs for p in before]
    with pytest.raises(ValueError, match="unknown generation backend 'vllm'"):
        load_backend("vllm", str(tiny_dirs[preset]))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_dirs):
    first = load_policy(str(tiny_dirs["tiny-t5"])).model.state_dict()
    rebuilt = load_policy(str(build_tiny("t5", tmp_path / "same", seed=0))).model.state_dict()
    other = load_policy(str(build_tiny("t5", tmp_path / "other", seed=1))).model.state_dict()
    name = "shared.weight"
    assert torch.equal(first[name], rebuilt[name])
    assert not torch.equal(first[name], other[name])


def test_tiny_name_builds_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RLTF_CACHE", str(tmp_path / "cache"))
    assert parse_tiny_name("tiny:t5:3") == ("tiny-t5", 3)
    policy = load_policy("tiny:t5:3")
    assert policy.is_seq2seq and policy.name_or_path == "tiny:t5:3"
    built = list((tmp_path / "cache" / "tiny").iterdir())
    assert [p.name.split("-bytes")[0] for p in built] == ["tiny-t5-seed3"]
    stamp = (built[0] / "config.json").stat().st_mtime_ns
    load_policy("tiny:t5:3")
    assert (built[0] / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert list((tmp_path / "cache" / "tiny").iterdir()) == built  # no temporary directories left behind


# ------------------------------------------------------------------------------------------------ errors


def _assert_one_sentence(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text and text.count(". ") == 0, text
    for needle in needles:
        assert needle in text, text
    # No chained stack of library exceptions printed under it.
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_unknown_hub_name_fails_fast_with_one_sentence():
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_policy("Salesforce/no-such-model-xyz")
    assert time.monotonic() - start < 5.0
    _assert_one_sentence(info.value, "'Salesforce/no-such-model-xyz'", "HF_HUB_OFFLINE=1", "local directory")


def test_bad_paths_kinds_and_presets_are_named(tmp_path, tiny_dirs):
    with pytest.raises(ModelLoadError) as info:
        load_policy(str(tmp_path / "missing" / "model"))
    _assert_one_sentence(info.value, "missing/model", "not an existing directory")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_policy(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="unknown tiny preset 'llama'"):
        load_policy("tiny:llama")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_policy(str(tiny_dirs["tiny-t5"]), kind="encoder")
    with pytest.raises(ModelLoadError, match="cannot be loaded as a seq2seq LM"):
        load_policy(str(tiny_dirs["tiny-gpt2"]), kind="seq2seq")


def test_models_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, models; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    """Online mode with a hub that never answers (a 127.0.0.1 listener this test opens and never serves):
    one short probe, then the one-sentence error, instead of huggingface_hub's retries."""
    import socket

    from huggingface_hub import constants
    from transformers import AutoConfig  # noqa: F401 - a first import costs seconds; it is not what is timed

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(ModelLoadError) as info:
            load_policy("Salesforce/codegen-350M-mono")
        assert time.monotonic() - start < 5.0
        _assert_one_sentence(info.value, "'Salesforce/codegen-350M-mono'", "the hub did not answer")
    finally:
        listener.close()
