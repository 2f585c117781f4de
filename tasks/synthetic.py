"""The generated problem family: instances of the templates in tasks/synthetic_blocks.py, with tests.

Each instance has random constants and a random function name (deterministic from the seed), a reference
solution, 3-4 training tests and 8-12 stronger grading tests (``Problem.grading_tests``: edge cases such as
empty inputs and values at the constants' boundaries, never shown to training). Tests are chosen against
*mutants* of the reference (each constant off by one, which also covers ``>`` written for ``>=``; a step
dropped; steps swapped; another final block; a constant answer). Both the training tests and the grading tests
tell every such mutant apart from the reference whenever some candidate input can, so RL rewards no near miss;
grading adds edge cases and more inputs. A program that memorises the training answers passes training and fails
grading.

Splits: "train" and "heldout". For every template, the tuples of constant values are shuffled once and a quarter
of them is reserved for held-out instances, so a held-out instance's constants (as a tuple) never appear in that
template's training instances. ``meta["supervised"]`` says whether the reference may be used for supervised
warm-start training; references of ``tests-only`` templates are still in ``solutions`` (for checking), but must
not be trained on.

Prompt and program: the prompt is the signature plus a one-line docstring (tasks.prompts.synthetic_prompt) and is
also ``program_prefix``; the model writes the body, and ``solutions[0] == prompt + body``. The body to learn is
``meta["reference_body"]``.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from typing import Any

from tasks.problem import Problem, TestSuite
from tasks.prompts import synthetic_prompt
from tasks.synthetic_blocks import BLOCKS, DOMAINS, LETTERS, TEMPLATES, Block, Template

HELDOUT_FRACTION = 0.25
TRAIN_TESTS_MIN, TRAIN_TESTS_MAX = 3, 4
GRADING_TESTS_MIN, GRADING_TESTS_TARGET, GRADING_TESTS_MAX = 8, 10, 12
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_ERROR = object()  # the "output" of a call that raised


def templates() -> list[Template]:
    """All templates; each has ``.name``, ``.kind`` ("supervised" | "tests-only"), ``.supervised``, ``.domain``."""
    return list(TEMPLATES)


def template_kinds() -> dict[str, str]:
    """Template name -> "supervised" | "tests-only"."""
    return {t.name: t.kind for t in TEMPLATES}


def synthetic_family(seed: int = 0, instances_per_template: int = 40, heldout_per_template: int = 10,
                     template_names: Iterable[str] | None = None) -> list[Problem]:
    """Instances of every template (or of ``template_names``): ``instances_per_template`` in split "train" and
    ``heldout_per_template`` in split "heldout", deterministic from ``seed``."""
    if instances_per_template < 0 or heldout_per_template < 0:
        raise ValueError("instances_per_template and heldout_per_template must be >= 0")
    chosen = list(TEMPLATES)
    if template_names is not None:
        wanted = list(template_names)
        known = {t.name: t for t in TEMPLATES}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(f"unknown synthetic template(s) {unknown}; known: {', '.join(known)}")
        chosen = [known[name] for name in wanted]
    used_names: set[str] = set()
    problems: list[Problem] = []
    for template in chosen:
        rng = random.Random(f"rltf-synthetic:{seed}:{template.name}")
        train_space, heldout_space = _split_constant_space(template, rng)
        for split, space, count in (("train", train_space, instances_per_template),
                                    ("heldout", heldout_space, heldout_per_template)):
            for index in range(count):
                constants = space[index % len(space)]
                name = _fresh_name(rng, used_names)
                problems.append(_instance(template, constants, name, split, index, rng))
    return problems


def family_from_spec(spec: str) -> list[Problem]:
    """``"synthetic"`` or ``"synthetic:seed=1,instances=40,heldout=10"`` (the source string of load_problems)."""
    options = {"seed": 0, "instances": 40, "heldout": 10}
    _, _, rest = spec.partition(":")
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ValueError(f"bad synthetic option {item!r} in {spec!r}; options: seed=, instances=, heldout=")
        try:
            options[key] = int(value)
        except ValueError:
            raise ValueError(f"synthetic option {key!r} needs an integer, got {value!r}") from None
    return synthetic_family(seed=options["seed"], instances_per_template=options["instances"],
                            heldout_per_template=options["heldout"])


# ------------------------------------------------------------------------------------------------ constants


def _constant_space(template: Template) -> list[tuple[dict[str, Any], ...]]:
    per_block = []
    for block in template.blocks:
        names = list(block.params)
        options = [dict(zip(names, values)) for values in itertools.product(*(block.params[n] for n in names))]
        if block.valid is not None:
            options = [o for o in options if block.valid(**o)]
        per_block.append(options)
    return [tuple(combo) for combo in itertools.product(*per_block)]


def _split_constant_space(template: Template, rng: random.Random):
    """Shuffle the template's constant tuples (minus degenerate ones whose answer never varies) and reserve a
    quarter for held-out instances."""
    probes = _special_inputs(template.domain, rng) + [_random_input(template.domain, rng) for _ in range(8)]
    space = []
    for constants in _constant_space(template):
        chain = _chain(template.blocks, constants)
        if len({repr(_output(chain, x)) for x in probes}) > 1:
            space.append(constants)
    if len(space) < 2:
        raise RuntimeError(f"synthetic template {template.name} has fewer than 2 usable constant tuples")
    rng.shuffle(space)
    n_heldout = max(1, round(HELDOUT_FRACTION * len(space)))
    return space[n_heldout:], space[:n_heldout]


def _fresh_name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "f_" + "".join(rng.choice(_NAME_CHARS) for _ in range(4))
        if name not in used:
            used.add(name)
            return name


# ------------------------------------------------------------------------------------------- semantics


def _program(pairs: Iterable[tuple[Block, dict[str, Any]]]) -> Callable[[Any], Any]:
    """The meaning of a chain of (block, parameters), from the blocks' independent implementations."""
    steps = tuple((block.apply, params) for block, params in pairs)

    def run(value: Any) -> Any:
        for apply, params in steps:
            value = apply(value, **params)
        return value

    return run


