"""`load_problems`: one entry point from a local path, a dataset hub name or "synthetic" to a list of `Problem`s.

Also detects a file's format, reads and writes the project's own JSONL of `Problem.to_dict()` (format "rltf"),
and fails fast, in one sentence, when a hub dataset is asked for on a machine that cannot reach the hub. A
malformed record stops a load with an error naming it, or, with ``skip_invalid``, is left out and counted in the log.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from tasks import benchmarks
from tasks.problem import Problem, TestSuite
from tasks.records import (InvalidRecords, ProblemFormatError, RecordReader, first_record, iter_records,
                           write_jsonl)

FORMATS = ("mbpp", "mbpp-sanitized", "humaneval", "apps", "apps-dir", "synthetic", "rltf")
# A new dataset: a loader ``(source, split) -> list[Problem]`` named here; ``--data.format=<name>`` (and ``launch.py
# eval --format <name>``) then loads it, followed by the usual split and limit selection.
LOADERS: dict[str, Callable[[str, str | None], list[Problem]]] = {}
KNOWN_SPLITS: dict[str, tuple[str, ...]] = {
    "mbpp": benchmarks.MBPP_SPLITS,
    "mbpp-sanitized": benchmarks.MBPP_SPLITS,
    "humaneval": benchmarks.HUMANEVAL_SPLITS,
    "apps": benchmarks.APPS_SPLITS,
    "apps-dir": benchmarks.APPS_SPLITS,
    "synthetic": ("train", "heldout"),
}
# Hub names (and short aliases) -> the format their rows have.
HUB_DATASETS = {
    "google-research-datasets/mbpp": "mbpp",
    "mbpp": "mbpp",
    "openai/openai_humaneval": "humaneval",
    "openai_humaneval": "humaneval",
    "codeparrot/apps": "apps",
}
TEST_KINDS = ("assert", "stdio", "call", "check")
# One record to convert: where it is (file or problem directory, line) and the call that makes its Problem.
Job = tuple[str | Path, int | None, Callable[[], Problem | None]]


class DatasetUnavailableError(RuntimeError):
    """A dataset hub name that cannot be loaded here (offline machine, unknown name)."""


def load_problems(source: str, fmt: str | None = None, split: str | None = None,
                  limit: int | None = None, skip_invalid: bool = False) -> list[Problem]:
    """Load problems from ``source``: a file, a directory, a dataset hub name, or ``synthetic[:options]``.

    ``fmt`` is one of `FORMATS`, or None to detect it from the file name / content. ``split`` keeps only the
    problems of that split (an unknown split, or one with no problems in the source, is an error). ``limit``
    keeps the first N after the split filter. A malformed record (or a second record with a problem id already
    read) raises `ProblemFormatError` naming it; with ``skip_invalid`` it is left out, and the count and the first
    few reasons go to the log.
    """
    if fmt is not None and fmt not in FORMATS and fmt not in LOADERS:
        raise ValueError(f"unknown problem format {fmt!r}; known formats: {', '.join([*FORMATS, *LOADERS])}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if fmt in LOADERS:
        return _select(LOADERS[fmt](source, split), source, fmt, split, limit)
    if split is not None and fmt in KNOWN_SPLITS and split not in KNOWN_SPLITS[fmt]:
        raise ValueError(f"format {fmt!r} has no split {split!r}; its splits: {', '.join(KNOWN_SPLITS[fmt])}")

    path = Path(source).expanduser()
    if source == "synthetic" or source.startswith("synthetic:"):
        if fmt not in (None, "synthetic"):
            raise ValueError(f"source {source!r} is the generated family; it has format 'synthetic', not {fmt!r}")
        fmt = "synthetic"
        problems = _load_synthetic(source)
    elif path.exists():
        fmt = fmt or detect_format(path)
        problems = _load_path(path, fmt, skip_invalid, split=split)
    elif source in HUB_DATASETS or (fmt in ("mbpp", "mbpp-sanitized", "humaneval", "apps") and _hub_like(source)):
        fmt = fmt or HUB_DATASETS[source]
        problems = _load_hub(source, fmt, split, skip_invalid)
    else:
        raise FileNotFoundError(
            f"problem source {source!r} is neither an existing file or directory, nor 'synthetic', nor a known "
            f"dataset hub name ({', '.join(sorted(HUB_DATASETS))}); for another hub dataset, pass fmt too"
        )
    return _select(problems, source, fmt, split, limit)


def _hub_like(source: str) -> bool:
    """'owner/name' rather than a (mistyped) local path."""
    looks_like_file = source.endswith((".json", ".jsonl", ".gz")) or source.startswith(("/", ".", "~"))
    return source.count("/") == 1 and not looks_like_file


def _select(problems: list[Problem], source: str, fmt: str, split: str | None, limit: int | None) -> list[Problem]:
    if split is not None:
        if fmt in KNOWN_SPLITS and split not in KNOWN_SPLITS[fmt]:
            raise ValueError(f"format {fmt!r} has no split {split!r}; its splits: {', '.join(KNOWN_SPLITS[fmt])}")
        selected = [p for p in problems if p.split == split]
        if not selected and problems:
            present = sorted({p.split for p in problems})
            raise ValueError(f"{source} has no problems in split {split!r}; it has splits: {', '.join(present)}")
        problems = selected
    return problems if limit is None else problems[:limit]


def detect_format(path: Path) -> str:
    """The format of a local file or directory, from its layout and its first record's fields."""
    path = Path(path)
    if path.is_dir():
        if _apps_problem_dirs(path) or _apps_split_folders(path):
            return "apps-dir"
        raise ValueError(f"cannot detect the problem format of directory {path}: it is not in APPS's per-problem "
                         f"layout (question.txt, input_output.json, ..., in <id>/ folders, optionally under train/ "
                         f"and test/); known formats: {', '.join(FORMATS)}")
    record = first_record(path)
    keys = set(record) if record else set()
    if {"problem_id", "source", "prompt", "tests"} <= keys:
        return "rltf"
    if {"task_id", "text", "test_list"} <= keys:
        return "mbpp"
    if {"task_id", "prompt", "test_list"} <= keys:
        return "mbpp-sanitized"
    if {"task_id", "prompt", "entry_point", "test"} <= keys:
        return "humaneval"
    if {"question", "input_output"} <= keys:
        return "apps"
    found = f"its first record has fields {sorted(keys)}" if record else "it holds no JSON records"
    raise ValueError(f"cannot detect the problem format of {path}: {found}; pass one of: {', '.join(FORMATS)}")


