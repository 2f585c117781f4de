"""A whole APPS download (a folder holding train/ and test/) loads both splits; a malformed record stops a load
with its name by default and is skipped, counted and logged under ``data.skip_invalid``."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from configs import ConfigError, load_config
from tasks import ProblemFormatError, ProblemIndex, detect_format, load_problems, read_samples, write_jsonl

TRAIN, TEST = ("0001", "0111", "2287"), ("2404", "4184", "0001")  # 0001 in both splits, as APPS ids repeat


@pytest.fixture
def apps_root(shared_data, tmp_path) -> Path:
    """APPS's original layout, split into APPS/train/<id>/ and APPS/test/<id>/."""
    original = shared_data / "apps" / "original_layout"
    for split, names in (("train", TRAIN), ("test", TEST)):
        for name in names:
            shutil.copytree(original / name, tmp_path / "APPS" / split / name)
    (tmp_path / "APPS" / "README.txt").write_text("not a problem")
    return tmp_path / "APPS"


def test_apps_root_folder_loads_both_splits(apps_root, shared_data):
    assert detect_format(apps_root) == "apps-dir"
    problems = load_problems(str(apps_root))
    assert [p.problem_id for p in problems] == (
        ["apps/train/1", "apps/train/111", "apps/train/2287", "apps/test/1", "apps/test/2404", "apps/test/4184"])
    assert [p.split for p in problems] == ["train"] * 3 + ["test"] * 3
    # the same problems as in the single-split folder, split apart
    single = {p.meta["apps_id"]: p for p in load_problems(str(shared_data / "apps" / "original_layout"))}
    for problem in problems:
        reference = single[problem.meta["apps_id"]]
        assert (problem.tests, problem.prompt, problem.solutions) == (reference.tests, reference.prompt,
                                                                      reference.solutions)
    assert [p.problem_id for p in load_problems(str(apps_root), split="test")] == [
        "apps/test/1", "apps/test/2404", "apps/test/4184"]
    # a split folder of it still loads as one split
    assert {p.split for p in load_problems(str(apps_root / "test"))} == {"test"}
    # APPS's own ids: unique ones resolve, one present in both splits is refused rather than guessed
    index = ProblemIndex(problems)
    assert index.resolve(2404).problem_id == "apps/test/2404" and index.resolve("0111").split == "train"
    with pytest.raises(ValueError, match=r"'0001' is ambiguous: it names 2 problems \(apps/train/1, apps/test/1\)"):
        index.resolve("0001")


def test_malformed_problem_folder_stops_the_load_or_is_skipped(apps_root, caplog):
    bad = apps_root / "test" / "2404" / "input_output.json"
    bad.write_text('{"inputs": [')
    with pytest.raises(ProblemFormatError) as info:
        load_problems(str(apps_root))
    assert str(apps_root / "test" / "2404") in info.value.where and info.value.field == "input_output.json"
    assert "data.skip_invalid: true skips malformed records" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="tasks.records"):
        problems = load_problems(str(apps_root), skip_invalid=True)
    assert len(problems) == 5 and "apps/test/2404" not in {p.problem_id for p in problems}
    assert "skipped 1 malformed record(s), kept 5" in caplog.text and "2404" in caplog.text


def _mbpp_row(task_id: int) -> dict:
    return {"task_id": task_id, "text": "Add one.", "code": "def f(x):\n    return x + 1\n", "test_setup_code": "",
            "test_list": ["assert f(1) == 2"], "challenge_test_list": []}


def test_malformed_jsonl_records_stop_the_load_or_are_skipped_with_a_count(tmp_path, caplog):
    bad_tests = {**_mbpp_row(603), "test_list": "assert f(1) == 2"}
    lines = [json.dumps(_mbpp_row(601)), '{"task_id": 602, "text": ', json.dumps(bad_tests),
             json.dumps(_mbpp_row(601)), "[1]", json.dumps(_mbpp_row(604)), json.dumps({"task_id": True})]
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert detect_format(path) == "mbpp"
    with pytest.raises(ProblemFormatError) as info:
        load_problems(str(path))
    assert (info.value.where, info.value.line) == (str(path), 2) and "not valid JSON" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="tasks.records"):
        problems = load_problems(str(path), skip_invalid=True)
    assert [p.problem_id for p in problems] == ["mbpp/601", "mbpp/604"]
    [record] = [r for r in caplog.records if "skipped" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith(f"{path}: skipped 5 malformed record(s), kept 2")
    # the first three reasons, in file order, each naming its line; the rest counted
    assert "line 2: not valid JSON" in message and "line 3, field 'test_list': expected list" in message
    assert "line 4: problem id 'mbpp/601' again (first read at" in message and "and 2 more" in message
    assert "line 5" not in message
    # a repeated id alone is malformed too: strict names both places
    path.write_text(json.dumps(_mbpp_row(601)) + "\n" + json.dumps(_mbpp_row(601)) + "\n")
    with pytest.raises(ProblemFormatError, match=rf"line 2: problem id 'mbpp/601' again \(first read at {path}, "
                                                 r"line 1\)"):
        load_problems(str(path))


def test_sample_files_stay_strict(tmp_path):
    """skip_invalid is for problem records only: a sample that cannot be graded is always an error (dropping it
    would silently change pass@k)."""
    problems = tmp_path / "mbpp.jsonl"
    write_jsonl([_mbpp_row(601)], problems)
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task_id": 601, "completion": "x = 1"}\n{oops\n')
    with pytest.raises(ProblemFormatError, match="line 2: not valid JSON"):
        read_samples(samples, load_problems(str(problems), skip_invalid=True))


def test_config_key_data_skip_invalid():
    assert load_config("local").data.skip_invalid is False  # strict by default
    assert load_config("local", ["--data.skip_invalid=true"]).data.skip_invalid is True
    with pytest.raises(ConfigError, match="data.skip_invalid: expected bool"):
        load_config("local", ["--data.skip_invalid=sometimes"])
