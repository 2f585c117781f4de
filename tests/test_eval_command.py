"""`launch.py eval` end to end on a tiny model: real generation, real sandbox, real Ray actors (the slow test),
plus greedy evaluation of a train run directory in-process and the command's errors for bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import launch
from evaluation.evaluate import GREEDY_NOTE, evaluate
from models import ensure_tiny
from tasks import load_problems

REPO = Path(__file__).resolve().parent.parent


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_greedy_eval_of_a_train_run_dir_uses_its_latest_checkpoint(tmp_path):
    from learner.checkpoints import CheckpointState, RunCheckpoints

    run = tmp_path / "run"
    checkpoints = RunCheckpoints(run)
    latest = checkpoints.begin(12)
    shutil.copytree(ensure_tiny("tiny:gpt2"), latest.hf_dir)
    checkpoints.commit(latest, CheckpointState(12, 3, "rl", 1.0))
    checkpoints.begin(4).hf_dir.mkdir()  # older and incomplete: must not be chosen
    problems = load_problems("synthetic", split="heldout", limit=3)
    result = evaluate(str(run), problems, n=5, ks=(1, 5), temperature=0, samplers=0, workers=1, max_new_tokens=16,
                      show_progress=False)
    s = result.summary
    assert s["model_path"].endswith("step_000012/hf")
    assert s["greedy"] and s["n"] == 1 and s["n_requested"] == 5 and s["note"] == GREEDY_NOTE
    assert s["unavailable_k"] == [5] and result.pass_at(5) is None and result.pass_at(1) is not None
    assert [r["problem_id"] for r in result.samples] == [p.problem_id for p in problems]
    assert all(r["program"].startswith(p.program_prefix) for r, p in zip(result.samples, problems))
    assert len(result.verdicts) == 3 and s["report"]["overall"]["samples"] == 3


@pytest.mark.parametrize("argv, message", [
    (["--model", "tiny:gpt2", "--dataset", "synthetic", "--k", "1,zero"], "--k must be"),
    (["--model", "tiny:gpt2", "--dataset", "/no/such/problems.jsonl"], "/no/such/problems.jsonl"),
    (["--model", "tiny:gpt2", "--dataset", "x.jsonl", "--format", "mbpp", "--split", "nosuch"], "no split 'nosuch'"),
    (["--model", "{tmp}", "--dataset", "synthetic"], "not a saved model"),
    (["--model", "tiny:gpt2", "--dataset", "synthetic", "--n", "0"], "n >= 1"),
])
def test_bad_input_is_one_clear_error(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert launch.main(["eval", *argv, "--samplers", "0", "--limit", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_command_on_ray_writes_all_files_and_its_verdicts_regrade_identically(tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "launch.py"), "eval", "--model", "tiny:gpt2", "--dataset", "synthetic",
           "--split", "heldout", "--limit", "4", "--n", "2", "--k", "1,2,5", "--samplers", "2", "--workers", "2",
           "--max-new-tokens", "32", "--seed", "3", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"samples.jsonl", "verdicts.jsonl", "summary.json", "results.md"}
    assert "eval: 4/4 problems" in proc.stderr  # progress on stderr

    problems = {p.problem_id: p for p in load_problems("synthetic", split="heldout", limit=4)}
    samples, verdicts = _rows(out / "samples.jsonl"), _rows(out / "verdicts.jsonl")
    assert [(s["problem_id"], s["sample_index"]) for s in samples] == [(pid, i) for pid in problems for i in (0, 1)]
    assert all(s["program"].startswith(problems[s["problem_id"]].program_prefix) for s in samples)
    assert [(v["problem_id"], v["sample_index"]) for v in verdicts] == \
           [(s["problem_id"], s["sample_index"]) for s in samples]
    # Graded by the stronger grading tests: tests_total counts them, not the training tests.
    assert all(v["tests_total"] == len(problems[v["problem_id"]].eval_tests.cases) for v in verdicts)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["samplers"] == 2 and summary["unavailable_k"] == [5]
    overall = summary["report"]["overall"]
    passed = {pid: sum(v["outcome"] == "passed" for v in verdicts if v["problem_id"] == pid) for pid in problems}
    assert overall["pass@k"]["1"] == pytest.approx(sum(c / 2 for c in passed.values()) / 4)
    assert overall["pass@k"]["2"] == pytest.approx(sum(c > 0 for c in passed.values()) / 4)
    assert overall["pass@k"]["5"] is None
    assert sum(overall["outcomes"].values()) == 8
    table = (out / "results.md").read_text()
    assert "| all | 4 | 8 |" in table and "n/a" in table and "launch.py execute" in table

    regraded = tmp_path / "regraded.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "launch.py"), "execute", "--problems", "synthetic",
                           "--samples", str(out / "samples.jsonl"), "--grading-tests", "--out", str(regraded)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    # execute keeps each input row (its program too) and adds the verdict: the verdicts are the same
    keep = set(verdicts[0]) - {"wall_ms", "sample_index"}
    assert [{k: v for k, v in row.items() if k in keep} for row in verdicts] == \
           [{k: v for k, v in row.items() if k in keep} for row in _rows(regraded)]

    # The same seed without Ray (one process, no actors) samples the same programs: chunks are seeded alike.
    again = evaluate("tiny:gpt2", list(problems.values()), n=2, ks=(1,), samplers=0, workers=1, seed=3,
                     max_new_tokens=32, show_progress=False)
    assert [s["program"] for s in again.samples] == [s["program"] for s in samples]


# --- eval --samples: sample files as users have them, graded at the command level -------------------------------

def _eval_samples(tmp_path, problems, rows, name, capsys, suffix=".jsonl"):
    from tasks import write_jsonl

    samples, out = tmp_path / f"{name}{suffix}", tmp_path / f"eval-{name}"
    write_jsonl(rows, samples)
    code = launch.main(["eval", "--samples", str(samples), "--dataset", str(problems), "--k", "1,2",
                        "--workers", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "| all |" in captured.out  # the pass@k table on standard output
    return _rows(out / "verdicts.jsonl"), json.loads((out / "summary.json").read_text())


def test_eval_samples_grades_mbpp_rows_with_their_own_integer_ids_as_before(shared_data, tmp_path, capsys):
    problems = shared_data / "mbpp" / "mbpp.jsonl"
    rows = [json.loads(line) for line in problems.read_text().splitlines()][600::40]  # train split, 10 problems
    wrong = [{**r, "code": "def unrelated():\n    return None\n"} for r in rows]
    # MBPP's own rows as they are (integer task_id, its fields kept), the reference then a broken copy
    own = [{**r, "completion": r["code"]} for pair in zip(rows, wrong) for r in pair]
    project = [{"problem_id": f"mbpp/{r['task_id']}", "program": r["completion"]} for r in own]
    graded, summary = _eval_samples(tmp_path, problems, own, "mbpp-own", capsys)
    before, before_summary = _eval_samples(tmp_path, problems, project, "mbpp-project", capsys)
    assert [{k: g[k] for k in r} for g, r in zip(graded, own)] == own  # every input field kept, ids as given
    verdict = ("outcome", "tests_run", "tests_passed", "tests_total", "error_type")
    assert [[g[k] for k in verdict] for g in graded] == [[b[k] for k in verdict] for b in before]
    assert [g["passed"] for g in graded] == [True, False] * len(rows)
    assert summary["report"] == before_summary["report"]
    assert summary["report"]["overall"]["pass@k"] == {"1": 0.5, "2": 1.0}
    assert summary["problems"] == len(rows) and summary["n"] == 2


def test_eval_samples_human_eval_completions_of_the_canonical_solutions_all_pass(shared_data, tmp_path, capsys):
    import gzip

    problems = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(problems, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    human_eval = [{"task_id": r["task_id"], "completion": r["canonical_solution"], "seed": i}
                  for i, r in enumerate(rows)]
    graded, summary = _eval_samples(tmp_path, problems, human_eval, "he", capsys, ".jsonl.gz")
    assert [{k: g[k] for k in ("task_id", "completion", "seed")} for g in graded] == human_eval
    assert {g["task_id"]: g["outcome"] for g in graded if not g["passed"]} == {}
    assert summary["report"]["overall"]["pass@k"]["1"] == 1.0 and summary["problems"] == 164
    assert summary["unavailable_k"] == [2] and summary["formats"] == ["human-eval"]

    # evalplus's form (the whole program in `solution`), right and wrong, in one file with extra fields kept
    plus = [{"task_id": r["task_id"], "solution": r["prompt"] + body, "model": "m"}
            for r in rows[::20] for body in (r["canonical_solution"], "    return None\n")]
    graded, summary = _eval_samples(tmp_path, problems, plus, "plus", capsys)
    assert [{k: g[k] for k in ("task_id", "solution", "model")} for g in graded] == plus
    assert [g["passed"] for g in graded] == [True, False] * len(rows[::20])
    assert summary["report"]["overall"]["pass@k"] == {"1": 0.5, "2": 1.0}


def test_eval_samples_names_the_bad_row(tmp_path, capsys):
    problems = tmp_path / "mbpp.jsonl"
    problems.write_text(json.dumps({"task_id": 601, "text": "Add.", "code": "def add(a, b):\n    return a + b\n",
                                    "test_list": ["assert add(1, 2) == 3"], "challenge_test_list": []}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": 601, "completion": "x = 1"}) + "\n"
                       + json.dumps({"task_id": 6010, "completion": "x = 1"}) + "\n")
    out = tmp_path / "out"
    assert launch.main(["eval", "--samples", str(samples), "--dataset", str(problems), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 2" in err and "6010" in err and "601 (mbpp/601)" in err
    assert not out.exists()
    assert launch.main(["eval", "--dataset", str(problems)]) == 2
    assert "--model" in capsys.readouterr().err


def test_config_places_the_eval_actors_as_its_eval_section_says(tmp_path, monkeypatch, capsys):
    """`eval --config codet5-apps`: eight eval actors, each asking Ray for a whole GPU, graded under the preset's
    sandbox limits (the call to `evaluate` is captured: no GPU here to place them on)."""
    import evaluation.command

    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise evaluation.command.EvalError("captured")

    monkeypatch.setattr(evaluation.command, "evaluate", capture)
    argv = ["eval", "--model", "tiny:gpt2", "--dataset", "synthetic", "--limit", "1", "--out", str(tmp_path / "o")]
    assert launch.main([*argv, "--config", "codet5-apps"]) == 2 and "captured" in capsys.readouterr().err
    assert seen["samplers"] == 8 and seen["actor_options"] == {"num_cpus": 2.0, "num_gpus": 1.0, "resources": {}}
    assert seen["limits"].program_timeout_s == 20.0
    assert launch.main([*argv, "--config", "codet5-apps", "--samplers", "3"]) == 2 and seen["samplers"] == 3
    assert launch.main([*argv, "--config", "nosuch"]) == 2 and "unknown preset 'nosuch'" in capsys.readouterr().err