def _apps_split_from_path(path: Path) -> str:
    """APPS keeps one split per file (hub: train.jsonl / test.jsonl) or per folder (original layout: APPS/test/0001):
    'test' when the file name, or the folder (or a single problem folder's parent) is called so; else 'train'."""
    path = path.resolve()
    if path.is_file():
        return "test" if "test" in re.split(r"[^a-z]+", path.name.lower()) else "train"
    folder = path.parent if benchmarks.is_apps_problem_dir(path) else path
    return "test" if folder.name.lower() == "test" else "train"


ROW_CONVERTERS: dict[str, Callable[[RecordReader], Problem]] = {
    "mbpp": benchmarks.mbpp_problem,
    "mbpp-sanitized": benchmarks.mbpp_sanitized_problem,
    "humaneval": benchmarks.humaneval_problem,
}


def _apps_problem_dirs(folder: Path) -> list[Path]:
    """The problem folders of one APPS split folder (or the folder itself when it is one problem)."""
    if benchmarks.is_apps_problem_dir(folder):
        return [folder]
    return sorted((c for c in folder.iterdir() if benchmarks.is_apps_problem_dir(c)), key=lambda c: c.name)


def _apps_split_folders(root: Path) -> dict[str, Path]:
    """A whole APPS download (``APPS/train/<id>/``, ``APPS/test/<id>/``): its split folders that hold problems."""
    folders = {c.name.lower(): c for c in root.iterdir() if c.is_dir() and c.name.lower() in benchmarks.APPS_SPLITS}
    return {split: folders[split] for split in benchmarks.APPS_SPLITS
            if split in folders and any(benchmarks.is_apps_problem_dir(c) for c in folders[split].iterdir())}


