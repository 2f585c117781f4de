"""Tables, verdicts and curves of the learning experiment (bench/learning.py) from its results JSON.

    python bench/learning_report.py [bench/results/learning.json] [--docs docs]   # redraw without re-running

A difference between two arms counts only when it is larger than both the evaluation noise (the starting
checkpoint evaluated twice, different sampling seeds) and the seed spread (the larger standard deviation of the
two arms over seeds), and every seed of the better arm beats every seed of the other.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's packages

from bench.learning_arms import ARMS, KINDS  # noqa: E402

NOTES_MARK = "<!-- hand-written notes below this line are kept when the report is regenerated -->"


def final_scores(results: dict, arm: str, kind: str, metric: str) -> list[float]:
    """The arm's final score per seed (pass@k is None when fewer than k samples were drawn: left out)."""
    return [run["points"][-1][kind][metric] for run in results["runs"]
            if run["arm"] == arm and run["points"] and run["points"][-1][kind][metric] is not None]


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def stats(values: list[float]) -> dict:
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def noise(results: dict, kind: str, metric: str) -> float:
    first, second = results["start"]
    return abs(first[kind][metric] - second[kind][metric])


def compare(results: dict, better: str, worse: str, kind: str, metric: str = "pass@1") -> dict:
    """Is ``better`` above ``worse`` on this score, beyond noise and seed spread?"""
    a, b = final_scores(results, better, kind, metric), final_scores(results, worse, kind, metric)
    sa, sb = stats(a), stats(b)
    diff = sa["mean"] - sb["mean"]
    threshold = max(noise(results, kind, metric), sa["std"], sb["std"])
    separated = bool(a and b and min(a) > max(b))
    if diff > threshold and separated:
        verdict = "above"
    elif -diff > threshold and bool(a and b and max(a) < min(b)):
        verdict = "below"
    else:
        verdict = "no difference"
    return {"diff": diff, "threshold": threshold, "verdict": verdict}


def _pm(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] else "-"


def arm_table(results: dict, arms: dict) -> list[str]:
    lines = ["| arm | tests-only pass@1 | tests-only pass@5 | supervised pass@1 | supervised pass@5 | optimizer steps "
             "| programs accepted into the buffer |", "|---|---|---|---|---|---|---|"]
    start = results["start"][0]
    lines.append("| starting checkpoint (warm start) | " + " | ".join(
        _f(start[kind][m]) for kind in KINDS for m in ("pass@1", "pass@5")) + " | - | - |")
    for arm, (label, _) in arms.items():
        runs = [r for r in results["runs"] if r["arm"] == arm]
        if not runs:
            continue
        cells = [_pm(stats(final_scores(results, arm, kind, m))) for kind in KINDS for m in ("pass@1", "pass@5")]
        steps = statistics.fmean(r["steps"] for r in runs)
        samples = statistics.fmean(r["samples"] for r in runs)
        lines.append(f"| {arm}: {label} | " + " | ".join(cells) + f" | {steps:.0f} | {samples:.0f} |")
    return lines


def per_seed_table(results: dict, arms: dict) -> list[str]:
    seeds = sorted({r["seed"] for r in results["runs"]})
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for arm in arms:
        by_seed = {r["seed"]: r["points"][-1]["tests-only"]["pass@1"] for r in results["runs"] if r["arm"] == arm}
        if by_seed:
            lines.append(f"| {arm} | " + " | ".join(f"{by_seed[s]:.3f}" if s in by_seed else "-" for s in seeds) + " |")
    return lines


