"""The generated problem family: references pass their tests, grading tests are stronger than training tests,
weak-test gaming is caught, held-out constants are unseen, and tests-only templates are made of taught pieces.

Programs here are our own generated references and simple rewrites of them, run with plain `exec`.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict

import pytest

from tasks import load_problems, synthetic_family, template_kinds, templates
from tasks.problem import Problem


@pytest.fixture(scope="module")
def family() -> list[Problem]:
    return synthetic_family(seed=0, instances_per_template=8, heldout_per_template=3)


def _passes(program: str, cases: list[str]) -> list[bool]:
    namespace: dict = {}
    exec(program, namespace)
    results = []
    for case in cases:
        try:
            exec(case, dict(namespace))
            results.append(True)
        # AssertionError, or the rewritten program crashing on this input
        except Exception:  # noqa: BLE001
            results.append(False)
    return results


def _call_and_answer(case: str) -> tuple[object, object]:
    compare = ast.parse(case).body[0].test
    return ast.literal_eval(compare.left.args[0]), ast.literal_eval(compare.comparators[0])


def test_templates_and_kinds(family):
    kinds = template_kinds()
    assert len(templates()) == len(kinds) >= 36
    assert set(kinds.values()) == {"supervised", "tests-only"}
    assert sum(1 for k in kinds.values() if k == "tests-only") >= 10
    by_template = defaultdict(lambda: defaultdict(int))
    for problem in family:
        assert problem.meta["supervised"] == (kinds[problem.meta["template"]] == "supervised")
        by_template[problem.meta["template"]][problem.split] += 1
    assert {name: dict(splits) for name, splits in by_template.items()} == {
        name: {"train": 8, "heldout": 3} for name in kinds}


def test_every_reference_passes_training_and_grading_tests(family):
    for problem in family:
        program = problem.solutions[0]
        assert program == problem.program_prefix + problem.meta["reference_body"]
        assert problem.prompt == problem.program_prefix
        assert all(_passes(program, problem.tests.cases)), problem.problem_id
        assert all(_passes(program, problem.grading_tests.cases)), problem.problem_id


def test_test_counts_and_grading_mostly_unseen(family):
    for problem in family:
        assert problem.tests.kind == problem.grading_tests.kind == "assert"
        assert 3 <= len(problem.tests) <= 4
        unseen = set(problem.grading_tests.cases) - set(problem.tests.cases)
        assert len(unseen) >= 8, problem.problem_id
        entry = problem.tests.entry_point
        assert all(case.startswith(f"assert {entry}(") for case in problem.tests.cases + problem.grading_tests.cases)


def test_lookup_table_passes_training_but_fails_grading(family):
    """The classic way to game weak tests: hard-code the training answers."""
    for problem in family:
        arg = problem.program_prefix.split("(", 1)[1].split(")", 1)[0]
        lines = [f"    if {arg} == {x!r}:\n        return {y!r}\n"
                 for x, y in map(_call_and_answer, problem.tests.cases)]
        program = problem.program_prefix + "".join(lines)
        assert all(_passes(program, problem.tests.cases)), problem.problem_id
        assert not all(_passes(program, problem.grading_tests.cases)), problem.problem_id


# Near-miss rewrites a model might write (regex, replacement): the training tests alone must reject them.
NEAR_MISSES = [
    ("list_gt_mul", r" > ", " >= "),  # off-by-one threshold
    ("list_sub_lt", r" < ", " <= "),
    ("int_ifgt_sub", r" > ", " >= "),
    ("list_lt_max", r"max\(xs, default=-?\d+\)", "max(xs)"),  # the empty case forgotten
    ("str_rev_take", r"    s = s\[::-1\]\n", ""),  # a step forgotten
    ("list_div_add", r"== 0", "!= 0"),  # the opposite condition
    ("int_mul_add", r"n \* (\d+)", r"n * (\1 + 1)"),  # a wrong constant
]


@pytest.mark.parametrize("template, pattern, replacement", NEAR_MISSES)
def test_near_miss_programs_fail_training_tests(family, template, pattern, replacement):
    instances = [p for p in family if p.meta["template"] == template]
    assert instances
    for problem in instances:
        body = problem.meta["reference_body"]
        wrong_body, count = re.subn(pattern, replacement, body)
        assert count == 1, body
        wrong = problem.program_prefix + wrong_body
        assert not all(_passes(wrong, problem.tests.cases)), (problem.problem_id, wrong)


def test_swapped_steps_fail_training_tests(family):
    for problem in family:
        body_lines = problem.meta["reference_body"].splitlines(keepends=True)
        if len(body_lines) != 3:
            continue
        swapped = problem.program_prefix + body_lines[1] + body_lines[0] + body_lines[2]
        namespace: dict = {}
        exec(swapped, namespace)
        reference: dict = {}
        exec(problem.solutions[0], reference)
        entry = problem.tests.entry_point
        inputs = [_call_and_answer(c)[0] for c in problem.tests.cases + problem.grading_tests.cases]
        if all(namespace[entry](x) == reference[entry](x) for x in inputs):
            continue  # commuting steps: not a mistake
        assert not all(_passes(swapped, problem.tests.cases)), problem.problem_id


def test_heldout_constants_never_appear_in_training_instances(family):
    seen: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for problem in family:
        seen[problem.meta["template"]][problem.split].add(tuple(sorted(problem.meta["constants"].items())))
    for template, splits in seen.items():
        assert splits["heldout"] and splits["train"]
        assert not splits["heldout"] & splits["train"], template


def test_prompt_states_the_task_with_its_constants(family):
    for problem in family:
        entry = problem.tests.entry_point
        assert problem.prompt.startswith(f"def {entry}(") and problem.prompt.endswith('"""\n')
        docstring = problem.prompt.split('"""')[1]
        for value in problem.meta["constants"].values():
            stated = f'"{value}"' in docstring if isinstance(value, str) else \
                re.search(rf"(?<![\w-]){value}(?!\w)", docstring)
            assert stated, (problem.problem_id, value)
        compile(problem.prompt + "    pass\n", problem.problem_id, "exec")
        assert 1 <= len(problem.meta["reference_body"].splitlines()) <= 4


