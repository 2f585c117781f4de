"""The report of bench/peers.py from its results JSON: the README table, the verdicts, the curves.

    python bench/peers_report.py [bench/results/peers.json] [--png ...] [--readme README.md]   # redraw

A difference in held-out pass@1 counts as in the learning experiment (bench/learning_report.py): larger than the
evaluation noise and than either side's seed spread, with every seed of one side above every seed of the other.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's packages

from bench.learning_arms import KINDS  # noqa: E402
from bench.learning_report import compare, stats  # noqa: E402

BEGIN, END = "<!-- peers:begin (bench/peers.py writes this table) -->", "<!-- peers:end -->"


def sides(results: dict) -> dict[str, list[dict]]:
    """Runs per side: each of this system's arms, then TRL at its best learning rate."""
    out: dict[str, list[dict]] = {}
    for run in results.get("ours", []):
        out.setdefault(run["arm"], []).append(run)
    if results["trl"].get("runs"):
        out["trl"] = results["trl"]["runs"]
    return out


def as_learning_results(results: dict) -> dict:
    """The shape bench/learning_report.compare reads: the start evaluated twice, runs with their points."""
    runs = [{"arm": side, "points": run.get("points") or [run["heldout"]]}
            for side, side_runs in sides(results).items() for run in side_runs]
    return {"start": results["start"], "runs": runs}


def _pm(values: list[float], digits: int = 3) -> str:
    s = stats(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] else "-"


def label(side: str, results: dict) -> str:
    return f"TRL GRPO, lr {results['trl']['best_lr']:g}" if side == "trl" else f"this system, `{side}` arm"


def table(results: dict) -> list[str]:
    runs = sides(results)
    names = list(runs)
    lines = ["| | " + " | ".join(label(s, results) for s in names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(title: str, cell) -> None:
        lines.append(f"| {title} | " + " | ".join(cell(s, runs[s]) for s in names) + " |")

    row("programs generated and graded per second of training",
        lambda s, rs: _pm([r["programs_per_s"] for r in rs], 1))
    row("optimizer steps", lambda s, rs: _pm([r["steps"] for r in rs], 0))
    row("sequences per optimizer step", lambda s, rs: "32 RL" if s == "trl" else "32 RL + 32 references")
    for kind in KINDS:
        row(f"held-out {kind} pass@1", lambda s, rs, kind=kind: _pm([r["heldout"][kind]["pass@1"] for r in rs]))
    if "trl" in runs:
        ref = statistics.fmean(r["programs_per_s"] for r in runs["trl"])
        row("graded programs per second against TRL's", lambda s, rs: "1.00" if s == "trl" else
            f"{statistics.fmean(r['programs_per_s'] for r in rs) / ref:.2f}x")
    return lines


def verdicts(results: dict) -> list[str]:
    """Each of this system's arms against TRL on held-out pass@1 of both kinds."""
    shaped, out = as_learning_results(results), []
    for side in sides(results):
        if side == "trl" or "trl" not in sides(results):
            continue
        for kind in KINDS:
            c = compare(shaped, side, "trl", kind)
            out.append(f"- held-out {kind} pass@1, `{side}` against TRL: {c['diff']:+.3f} (evaluation noise and seed "
                       f"spread {c['threshold']:.3f}) -> **{c['verdict']}**")
    return out


def sweep_line(results: dict) -> str:
    sweep = results["trl"].get("sweep", [])
    return "TRL learning rates on seed 0 (held-out tests-only / supervised pass@1, programs/s): " + ", ".join(
        f"{r['lr']:g}: {r['heldout']['tests-only']['pass@1']:.3f} / {r['heldout']['supervised']['pass@1']:.3f}, "
        f"{r['programs_per_s']:.1f}" for r in sweep) + "."


def markdown(results: dict) -> str:
    s = results["settings"]
    start = results["start"]
    load = ", ".join(f"{results.get(k, [0])[0]:.2f}" for k in ("load_avg_start", "load_avg_end"))
    parts = [f"`{shlex.join(results.get('commands') or ['bench/peers.py'])}` ({results.get('elapsed_s', 0) / 60:.0f} min; "
             f"1-minute load average at start and end: {load}); {s['budget_s']:.0f} s of training per run, "
             f"{s['seeds']} seeds, from the warm start (held-out tests-only / supervised pass@1 "
             f"{start[0]['tests-only']['pass@1']:.3f} / {start[0]['supervised']['pass@1']:.3f}; evaluated again: "
             f"{start[1]['tests-only']['pass@1']:.3f} / {start[1]['supervised']['pass@1']:.3f}).", "",
             *table(results), "", *verdicts(results)]
    if results["trl"].get("sweep"):
        parts += ["", sweep_line(results)]
    return "\n".join(parts)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    start = statistics.fmean(s["tests-only"]["pass@1"] for s in results["start"])
    for side, runs in sides(results).items():
        points = [run.get("points") or [run["heldout"]] for run in runs]
        xs = [0.0] + [statistics.fmean(p[i].get("train_s") or results["settings"]["budget_s"] for p in points)
                      for i in range(min(len(p) for p in points))]
        ys = [[start]] + [[p[i]["tests-only"]["pass@1"] for p in points] for i in range(len(xs) - 1)]
        left.errorbar(xs, [statistics.fmean(y) for y in ys], yerr=[stats(y)["std"] for y in ys], marker="o",
                      capsize=3, label=label(side, results).replace("`", ""))
        for run in runs:
            curve = run.get("curve") or []
            right.plot([c["train_s"] for c in curve], [c["graded"] for c in curve], lw=1,
                       color=left.lines[-1].get_color(), alpha=0.8)
        right.plot([], [], color=left.lines[-1].get_color(), label=label(side, results).replace("`", ""))
    left.set_xlabel("seconds of training")
    left.set_ylabel("held-out tests-only pass@1 (mean ± sd over seeds)")
    right.set_xlabel("seconds of training")
    right.set_ylabel("programs generated and graded (each seed)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, png: Path, readme: Path | None) -> None:
    plot(results, png)
    if readme is None:
        return
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no peers markers ({BEGIN} ... {END}): add them where the table goes")
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + BEGIN + "\n" + markdown(results) + "\n" + END + rest.split(END, 1)[1])


def summarise(results: dict) -> None:
    print("\n" + markdown(results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="bench/results/peers.json")
    parser.add_argument("--png", default="bench/results/peers_curves.png")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    write_outputs(results, Path(args.png), Path(args.readme) if args.readme else None)
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
