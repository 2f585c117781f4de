"""Rewards of real programs run in the real sandbox: MBPP (and HumanEval) reference solutions mutated to fail in
known ways get the outcome reward, fine-grained category and blamed line RLTF-SPEC.md prescribes, the adaptive
reward follows the measured pass ratio, and the blamed line's tokens are the masked ones for both tokenizer
families."""
from __future__ import annotations

import numpy as np
import pytest

from configs.schema import RewardConfig, SandboxConfig
from rewards import score, verdict_rewards
from rewards.token_mask import line_span

sandbox = pytest.importorskip("sandbox")
pytest.importorskip("transformers")

# Short limits: the infinite loop below should cost about a second, not the default four.
LIMITS = SandboxConfig(test_timeout_s=1.0, program_timeout_s=3.0, memory_mb=512)
PROBLEMS = ("mbpp/1", "mbpp/3", "mbpp/17")  # tab-indented, four-space, one-line body


@pytest.fixture(scope="module")
def mbpp(shared_data):
    from tasks import load_problems

    return {p.problem_id: p for p in load_problems(str(shared_data / "mbpp" / "mbpp.jsonl"))}


@pytest.fixture(scope="module")
def tokenizers(mbpp):
    from transformers import ByT5Tokenizer

    from models.tiny import train_bpe_tokenizer

    corpus = [p.solutions[0] for p in list(mbpp.values())[:300]]
    return {"byt5": ByT5Tokenizer(), "bpe": train_bpe_tokenizer(corpus)}


def run(problem, program):
    verdict = sandbox.run_program(problem, program, limits=LIMITS)
    assert verdict.outcome != "infra_error", verdict
    return verdict


def body_lines(program: str) -> tuple[int, int]:
    """First and last line at the function body's own indentation (both always execute)."""
    lines = program.split("\n")
    first = next(i for i, text in enumerate(lines) if text[:1] in (" ", "\t") and text.strip())
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    level = [i for i, text in enumerate(lines)
             if text.startswith(indent) and text.strip() and not text[len(indent):][:1].isspace()]
    return level[0] + 1, level[-1] + 1


def insert_line(program: str, k: int, statement: str, indent: str | None = None) -> str:
    """``statement`` as the new line ``k``, indented like the line it pushes down (unless ``indent`` is given)."""
    lines = program.rstrip("\n").split("\n")
    old = lines[k - 1]
    lines.insert(k - 1, (old[: len(old) - len(old.lstrip())] if indent is None else indent) + statement)
    return "\n".join(lines) + "\n"


