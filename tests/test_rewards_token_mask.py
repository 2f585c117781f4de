"""Blamed line -> token mask, for each tokenizer family: the masked tokens, decoded, are exactly the blamed
line (plus only the whitespace a token carries across the line break), found by line number even when the same
text occurs twice, for sampled ids that are not the tokenizer's own segmentation, and for causal completions
after a program prefix."""
from __future__ import annotations

import numpy as np
import pytest

from rewards.token_mask import TokenMaskError, blame_mask, line_span, line_token_mask
from sandbox.verdict import ProgramError, Verdict

pytest.importorskip("transformers")

# Line 3 and line 6 hold the same text; line 4 has non-ASCII characters (multi-byte in UTF-8).
PROGRAM = (
    "def scale(xs, k):\n"
    "    out = []\n"
    "    total = xs[0] * 17\n"
    "    label = 'héllo ☃'\n"
    "    for x in xs:\n"
    "    total = xs[0] * 17\n"
    "        out.append(x * k + 3)\n"
    "    return out, total, label\n"
)
CORPUS = [PROGRAM * 5, "def f(a, b):\n    return a * b - 9\n" * 30, "for i in range(10):\n    print(i)\n" * 30]


@pytest.fixture(scope="module")
def byt5():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


@pytest.fixture(scope="module")
def bpe():
    from models.tiny import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def bpe_with_added_whitespace():
    """Like CodeGen's tokenizer: runs of spaces are added (non-special) tokens with literal text."""
    from models.tiny import train_bpe_tokenizer

    tok = train_bpe_tokenizer(CORPUS)
    tok.add_tokens(["        ", "    "])
    return tok


@pytest.fixture(scope="module")
def wordpiece():
    """A fast tokenizer that is not byte-level (offsets come from the tokenizer itself)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]", "[PAD]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def masked_run(mask: np.ndarray) -> tuple[int, int]:
    """(first, last + 1) of the masked tokens, asserting they are one contiguous run."""
    where = np.flatnonzero(mask)
    assert len(where) > 0, "nothing masked"
    assert (np.diff(where) == 1).all(), f"masked tokens are not contiguous: {where.tolist()}"
    return int(where[0]), int(where[-1]) + 1


def assert_mask_is_line(tok, ids, mask, program, line, completion_start=0):
    """Decode before / masked / after: the masked text is the line, and it sits at the line's position."""
    first, stop = masked_run(mask)
    decode = lambda part: tok.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    before, masked, after = decode(ids[:first]), decode(ids[first:stop]), decode(ids[stop:])
    start, end = line_span(program, line)
    text = program[start:end]
    assert masked.strip() == text.strip(), (masked, text)
    # Position: what precedes the run ends where the line starts (up to whitespace the first token carries).
    lead = completion_start + len(before)
    assert lead <= start and program[lead:start].strip() == ""
    assert before + masked + after == program[completion_start:]
    # Nothing of the line leaks outside the run: the neighbours hold no non-space character of the line.
    assert program[completion_start + len(before) + len(masked): end].strip() == ""