def _load_path(path: Path, fmt: str, skip_invalid: bool = False, split: str | None = None,
               apps_split: str | None = None) -> list[Problem]:
    """The problems of a local file or folder. ``split`` lets an APPS root folder read only that split's folder
    (the caller still filters); ``apps_split`` names the split of an APPS file or folder that does not say it."""
    if fmt != "apps-dir" and path.is_dir():
        raise ValueError(f"format {fmt!r} needs a file, got directory {path}")
    if fmt == "synthetic":
        raise ValueError(f"format 'synthetic' is generated, not read from a file ({path}): use source 'synthetic'")
    invalid = InvalidRecords(path, skip_invalid)
    return _collect(_record_jobs(path, fmt, split, apps_split, invalid), invalid)


def _record_jobs(path: Path, fmt: str, split: str | None, apps_split: str | None,
                 invalid: InvalidRecords) -> Iterator[Job]:
    if fmt == "apps-dir":
        if not path.is_dir():
            raise ValueError(f"format 'apps-dir' needs a directory, got file {path}")
        problem_dirs = _apps_problem_dirs(path)
        if problem_dirs:  # one split's folder, or one problem
            folders = [(apps_split or _apps_split_from_path(path), problem_dirs)]
        else:  # a whole download: train/ and test/
            folders = [(s, _apps_problem_dirs(f)) for s, f in _apps_split_folders(path).items() if split in (None, s)]
        for folder_split, dirs in folders:
            for problem_dir in dirs:
                yield problem_dir, None, partial(benchmarks.apps_dir_problem, problem_dir, folder_split)
        return
    if fmt == "apps":
        convert = partial(benchmarks.apps_problem, split=apps_split or _apps_split_from_path(path))
    else:
        convert = problem_from_record if fmt == "rltf" else ROW_CONVERTERS[fmt]
    for line, record in iter_records(path, on_error=invalid.add):
        yield path, line, partial(convert, RecordReader(record, path, line))


def _collect(jobs: Iterable[Job], invalid: InvalidRecords) -> list[Problem]:
    """Run the conversions; a malformed record, or a second one with an id already read, goes to ``invalid``.
    None (an APPS problem without tests) is no error: there is just nothing to train or grade on."""
    problems: list[Problem] = []
    first_at: dict[str, str] = {}
    for where, line, convert in jobs:
        problem = invalid.convert(convert)
        if problem is None:
            continue
        if problem.problem_id in first_at:
            invalid.add(ProblemFormatError(where, f"problem id {problem.problem_id!r} again (first read at "
                                                  f"{first_at[problem.problem_id]})", line))
            continue
        first_at[problem.problem_id] = f"{where}, line {line}" if line is not None else str(where)
        problems.append(problem)
    invalid.report(len(problems))
    return problems


def problem_from_record(reader: RecordReader) -> Problem:
    """One line of our own JSONL (``Problem.to_dict()``), validated field by field."""
    allowed = {f.name for f in dataclasses.fields(Problem)}
    unknown = sorted(set(reader.record) - allowed)
    if unknown:
        raise reader.error(unknown[0], f"not a Problem field (fields: {', '.join(sorted(allowed))})")
    for name in ("problem_id", "source", "prompt"):
        reader.get(name, str)
    suites = {"tests": reader.get("tests", dict)}
    if reader.record.get("grading_tests") is not None:
        suites["grading_tests"] = reader.get("grading_tests", dict)
    for name, suite in suites.items():
        suite_fields = {f.name for f in dataclasses.fields(TestSuite)}
        extra = sorted(set(suite) - suite_fields)
        if extra:
            raise reader.error(f"{name}.{extra[0]}", "not a TestSuite field")
        if suite.get("kind") not in TEST_KINDS:
            raise reader.error(f"{name}.kind", f"expected one of {', '.join(TEST_KINDS)}, got {suite.get('kind')!r}")
        if not isinstance(suite.get("cases"), list):
            raise reader.error(f"{name}.cases", "expected a list")
    try:
        return Problem.from_dict(reader.record)
    except TypeError as exc:
        raise reader.error(None, f"not a Problem record ({exc})") from None