def _chain(blocks: list[Block], constants: tuple[dict[str, Any], ...]) -> Callable[[Any], Any]:
    return _program(zip(blocks, constants))


def _output(program: Callable[[Any], Any], value: Any) -> Any:
    try:
        return program(value)
    # a mutant may divide by zero or index wrongly: that is an observable difference
    except Exception:  # noqa: BLE001
        return _ERROR


def _nudged(value: Any) -> list[Any]:
    if isinstance(value, int):
        return [value - 1, value + 1]
    # a string constant: change its last letter to the next one of the alphabet
    return [value[:-1] + LETTERS[(LETTERS.index(value[-1]) + 1) % len(LETTERS)]]


def _mutants(template: Template, constants: tuple[dict[str, Any], ...], reference_on_first: Any) -> list:
    """Close wrong programs: each the kind of mistake a model makes. Tests must tell them from the reference."""
    blocks = template.blocks
    mutants: list = []
    for i, (block, params) in enumerate(zip(blocks, constants)):
        for key, value in params.items():
            for other in _nudged(value):
                changed = dict(params, **{key: other})
                if block.valid is None or block.valid(**changed):
                    mutants.append(_chain(blocks, constants[:i] + (changed,) + constants[i + 1:]))
    steps = list(zip(blocks[:-1], constants[:-1]))
    final = (blocks[-1], constants[-1])
    for i in range(len(steps)):
        mutants.append(_program(steps[:i] + steps[i + 1:] + [final]))
    if len(steps) == 2:
        mutants.append(_program([steps[1], steps[0], final]))
    for other in BLOCKS[template.domain].values():
        if other.final and other.name != template.final:
            defaults = {key: values[0] for key, values in other.params.items()}
            mutants.append(_program(steps + [(other, defaults)]))
    for constant in (reference_on_first, {"list": [], "int": 0, "str": ""}[template.domain], True, False):
        mutants.append(lambda _x, c=constant: c)
    return mutants


