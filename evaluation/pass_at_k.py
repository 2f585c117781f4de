"""pass@k: the unbiased estimator, per-problem tallies of graded samples, and the report tables built from them.

``pass_at_k(n, c, k) = 1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021; RLTF-SPEC.md section 6), averaged over
problems. It is computed in the product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms the huge
binomials (C(1000, 100) overflows a float). ``k > n`` has no unbiased estimate: it is reported as unavailable
(None), never extrapolated.

Plain Python only (no torch, no Ray, no sandbox), so that anything holding outcome strings can use it.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The program outcomes a report shows, in this order. `infra_error` (the sandbox failed, not the program) is
# counted apart and never enters pass@k: such samples are dropped, so that problem's n is smaller.
OUTCOMES = ("passed", "failed", "runtime_error", "compile_error")
INFRA = "infra_error"


def pass_at_k(n: int, c: int, k: int) -> float | None:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct.

    None when k > n (no unbiased estimate exists)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"n, c, k must be integers, got n={n!r}, c={c!r}, k={k!r}")
    if k < 1 or n < 0 or not 0 <= c <= n:
        raise ValueError(f"need k >= 1 and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if k > n:
        return None
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def parse_ks(text: str) -> list[int]:
    """``"1,5,10"`` -> [1, 5, 10] (sorted, unique); a clear error for anything else."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--k must be comma-separated positive integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k must be comma-separated positive integers, got {text!r}")
    return ks


@dataclass
class ProblemTally:
    """What the graded samples of one problem add up to."""

    problem_id: str
    outcomes: collections.Counter = field(default_factory=collections.Counter)

    @property
    def n(self) -> int:
        """Samples that count: all but the sandbox's own failures."""
        return sum(count for outcome, count in self.outcomes.items() if outcome != INFRA)

    @property
    def c(self) -> int:
        return self.outcomes["passed"]


def tally(problem_ids: Iterable[str], outcomes: Iterable[str]) -> dict[str, ProblemTally]:
    """Per-problem tallies from parallel sequences of (problem id, outcome), in first-seen problem order."""
    tallies: dict[str, ProblemTally] = {}
    for problem_id, outcome in zip(problem_ids, outcomes, strict=True):
        if outcome not in OUTCOMES and outcome != INFRA:
            raise ValueError(f"problem {problem_id}: unknown outcome {outcome!r}")
        tallies.setdefault(problem_id, ProblemTally(problem_id)).outcomes[outcome] += 1
    return tallies


def score_table(tallies: Iterable[ProblemTally], ks: Iterable[int]) -> dict:
    """One row of a report: pass@k averaged over problems, and the outcome mix over all samples.

    ``pass@k`` is None when no problem has at least k samples; ``counted@k`` says over how many problems the
    mean was taken (fewer than ``problems`` only when sandbox failures left some problem with n < k)."""
    tallies = list(tallies)
    outcomes: collections.Counter = collections.Counter()
    for t in tallies:
        outcomes.update(t.outcomes)
    samples = sum(t.n for t in tallies)
    row: dict = {"problems": len(tallies), "samples": samples, "pass@k": {}, "counted@k": {}}
    for k in ks:
        values = [v for v in (pass_at_k(t.n, t.c, k) for t in tallies) if v is not None]
        row["pass@k"][str(k)] = sum(values) / len(values) if values else None
        row["counted@k"][str(k)] = len(values)
    row["outcomes"] = {o: outcomes[o] for o in OUTCOMES}
    row["outcome_fractions"] = {o: (outcomes[o] / samples if samples else 0.0) for o in OUTCOMES}
    row["infra_errors"] = outcomes[INFRA]
    return row


def report(tallies: Mapping[str, ProblemTally], ks: Iterable[int],
           groupings: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """``{"overall": row, "by": {grouping: {group: row}}}``. ``groupings`` maps a grouping's name (e.g.
    ``"difficulty"``) to each problem's group; problems missing from it are left out of that grouping."""
    ks = list(ks)
    out = {"overall": score_table(tallies.values(), ks), "by": {}}
    for name, group_of in (groupings or {}).items():
        members: dict[str, list[ProblemTally]] = {}
        for problem_id, t in tallies.items():
            if group_of.get(problem_id):
                members.setdefault(group_of[problem_id], []).append(t)
        if members:
            out["by"][name] = {group: score_table(rows, ks) for group, rows in sorted(members.items())}
    return out


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def markdown_table(rep: dict, ks: Iterable[int]) -> str:
    """The report as one markdown table: pass@k in percent (``n/a`` where k > n), then the outcome mix."""
    ks = [str(k) for k in ks]
    header = ["group", "problems", "samples", *(f"pass@{k}" for k in ks), *(f"{o} %" for o in OUTCOMES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def line(label: str, row: dict) -> None:
        cells = [label, str(row["problems"]), str(row["samples"])]
        for k in ks:
            partial = row["counted@k"][k] < row["problems"] and row["pass@k"][k] is not None
            cells.append(_cell(row["pass@k"][k]) + (f" ({row['counted@k'][k]} problems)" if partial else ""))
        cells += [f"{100 * row['outcome_fractions'][o]:.1f}" for o in OUTCOMES]
        lines.append("| " + " | ".join(cells) + " |")

    line("all", rep["overall"])
    for name, groups in rep["by"].items():
        for group, row in groups.items():
            line(f"{name}: {group}", row)
    return "\n".join(lines) + "\n"


def results_markdown(summary: dict, title: str, regrade_command: str) -> str:
    """``results.md`` of an evaluation (of a model, or of a samples file): its settings, the table, and how to
    re-grade its samples."""
    s = summary
    tests = f"graded with {'grading' if s['grading_tests'] else 'training'} tests."
    if "model" in s:
        settings = (f"model `{s['model']}` ({s['model_path']}), {s['problems']} problems, n={s['n']}, "
                    f"temperature {s['temperature']}, top-p {s['top_p']}, max {s['max_new_tokens']} new tokens, "
                    f"seed {s['seed']}; {tests}")
    else:
        n = s["n"] if s["n"] is not None else "{}-{}".format(*s["n_range"])
        settings = (f"{s['samples']} samples ({', '.join(s['formats'])} rows) of {s['problems']} problems, n={n} "
                    f"per problem; {tests}")
    notes = [f"- {s['note']}." if s.get("note") else "",
             "- pass@k in percent (unbiased estimator, mean over problems); n/a: k > n.",
             f"- Re-grade: `{regrade_command}`"]
    return (f"# {title}\n\n{settings}\n\n{markdown_table(s['report'], s['ks'])}\n"
            + "\n".join(line for line in notes if line) + "\n")