def write_problems(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write problems as JSONL of ``Problem.to_dict()`` (gzip when the name ends in .gz); read back with
    ``load_problems(path)`` (format "rltf")."""
    write_jsonl((problem.to_dict() for problem in problems), path)
    return Path(path)


def _load_synthetic(source: str) -> list[Problem]:
    from tasks.synthetic import family_from_spec

    return family_from_spec(source)


# ----------------------------------------------------------------------------------------------- dataset hub


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached, or None. One short TCP connect instead of the libraries' retry loops
    (about 25 s of back-off on an offline machine)."""
    if _env_flag("HF_HUB_OFFLINE") or _env_flag("HF_DATASETS_OFFLINE"):
        return "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=3.0):
            return None
    except OSError as exc:
        return f"{parsed.hostname} cannot be reached ({exc.__class__.__name__})"


def _load_hub(name: str, fmt: str, split: str | None, skip_invalid: bool) -> list[Problem]:
    reason = _hub_unreachable_reason()
    if reason is not None:
        raise DatasetUnavailableError(
            f"The dataset '{name}' is not available offline: {reason}; download its files and pass their local "
            f"path instead.")
    try:
        if fmt == "apps":
            return _load_hub_apps(name, split, skip_invalid)
        return _load_hub_rows(name, fmt, split, skip_invalid)
    except ProblemFormatError:
        raise
    # the hub libraries raise many types; the user needs one sentence
    except Exception as exc:  # noqa: BLE001
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DatasetUnavailableError(
            f"The dataset '{name}' could not be loaded from the dataset hub ({type(exc).__name__}: {first_line})."
        ) from None


def _load_hub_rows(name: str, fmt: str, split: str | None, skip_invalid: bool) -> list[Problem]:
    """MBPP and HumanEval through `datasets` (parquet on the hub); rows have the same fields as the files."""
    import datasets

    if fmt in ("mbpp", "mbpp-sanitized"):
        config = "sanitized" if fmt == "mbpp-sanitized" else "full"
        loaded = datasets.load_dataset(name, config)
    elif fmt == "humaneval":
        loaded = datasets.load_dataset(name)
    else:
        raise ValueError(f"format {fmt!r} cannot be loaded from the dataset hub")
    convert = ROW_CONVERTERS[fmt]

    def jobs() -> Iterator[Job]:
        for hub_split, rows in loaded.items():
            if split is None or hub_split == split or fmt == "humaneval":
                where = f"{name} (hub split {hub_split})"
                for line, row in enumerate(rows, start=1):
                    yield where, line, partial(convert, RecordReader(dict(row), where, line))

    problems = _collect(jobs(), InvalidRecords(name, skip_invalid))
    problems.sort(key=lambda p: p.meta.get("task_id") if isinstance(p.meta.get("task_id"), int) else 0)
    return problems


def _load_hub_apps(name: str, split: str | None, skip_invalid: bool) -> list[Problem]:
    """APPS: the hub repository keeps one JSONL per split (its loading script is unsupported by datasets >= 4),
    read with the same code as a local file."""
    from huggingface_hub import hf_hub_download

    problems: list[Problem] = []
    for apps_split in ([split] if split else list(benchmarks.APPS_SPLITS)):
        local = hf_hub_download(repo_id=name, filename=f"{apps_split}.jsonl", repo_type="dataset")
        problems.extend(_load_path(Path(local), "apps", skip_invalid, apps_split=apps_split))
    return problems