# ------------------------------------------------------------------------------------------------- inputs


def _random_input(domain: str, rng: random.Random, wide: bool = False) -> Any:
    if domain == "list":
        length = rng.randint(0, 12) if wide else rng.randint(3, 6)
        low, high = (-20, 40) if wide else (-5, 25)
        return [rng.randint(low, high) for _ in range(length)]
    if domain == "int":
        return rng.randint(-50, 100) if wide else rng.randint(-10, 40)
    length = rng.randint(0, 12) if wide else rng.randint(3, 7)
    return "".join(rng.choice(LETTERS) for _ in range(length))


def _special_inputs(domain: str, rng: random.Random) -> list[Any]:
    """Edge cases every grading set starts with: empty, zero, negative, repeated, long."""
    if domain == "list":
        a, b = rng.randint(-5, 25), rng.randint(-5, 25)
        return [[], [0], [-7, -2, -1, -4], [a, a, a, b, b], [rng.randint(-20, 40) for _ in range(12)]]
    if domain == "int":
        return [0, -1, -23, 97, 1000]
    return ["", rng.choice(LETTERS), "".join(rng.choice(LETTERS) for _ in range(12))]


def _boundary_inputs(domain: str, constants: tuple[dict[str, Any], ...], shift: int = 0) -> list[Any]:
    """Inputs dense around where the answer changes: every small integer (as runs of consecutive values for
    lists, so thresholds shifted by an earlier step are hit too), and strings built from the constants' letters,
    long enough for the length constants."""
    if domain == "list":
        return [list(range(start, start + 4)) for start in range(-24 + shift, 52 + shift, 4)]
    if domain == "int":
        return list(range(-30, 61))
    letters = sorted({ch for params in constants for v in params.values() if isinstance(v, str) for ch in v})
    inputs = [letter * n for letter in letters for n in (1, 3, 5, 7, 9)]
    inputs += ["abcdefgh"[:n] for n in range(1, 9)]
    return inputs + ["".join(letters) * 2 + "h"] if letters else inputs


