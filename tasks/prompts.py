"""Prompt formats, one function per problem family: the exact text a policy sees before it writes code.

Every prompt ends where the model's output starts. For APPS, MBPP and HumanEval that output is appended to
``Problem.program_prefix`` to form the executed program (empty prefix for APPS and MBPP, the prompt itself for
HumanEval); generated problems follow HumanEval (see `synthetic_prompt`).
"""
from __future__ import annotations


def apps_prompt(question: str, starter_code: str = "", call_based: bool = False) -> str:
    """APPS, exactly as RLTF-SPEC.md section 5 (the CodeRL / RLTF format)."""
    fmt = "Use Call-Based format" if call_based else "Use Standard Input format"
    return "\nQUESTION:\n" + question + "\n" + starter_code + "\n" + fmt + "\nANSWER:\n"


def mbpp_prompt(text: str, test_list: list[str]) -> str:
    """MBPP zero-shot, in the RLTF / CodeRL style: the APPS markers around the problem text and its test asserts.

    The released RLTF code has no MBPP script; its paper evaluates MBPP zero-shot with a model trained on APPS,
    giving the description plus the tests (which carry the function name and signature). Reusing APPS's
    ``QUESTION:`` / ``ANSWER:`` markers keeps an APPS-trained policy in familiar territory::

        \\nQUESTION:\\n<text>\\nYour code should pass these tests:\\n<assert 1>\\n<assert 2>\\n<assert 3>\\nANSWER:\\n
    """
    tests = "\n".join(test_list)
    return "\nQUESTION:\n" + text + "\nYour code should pass these tests:\n" + tests + "\nANSWER:\n"


def humaneval_prompt(prompt: str) -> str:
    """HumanEval: its own prompt (signature and docstring); the completion continues the function body."""
    return prompt


def synthetic_prompt(function_name: str, argument: str, description: str) -> str:
    """Generated problems: a signature and a one-line docstring stating the task, ending where the body starts.

    The signature is part of the prompt and of ``program_prefix`` (as in HumanEval), so the model writes only the
    1-4 line body: it never has to copy the per-instance random function name, and the supervised targets are
    exactly the code that differs between templates.
    """
    return f'def {function_name}({argument}):\n    """{description}"""\n'
