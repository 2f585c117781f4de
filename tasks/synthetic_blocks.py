"""Building blocks and templates of the generated problem family (see tasks/synthetic.py for instances).

A block is one step of a small function: a phrase for the docstring, one line of code, and a separate Python
implementation that computes expected answers (the rendered code line is never executed to make tests, so a
mistake in a code line is caught by running the reference against the tests, not copied into them). A template
is a chain of step blocks on one value (a list of ints ``xs``, an int ``n`` or a string ``s``) followed by a final
block that returns something. Each docstring
clause maps to one code line, in order, so that a composition is literally the concatenation of lines the
supervised templates teach.

``tests-only`` templates are new combinations of blocks that the ``supervised`` templates use in the same
position (first step, second step, final): a warm-started model has seen every piece and must put them together,
which is what RL from unit tests can reward.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LETTERS = "abcdefgh"
_WORDS = list(LETTERS) + [a + b for a in LETTERS for b in LETTERS]


@dataclass(frozen=True)
class Block:
    """One step (``final=False``: value -> same kind of value) or the returning final block of a template."""

    name: str
    phrase: str  # str.format template over the parameters
    code: str  # one line of Python, str.format template over the parameters
    apply: Callable[..., Any]  # apply(value, **params) -> value, written independently of `code`
    params: dict[str, tuple[Any, ...]]  # parameter -> allowed values
    final: bool = False
    valid: Callable[..., bool] | None = None  # rejects meaningless parameter values (replace "a" with "a")

    def render(self, values: dict[str, Any]) -> tuple[str, str]:
        return self.phrase.format(**values), self.code.format(**values)


@dataclass(frozen=True)
class Domain:
    name: str
    argument: str
    intro: str


DOMAINS = {
    "list": Domain("list", "xs", "Start from the list of integers xs: "),
    "int": Domain("int", "n", "Start from the integer n: "),
    "str": Domain("str", "s", "Start from the string s: "),
}


def _ints(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1))


BLOCKS: dict[str, dict[str, Block]] = {
    "list": {
        "add": Block("add", "add {k} to each element", "xs = [x + {k} for x in xs]",
                     lambda xs, k: [v + k for v in xs], {"k": _ints(1, 20)}),
        "sub": Block("sub", "subtract {k} from each element", "xs = [x - {k} for x in xs]",
                     lambda xs, k: [v - k for v in xs], {"k": _ints(1, 20)}),
        "mul": Block("mul", "multiply each element by {k}", "xs = [x * {k} for x in xs]",
                     lambda xs, k: [v * k for v in xs], {"k": _ints(2, 9)}),
        "mod": Block("mod", "replace each element by its remainder modulo {k}", "xs = [x % {k} for x in xs]",
                     lambda xs, k: [v % k for v in xs], {"k": _ints(2, 9)}),
        "gt": Block("gt", "keep only the elements greater than {t}", "xs = [x for x in xs if x > {t}]",
                    lambda xs, t: list(filter(lambda v: v > t, xs)), {"t": _ints(0, 20)}),
        "lt": Block("lt", "keep only the elements less than {t}", "xs = [x for x in xs if x < {t}]",
                    lambda xs, t: list(filter(lambda v: v < t, xs)), {"t": _ints(0, 20)}),
        "div": Block("div", "keep only the elements divisible by {k}", "xs = [x for x in xs if x % {k} == 0]",
                     lambda xs, k: list(filter(lambda v: not v % k, xs)), {"k": _ints(2, 9)}),
        "take": Block("take", "keep only the first {k} elements", "xs = xs[:{k}]",
                      lambda xs, k: [v for i, v in enumerate(xs) if i < k], {"k": _ints(1, 6)}),
        "list": Block("list", "Return the resulting list.", "return xs", lambda xs: list(xs), {}, final=True),
        "sum": Block("sum", "Return the sum of the elements.", "return sum(xs)",
                     lambda xs: _fold(xs, 0, lambda a, b: a + b), {}, final=True),
        "len": Block("len", "Return the number of elements.", "return len(xs)",
                     lambda xs: _fold(xs, 0, lambda a, _: a + 1), {}, final=True),
        "max": Block("max", "Return the largest element, or {d} if there are none.", "return max(xs, default={d})",
                     lambda xs, d: max(xs) if xs else d, {"d": _ints(-1, 9)}, final=True),
    },
    "int": {
        "add": Block("add", "add {k} to it", "n = n + {k}", lambda n, k: n + k, {"k": _ints(1, 20)}),
        "mul": Block("mul", "multiply it by {k}", "n = n * {k}", lambda n, k: n * k, {"k": _ints(2, 9)}),
        "mod": Block("mod", "replace it by its remainder modulo {k}", "n = n % {k}",
                     lambda n, k: n - k * (n // k), {"k": _ints(2, 9)}),
        "ifgt_sub": Block("ifgt_sub", "if it is greater than {t}, subtract {k} from it",
                          "n = n - {k} if n > {t} else n", lambda n, t, k: (n - k) if n > t else n,
                          {"t": _ints(0, 20), "k": _ints(1, 9)}),
        "ifdiv": Block("ifdiv", "if it is divisible by {k}, divide it by {k}", "n = n // {k} if n % {k} == 0 else n",
                       lambda n, k: n // k if n % k == 0 else n, {"k": _ints(2, 9)}),
        "cap": Block("cap", "if it is greater than {k}, replace it by {k}", "n = {k} if n > {k} else n",
                     lambda n, k: min(n, k), {"k": _ints(0, 30)}),
        "value": Block("value", "Return the result.", "return n", lambda n: n, {}, final=True),
        "even": Block("even", "Return True if the result is even, otherwise False.", "return n % 2 == 0",
                      lambda n: (n & 1) == 0, {}, final=True),
    },
    "str": {
        "rev": Block("rev", "reverse it", "s = s[::-1]", lambda s: "".join(reversed(s)), {}),
        "upper": Block("upper", "convert it to upper case", "s = s.upper()",
                       lambda s: "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s), {}),
        "take": Block("take", "keep only its first {k} characters", "s = s[:{k}]",
                      lambda s, k: "".join(c for i, c in enumerate(s) if i < k), {"k": _ints(1, 6)}),
        "drop": Block("drop", "remove its first {k} characters", "s = s[{k}:]",
                      lambda s, k: "".join(c for i, c in enumerate(s) if i >= k), {"k": _ints(1, 4)}),
        "suffix": Block("suffix", 'append "{w}" to it', 's = s + "{w}"', lambda s, w: f"{s}{w}",
                        {"w": tuple(_WORDS)}),
        "prefix": Block("prefix", 'put "{w}" in front of it', 's = "{w}" + s', lambda s, w: f"{w}{s}",
                        {"w": tuple(_WORDS)}),
        "repeat": Block("repeat", "repeat it {k} times", "s = s * {k}", lambda s, k: "".join([s] * k),
                        {"k": _ints(2, 4)}),
        "replace": Block("replace", 'replace every "{a}" in it with "{b}"', 's = s.replace("{a}", "{b}")',
                         lambda s, a, b: "".join(b if c == a else c for c in s),
                         {"a": tuple(LETTERS), "b": tuple(LETTERS)}, valid=lambda a, b: a != b),
        "value": Block("value", "Return the result.", "return s", lambda s: s, {}, final=True),
        "len": Block("len", "Return its length.", "return len(s)", lambda s: sum(1 for _ in s), {}, final=True),
        "count": Block("count", 'Return how many times "{c}" occurs in it.', 'return s.count("{c}")',
                       lambda s, c: sum(1 for ch in s if ch == c), {"c": tuple(LETTERS)}, final=True),
    },
}


def _fold(xs: list[int], start: int, op: Callable[[int, int], int]) -> int:
    total = start
    for v in xs:
        total = op(total, v)
    return total


@dataclass(frozen=True)
class Template:
    """A chain of step blocks plus a final block in one domain. ``supervised``: its references may be used for
    the warm start; otherwise ("tests-only") only its tests may be trained on."""

    name: str
    domain: str
    steps: tuple[str, ...]
    final: str
    supervised: bool

    @property
    def kind(self) -> str:
        return "supervised" if self.supervised else "tests-only"

    @property
    def blocks(self) -> list[Block]:
        table = BLOCKS[self.domain]
        return [table[name] for name in self.steps] + [table[self.final]]


def _t(name: str, domain: str, steps: str, final: str, supervised: bool) -> Template:
    return Template(name, domain, tuple(steps.split()), final, supervised)


SUPERVISED, TESTS_ONLY = True, False
TEMPLATES: tuple[Template, ...] = (
    # supervised: every block alone or in a two-step chain, in each position it is later used in
    _t("list_add", "list", "add", "list", SUPERVISED),
    _t("list_mul", "list", "mul", "list", SUPERVISED),
    _t("list_sub", "list", "sub", "list", SUPERVISED),
    _t("list_mod", "list", "mod", "list", SUPERVISED),
    _t("list_gt", "list", "gt", "list", SUPERVISED),
    _t("list_lt", "list", "lt", "list", SUPERVISED),
    _t("list_div", "list", "div", "list", SUPERVISED),
    _t("list_take", "list", "take", "list", SUPERVISED),
    _t("list_gt_sum", "list", "gt", "sum", SUPERVISED),
    _t("list_div_len", "list", "div", "len", SUPERVISED),
    _t("list_mul_sum", "list", "mul", "sum", SUPERVISED),
    _t("list_lt_max", "list", "lt", "max", SUPERVISED),
    _t("list_gt_add", "list", "gt add", "list", SUPERVISED),
    _t("list_div_mul", "list", "div mul", "list", SUPERVISED),
    _t("list_add_lt", "list", "add lt", "list", SUPERVISED),
    _t("list_take_sub", "list", "take sub", "list", SUPERVISED),
    _t("int_add_mul", "int", "add mul", "value", SUPERVISED),
    _t("int_mul_mod", "int", "mul mod", "value", SUPERVISED),
    _t("int_ifgt_sub", "int", "ifgt_sub", "value", SUPERVISED),
    _t("int_ifdiv", "int", "ifdiv", "value", SUPERVISED),
    _t("int_cap_add", "int", "cap add", "value", SUPERVISED),
    _t("int_add_even", "int", "add", "even", SUPERVISED),
    _t("str_rev_suffix", "str", "rev suffix", "value", SUPERVISED),
    _t("str_upper_take", "str", "upper take", "value", SUPERVISED),
    _t("str_prefix_repeat", "str", "prefix repeat", "value", SUPERVISED),
    _t("str_replace", "str", "replace", "value", SUPERVISED),
    _t("str_drop_len", "str", "drop", "len", SUPERVISED),
    _t("str_take_count", "str", "take", "count", SUPERVISED),
    # more supervised chains, so each block is seen with several partners (composition is learnt, not memorised)
    _t("list_mul_gt", "list", "mul gt", "list", SUPERVISED),
    _t("list_take_add", "list", "take add", "list", SUPERVISED),
    _t("list_lt_mul", "list", "lt mul", "list", SUPERVISED),
    _t("int_mod_add", "int", "mod add", "value", SUPERVISED),
    _t("int_mul_cap", "int", "mul cap", "value", SUPERVISED),
    _t("int_ifdiv_add", "int", "ifdiv add", "value", SUPERVISED),
    _t("str_take_suffix", "str", "take suffix", "value", SUPERVISED),
    _t("str_replace_upper", "str", "replace upper", "value", SUPERVISED),
    _t("str_drop_repeat", "str", "drop repeat", "value", SUPERVISED),
    # tests-only: unseen combinations of the pieces above, each piece in a position it was taught in
    _t("list_gt_mul", "list", "gt mul", "list", TESTS_ONLY),
    _t("list_div_add", "list", "div add", "list", TESTS_ONLY),
    _t("list_lt_sum", "list", "lt", "sum", TESTS_ONLY),
    _t("list_gt_len", "list", "gt", "len", TESTS_ONLY),
    _t("list_add_sum", "list", "add", "sum", TESTS_ONLY),
    _t("list_sub_lt", "list", "sub lt", "list", TESTS_ONLY),
    _t("int_mul_add", "int", "mul add", "value", TESTS_ONLY),
    _t("int_add_mod", "int", "add mod", "value", TESTS_ONLY),
    _t("int_ifdiv_even", "int", "ifdiv", "even", TESTS_ONLY),
    _t("str_rev_take", "str", "rev take", "value", TESTS_ONLY),
    _t("str_upper_suffix", "str", "upper suffix", "value", TESTS_ONLY),
    _t("str_replace_count", "str", "replace", "count", TESTS_ONLY),
    _t("str_drop_count", "str", "drop", "count", TESTS_ONLY),
    _t("str_rev_repeat", "str", "rev repeat", "value", TESTS_ONLY),
)