def _dedupe(items: Iterable[Any], exclude: Iterable[Any] = ()) -> list[Any]:
    seen = {repr(x) for x in exclude}
    unique = []
    for item in items:
        key = repr(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _greedy_cover(pool: list[Any], killers: dict[int, set[int]], targets: set[int], chosen: list[int],
                  cap: int) -> list[int]:
    """Add pool indices (in pool order, which is random) that kill the most remaining target mutants."""
    remaining = set(targets)
    for index in chosen:
        remaining -= killers[index]
    while remaining and len(chosen) < cap:
        best = max((i for i in range(len(pool)) if i not in chosen), key=lambda i: len(killers[i] & remaining),
                   default=None)
        if best is None or not killers[best] & remaining:
            break
        chosen.append(best)
        remaining -= killers[best]
    return chosen


def _choose_tests(template: Template, constants: tuple[dict[str, Any], ...],
                  rng: random.Random) -> tuple[list[Any], list[Any], Callable[[Any], Any]]:
    """Training inputs: at most 4, greedily killing every mutant that any candidate input can kill (so a
    near-miss program is not rewarded as correct). Grading inputs: 10-12, the edge cases first, then greedily
    killing every mutant (reusing a training input only when nothing else kills it), then wider random inputs."""
    reference = _chain(template.blocks, constants)
    special = _special_inputs(template.domain, rng)
    boundary = _boundary_inputs(template.domain, constants)
    wide = [_random_input(template.domain, rng, wide=True) for _ in range(16)]
    shifted = _boundary_inputs(template.domain, constants, shift=2)
    # typical random inputs first: the greedy choice keeps the first of equally good inputs
    train_pool = _dedupe([_random_input(template.domain, rng) for _ in range(16)] + boundary + shifted + special)
    extra = _dedupe(wide, exclude=train_pool)
    mutants = _mutants(template, constants, _output(reference, train_pool[0]))
    killers = {}  # input index (train_pool + extra) -> mutants it tells apart from the reference
    for i, x in enumerate(train_pool + extra):
        expected = _output(reference, x)
        killers[i] = {m for m, mutant in enumerate(mutants) if _output(mutant, x) != expected}

    train_killers = {i: killers[i] for i in range(len(train_pool))}
    train_idx = _greedy_cover(train_pool, train_killers, set().union(*train_killers.values()), [],
                              TRAIN_TESTS_MAX)
    for i in range(len(train_pool)):
        if len(train_idx) >= TRAIN_TESTS_MIN:
            break
        if i not in train_idx:
            train_idx.append(i)
    train_inputs = [train_pool[i] for i in train_idx]

    # grading candidates as indices into train_pool + extra; training inputs last: reused only when no other
    # input tells a mutant apart (e.g. n == t exactly)
    everything = train_pool + extra
    position = {repr(x): i for i, x in reversed(list(enumerate(everything)))}
    order = [position[repr(x)] for x in _dedupe(special + wide + shifted + boundary, exclude=train_inputs)]
    n_special = len(_dedupe(special, exclude=train_inputs))
    order += train_idx
    grade_pool = [everything[i] for i in order]
    grade_killers = {j: killers[i] for j, i in enumerate(order)}
    grade_idx = _greedy_cover(grade_pool, grade_killers, set().union(*grade_killers.values()),
                              list(range(n_special)), GRADING_TESTS_MAX)
    for i in range(n_special, len(grade_pool)):  # wide random inputs come right after the edge cases
        if len(grade_idx) >= GRADING_TESTS_TARGET:
            break
        if i not in grade_idx:
            grade_idx.append(i)
    if len(grade_idx) < GRADING_TESTS_MIN:
        raise RuntimeError(f"synthetic template {template.name}: only {len(grade_idx)} grading inputs")
    return train_inputs, [grade_pool[i] for i in grade_idx], reference


# ---------------------------------------------------------------------------------------------- instances


def _instance(template: Template, constants, name: str, split: str, index: int, rng: random.Random) -> Problem:
    domain = DOMAINS[template.domain]
    rendered = [block.render(params) for block, params in zip(template.blocks, constants)]
    steps, final = rendered[:-1], rendered[-1]
    description = domain.intro + ", then ".join(phrase for phrase, _ in steps) + ". " + final[0]
    body = "".join(f"    {code}\n" for _, code in rendered)
    prompt = synthetic_prompt(name, domain.argument, description)
    train_inputs, grade_inputs, reference = _choose_tests(template, constants, rng)

    def asserts(inputs: list[Any]) -> list[str]:
        return [f"assert {name}({x!r}) == {_output(reference, x)!r}" for x in inputs]

    flat_constants = {f"{block.name}.{key}": value
                      for block, params in zip(template.blocks, constants) for key, value in params.items()}
    return Problem(
        problem_id=f"synthetic/{template.name}/{split}/{index:03d}",
        source="synthetic",
        prompt=prompt,
        tests=TestSuite(kind="assert", cases=asserts(train_inputs), entry_point=name),
        solutions=[prompt + body],
        program_prefix=prompt,
        split=split,
        grading_tests=TestSuite(kind="assert", cases=asserts(grade_inputs), entry_point=name),
        meta={
            "template": template.name,
            "supervised": template.supervised,
            "template_kind": template.kind,
            "domain": template.domain,
            "blocks": list(template.steps) + [template.final],
            "constants": flat_constants,
            "reference_body": body,
        },
    )