def test_names_vary_and_generation_is_deterministic(family):
    names = [p.tests.entry_point for p in family]
    assert len(set(names)) == len(names)
    again = synthetic_family(seed=0, instances_per_template=8, heldout_per_template=3)
    assert again == family
    other = synthetic_family(seed=1, instances_per_template=8, heldout_per_template=3)
    assert [p.prompt for p in other] != [p.prompt for p in family]


def test_tests_only_templates_reuse_taught_pieces_in_taught_positions():
    taught = defaultdict(set)  # domain -> {(position, block)}
    supervised_chains = set()
    for template in templates():
        if template.supervised:
            supervised_chains.add((template.domain, template.steps, template.final))
            taught[template.domain] |= {(i, b) for i, b in enumerate(template.steps)} | {("final", template.final)}
    for template in templates():
        if template.supervised:
            continue
        assert (template.domain, template.steps, template.final) not in supervised_chains
        pieces = {(i, b) for i, b in enumerate(template.steps)} | {("final", template.final)}
        assert pieces <= taught[template.domain], (template.name, pieces - taught[template.domain])


def test_load_problems_synthetic_source():
    problems = load_problems("synthetic:seed=2,instances=2,heldout=1", split="heldout")
    assert len(problems) == len(templates()) and {p.split for p in problems} == {"heldout"}
    assert all(p.source == "synthetic" for p in problems)
    with pytest.raises(ValueError, match="bad synthetic option 'size=3'"):
        load_problems("synthetic:size=3")
    with pytest.raises(ValueError, match="unknown synthetic template"):
        synthetic_family(template_names=["no_such_template"])
    chosen = synthetic_family(instances_per_template=2, heldout_per_template=1, template_names=["list_gt_mul"])
    assert [p.meta["template"] for p in chosen] == ["list_gt_mul"] * 3