def template_table(results: dict, arms: dict) -> list[str]:
    start = results["start"][0]["tests_only_by_template"]
    shown = [a for a in arms if any(r["arm"] == a for r in results["runs"])]
    lines = ["| tests-only template | start | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for template in start:
        cells = []
        for arm in shown:
            values = [r["points"][-1]["tests_only_by_template"][template] for r in results["runs"] if r["arm"] == arm]
            cells.append(f"{statistics.fmean(values):.2f}")
        lines.append(f"| {template} | {start[template]:.2f} | " + " | ".join(cells) + " |")
    return lines


def verdicts(results: dict, arms: dict) -> list[str]:
    names = [a for a in arms if any(r["arm"] == a for r in results["runs"])]
    pairs = [(a, "supervised") for a in ("rltf", "coarse", "coarse+fine", "offline")]  # each against the control
    ladder = [a for a in ("supervised", "coarse", "coarse+fine", "rltf") if a in names]
    pairs += [(b, a) for a, b in zip(ladder, ladder[1:]) if (b, a) not in pairs]
    pairs += [("rltf", "offline")]
    lines = []
    for better, worse in pairs:
        if better not in names or worse not in names:
            continue
        for kind in KINDS:
            c = compare(results, better, worse, kind)
            lines.append(f"- {kind} held-out pass@1, {better} against {worse}: {c['diff']:+.3f} "
                         f"(noise and seed spread {c['threshold']:.3f}) -> **{c['verdict']}**")
    return lines


def plot_curves(results: dict, arms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    start = results["start"][0]
    for ax, kind in zip(axes, KINDS):
        for arm in arms:
            runs = [r for r in results["runs"] if r["arm"] == arm and r["points"]]
            if not runs:
                continue
            depth = min(len(r["points"]) for r in runs)
            xs = [0.0] + [statistics.fmean(r["points"][i]["train_s"] for r in runs) for i in range(depth)]
            per_point = [[start[kind]["pass@1"]] * len(runs)] + [[r["points"][i][kind]["pass@1"] for r in runs]
                                                                  for i in range(depth)]
            means = [statistics.fmean(p) for p in per_point]
            line, = ax.plot(xs, means, marker="o", label=f"{arm} ({len(runs)} seeds)")
            ax.fill_between(xs, [min(p) for p in per_point], [max(p) for p in per_point], color=line.get_color(),
                            alpha=0.15)
        ax.set_title(f"held-out {kind} templates", fontsize=10)
        ax.set_xlabel("wall-clock seconds of training (after the warm start)")
        ax.set_ylabel("pass@1 (grading tests)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("RLTF against supervised-only training (mean over seeds, band = min..max)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, arms: dict, docs: Path) -> Path:
    docs.mkdir(parents=True, exist_ok=True)
    plot_curves(results, arms, docs / "learning_curves.png")
    s = results["settings"]
    start = results["start"]
    n_heldout = f"{s['heldout_tests_only']} per tests-only template, {s['heldout_supervised']} per supervised template"
    text = [
        "# Learning experiment: RL from unit tests against supervised training",
        "",
        "Generated by `bench/learning.py` (numbers: `bench/results/learning.json`). Command:",
        "",
        "    " + " ".join(["python", *results.get("commands", ["bench/learning.py"])]),
        "",
        f"Setting: tiny GPT-2 (`tiny:gpt2`), the generated problem family (`tasks/synthetic.py`), 2 CPU cores. Warm "
        f"start: {results['warm_start']['steps']} supervised steps on the `supervised` templates' references "
        f"({results['warm_start']['run_wall_s']:.0f} s). Then every arm from that checkpoint for "
        f"{s['budget_s']:.0f} s of training, {s['seeds']} seed(s) each. Held-out evaluation: unseen instances "
        f"({n_heldout}), graded by their grading tests, n={s['eval_n']} samples per problem at temperature "
        f"{s['eval_temperature']}. Whole experiment: {results.get('total_wall_s', results['elapsed_s']) / 60:.1f} min.",
        "",
        "## Final held-out scores (mean ± standard deviation over seeds)",
        "",
        *arm_table(results, arms),
        "",
        f"Evaluation noise (the starting checkpoint evaluated twice): tests-only pass@1 "
        f"{start[0]['tests-only']['pass@1']:.3f} / {start[1]['tests-only']['pass@1']:.3f} "
        f"(difference {noise(results, 'tests-only', 'pass@1'):.3f}); supervised pass@1 "
        f"{start[0]['supervised']['pass@1']:.3f} / {start[1]['supervised']['pass@1']:.3f} "
        f"(difference {noise(results, 'supervised', 'pass@1'):.3f}).",
        "",
        "## Verdicts",
        "",
        "A difference counts only if it exceeds both the evaluation noise and the larger seed standard deviation, "
        "and every seed of one arm beats every seed of the other.",
        "",
        *verdicts(results, arms),
        "",
        "## Tests-only held-out pass@1 by seed",
        "",
        *per_seed_table(results, arms),
        "",
        "## Tests-only templates: fraction of held-out samples passing (mean over seeds)",
        "",
        *template_table(results, arms),
        "",
        "## Curves",
        "",
        "![held-out pass@1 against wall-clock time](learning_curves.png)",
        "",
    ]
    path = docs / "RESULTS.md"
    notes = ""
    if path.is_file() and NOTES_MARK in path.read_text():
        notes = path.read_text().split(NOTES_MARK, 1)[1]
    path.write_text("\n".join(text) + "\n" + NOTES_MARK + notes)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="bench/results/learning.json")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    print(write_report(json.loads(Path(args.results).read_text()), ARMS, Path(args.docs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