def assert_blamed_tokens(tokenizers, verdict, program, line, completion_start=0):
    """For both tokenizer families, the scored mask decodes to the blamed line."""
    for name, tok in tokenizers.items():
        ids = tok(program[completion_start:], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        scored = score(verdict, program, ids, tok, RewardConfig(), completion_start=completion_start)
        assert scored.mask_error == "", (name, scored.mask_error)
        masked = [i for i, m in zip(ids, scored.mask) if m]
        start, end = line_span(program, line)
        decoded = tok.decode(masked, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert decoded.strip() == program[start:end].strip(), (name, decoded)
        # The penalty sits on exactly those tokens.
        returns = scored.returns(0.0)
        assert np.allclose(returns[scored.mask == 1], scored.reward - 0.3)
        assert np.allclose(returns[scored.mask == 0], scored.reward)


# (statement inserted at line k, outcome, error type)
LOCATED_MUTATIONS = [
    ("x = = 1", "compile_error", "SyntaxError"),
    ("[][0]", "runtime_error", "IndexError"),
    ("undefined_name_xyz + 1", "runtime_error", "NameError"),
    ("len(5)", "runtime_error", "TypeError"),
    ("1 / 0", "runtime_error", "ZeroDivisionError"),
    ("import no_such_module_xyz", "runtime_error", "ModuleNotFoundError"),
]


@pytest.mark.parametrize("problem_id", PROBLEMS)
@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("statement,outcome,error_type", LOCATED_MUTATIONS)
def test_error_on_line_k_blames_line_k(mbpp, tokenizers, problem_id, where, statement, outcome, error_type):
    problem = mbpp[problem_id]
    reference = problem.solutions[0]
    first, last = body_lines(reference)
    k = first if where == "first" else last
    program = insert_line(reference, k, statement)
    verdict = run(problem, program)
    assert (verdict.outcome, verdict.error.type) == (outcome, error_type), verdict
    fields = verdict_rewards(verdict, program)
    expected_reward = -1.0 if outcome == "compile_error" else -0.6
    assert fields == {"reward": expected_reward, "adaptive_reward": expected_reward,
                      "fine_category": "line", "blamed_line": k}
    assert_blamed_tokens(tokenizers, verdict, program, k)


def test_reference_solutions_pass_and_are_not_blamed(mbpp):
    for problem_id in PROBLEMS:
        problem = mbpp[problem_id]
        verdict = run(problem, problem.solutions[0])
        assert verdict.outcome == "passed"
        assert verdict_rewards(verdict, problem.solutions[0]) == {
            "reward": 1.0, "adaptive_reward": 1.0, "fine_category": "ignore", "blamed_line": None}


def test_indentation_errors(mbpp, tokenizers):
    problem = mbpp["mbpp/3"]
    reference = problem.solutions[0]
    first, _ = body_lines(reference)
    # An unexpected indent is a located syntax error ...
    program = insert_line(reference, first + 1, "y = 0", indent=" " * 8)
    verdict = run(problem, program)
    assert (verdict.outcome, verdict.error.type) == ("compile_error", "IndentationError")
    assert verdict_rewards(verdict, program)["blamed_line"] == first + 1
    assert_blamed_tokens(tokenizers, verdict, program, first + 1)
    # ... an unindent that matches no outer level is not (RLTF-SPEC.md: ignore), nor is a tab/space mix.
    for indent in ("  ", "\t"):
        program = insert_line(reference, first + 2, "y = 0", indent=indent)
        verdict = run(problem, program)
        assert verdict.outcome == "compile_error" and verdict.error.type in ("IndentationError", "TabError")
        fields = verdict_rewards(verdict, program)
        assert (fields["reward"], fields["fine_category"], fields["blamed_line"]) == (-1.0, "ignore", None)


def test_missing_module_imported_at_module_level(mbpp, tokenizers):
    problem = mbpp["mbpp/3"]
    program = problem.solutions[0].replace("import math", "import math\nimport no_such_module_xyz as m")
    verdict = run(problem, program)
    assert verdict.error.type == "ModuleNotFoundError"
    assert verdict_rewards(verdict, program)["blamed_line"] == 2
    assert_blamed_tokens(tokenizers, verdict, program, 2)


@pytest.mark.parametrize("old,new", [
    ("range(2,", "range(3,"),  # wrong on 10 only: some tests pass
    ("return result", "return not result"),  # wrong on every test
    ("return result", "return n != 35"),  # right on 10 only
])
def test_wrong_answers_get_the_adaptive_reward_of_the_measured_pass_ratio(mbpp, old, new):
    problem = mbpp["mbpp/3"]
    program = problem.solutions[0].replace(old, new)
    assert program != problem.solutions[0]
    verdict = run(problem, program)
    assert verdict.outcome == "failed" and verdict.tests_run == len(problem.tests.cases)
    ratio = verdict.tests_passed / verdict.tests_run
    fields = verdict_rewards(verdict, program)
    assert fields["reward"] == -0.3 and fields["fine_category"] == "ignore"
    assert fields["adaptive_reward"] == pytest.approx(-0.3 + 1.3 * ratio)
    # The three mutations are built to pass 2, 0 and 1 of the 3 tests; the reward must track what ran.
    assert verdict.tests_passed == {"range(3,": 2, "return not result": 0, "return n != 35": 1}[new]


@pytest.mark.parametrize("statement,reason,error_type", [
    ("while True: pass", "timeout", None),
    ("return is_not_prime(n)", "", "RecursionError"),
    ("x = bytearray(10 ** 10)", "memory", "MemoryError"),
])
def test_resource_failures_blame_the_whole_program(mbpp, tokenizers, statement, reason, error_type):
    problem = mbpp["mbpp/3"]
    reference = problem.solutions[0]
    program = insert_line(reference, body_lines(reference)[0], statement)
    verdict = run(problem, program)
    assert verdict.outcome == "runtime_error" and verdict.reason == reason
    if error_type:
        assert verdict.error.type == error_type
    assert verdict_rewards(verdict, program) == {
        "reward": -0.6, "adaptive_reward": -0.6, "fine_category": "whole", "blamed_line": None}
    tok = tokenizers["bpe"]
    ids = tok(program, add_special_tokens=False)["input_ids"]
    assert score(verdict, program, ids, tok).mask.tolist() == [1.0] * len(ids)


def test_program_cut_off_mid_line_by_the_length_limit(mbpp):
    problem = mbpp["mbpp/3"]
    reference = problem.solutions[0]
    cut = reference[: reference.index("range(2,") + len("range(2,")]  # mid-line, inside an open parenthesis
    verdict = run(problem, cut)
    assert verdict.outcome == "compile_error" and verdict.error.line == cut.count("\n") + 1
    assert verdict_rewards(verdict, cut, truncated=True)["fine_category"] == "whole"
    # The same text, had the model stopped there by itself, is an ordinary located syntax error.
    assert verdict_rewards(verdict, cut, truncated=False)["blamed_line"] == cut.count("\n") + 1
    # A cut that leaves an earlier syntax error keeps blaming that line.
    broken = insert_line(reference, 3, "x = = 1")
    cut = broken[: broken.index("range(2,") + len("range(2,")]
    verdict = run(problem, cut)
    assert verdict_rewards(verdict, cut, truncated=True)["blamed_line"] == 3


def test_humaneval_completion_after_the_prompt_prefix(shared_data, tokenizers):
    """HumanEval programs are prompt + completion: lines are counted in the whole program, tokens only in the
    completion, and the prompt's lines blame no sampled token."""
    from tasks import load_problems

    problem = next(p for p in load_problems(str(shared_data / "humaneval" / "HumanEval.jsonl.gz"))
                   if p.problem_id.endswith("/2"))  # truncate_number: a one-line canonical body
    prefix = problem.program_prefix
    completion = "    scaled = number * 1.0\n    return scaled % 1.0 / 0\n"
    program = prefix + completion
    verdict = run(problem, program)
    k = prefix.count("\n") + 2
    assert verdict.error.type == "ZeroDivisionError" and verdict_rewards(verdict, program)["blamed_line"] == k
    assert_blamed_tokens(tokenizers, verdict, program, k, completion_start=len(prefix))