@pytest.fixture(params=["byt5", "bpe", "bpe_with_added_whitespace"])
def byte_level(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("line", range(1, 9))
def test_each_line_of_a_program_masks_exactly_its_tokens(byte_level, line):
    ids = byte_level(PROGRAM, add_special_tokens=False)["input_ids"] + [byte_level.eos_token_id]
    mask = line_token_mask(ids, byte_level, PROGRAM, line)
    assert mask.shape == (len(ids),) and mask.dtype == np.float32 and mask[-1] == 0  # EOS covers no text
    assert_mask_is_line(byte_level, ids, mask, PROGRAM, line)


def test_duplicate_line_text_is_located_by_number(byte_level):
    ids = byte_level(PROGRAM, add_special_tokens=False)["input_ids"]
    third = line_token_mask(ids, byte_level, PROGRAM, 3)
    sixth = line_token_mask(ids, byte_level, PROGRAM, 6)
    assert (third * sixth).sum() == 0  # disjoint: the second occurrence is not the first
    assert np.flatnonzero(sixth)[0] > np.flatnonzero(third)[-1]
    assert_mask_is_line(byte_level, ids, sixth, PROGRAM, 6)


def test_sampled_ids_need_not_be_the_tokenizers_own_segmentation(bpe):
    # A model may spell each character as its own token; the mask follows the sampled ids, not a re-tokenization.
    ids = [i for ch in PROGRAM for i in bpe(ch, add_special_tokens=False)["input_ids"]]
    assert ids != bpe(PROGRAM, add_special_tokens=False)["input_ids"]
    mask = line_token_mask(ids, bpe, PROGRAM, 4)
    line = "    label = 'héllo ☃'"
    assert int(mask.sum()) == sum(len(bpe(ch, add_special_tokens=False)["input_ids"]) for ch in line)
    assert_mask_is_line(bpe, ids, mask, PROGRAM, 4)


def test_causal_completion_after_a_prefix(bpe, byt5):
    prefix = "def scale(xs, k):\n    out = []\n"  # e.g. HumanEval's prompt: executed, but not sampled
    completion = PROGRAM[len(prefix):]
    for tok in (bpe, byt5):
        ids = tok(completion, add_special_tokens=False)["input_ids"]
        assert line_token_mask(ids, tok, PROGRAM, 2, completion_start=len(prefix)).sum() == 0  # in the prefix
        assert blame_mask("line", 1, ids, tok, PROGRAM, completion_start=len(prefix)).sum() == 0
        for line in (3, 6, 8):
            mask = line_token_mask(ids, tok, PROGRAM, line, completion_start=len(prefix))
            assert_mask_is_line(tok, ids, mask, PROGRAM, line, completion_start=len(prefix))


def test_whole_and_ignore_masks(bpe):
    ids = bpe(PROGRAM, add_special_tokens=False)["input_ids"]
    assert blame_mask("whole", None, ids, bpe, PROGRAM).tolist() == [1.0] * len(ids)
    assert blame_mask("ignore", None, ids, bpe, PROGRAM).sum() == 0
    with pytest.raises(ValueError, match="category must be"):
        blame_mask("line", None, ids, bpe, PROGRAM)


def test_ids_that_spell_other_text_are_refused(bpe, byt5):
    for tok in (bpe, byt5):
        ids = tok("def other():\n    pass\n", add_special_tokens=False)["input_ids"]
        with pytest.raises(TokenMaskError, match="spell"):
            line_token_mask(ids, tok, PROGRAM, 2)
    # Ids that go on past the program text (a sampler cut the text at a stop sequence) are fine.
    ids = bpe(PROGRAM + "\n\nprint(scale([1], 2))\n", add_special_tokens=False)["input_ids"]
    assert_mask_is_line(bpe, ids, line_token_mask(ids, bpe, PROGRAM, 8), PROGRAM + "\n\nprint(scale([1], 2))\n", 8)


def test_non_byte_level_fast_tokenizer_uses_its_offsets(wordpiece):
    program = "def f(a, b):\n    return a * b - 9\n    return a * b - 9\n"
    ids = wordpiece(program, add_special_tokens=False)["input_ids"]
    mask = line_token_mask(ids, wordpiece, program, 3)
    first, stop = masked_run(mask)
    tokens = wordpiece.convert_ids_to_tokens(ids)
    assert tokens[first:stop] == wordpiece.tokenize("return a * b - 9") and first > len(tokens) // 2
    # A segmentation that is not the tokenizer's own cannot be placed by offsets: a clear refusal.
    with pytest.raises(TokenMaskError, match="not byte-level"):
        line_token_mask(list(reversed(ids)), wordpiece, program, 2)


def test_line_span_counts_newlines_only():
    program = "a = 1\n\nb = '\x0c'\nc = 3"
    assert [program[slice(*line_span(program, n))] for n in (1, 2, 3, 4)] == ["a = 1", "", "b = '\x0c'", "c = 3"]
    with pytest.raises(ValueError, match="fewer than 5 lines"):
        line_span(program, 5)


def test_blame_from_a_verdict_reaches_the_right_tokens(byt5):
    from rewards import score

    v = Verdict("p", "runtime_error", tests_run=1,
                error=ProgramError("IndexError", "list index out of range", 6, [[6, "scale"]]))
    ids = byt5(PROGRAM)["input_ids"]
    scored = score(v, PROGRAM, ids, byt5)
    assert_mask_is_line(byt5, ids, scored.mask, PROGRAM, 6)


def test_stray_bytes_from_an_untrained_model(bpe, byt5):
    """Ids whose bytes are not valid UTF-8: decoding replaces (BPE) or drops (ByT5) them; the mask still
    follows the decoded text's lines."""
    lone = 0xC3  # a UTF-8 lead byte followed by ASCII: invalid
    bpe_ids = (bpe("x = 1\n", add_special_tokens=False)["input_ids"]
               + bpe.convert_tokens_to_ids(["Ã"]) + bpe("y = 2\nz = 3\n", add_special_tokens=False)["input_ids"])
    byt5_ids = (byt5("x = 1\n", add_special_tokens=False)["input_ids"] + [lone + 3]
                + byt5("y = 2\nz = 3\n", add_special_tokens=False)["input_ids"])
    cases = ((bpe, bpe_ids, "x = 1\n\ufffdy = 2\nz = 3\n"), (byt5, byt5_ids, "x = 1\ny = 2\nz = 3\n"))
    for tok, ids, expected in cases:
        text = tok.decode(ids, skip_special_tokens=True)
        assert text == expected
        for line in (1, 2, 3):
            assert_mask_is_line(tok, ids, line_token_mask(ids, tok, text, line), text, line)
