"""Problems: the `Problem` contract, loaders for MBPP / HumanEval / APPS (files or dataset hub), their prompt
formats, and the generated problem family used by the offline default."""
from tasks.loaders import FORMATS, DatasetUnavailableError, detect_format, load_problems, write_problems
from tasks.problem import Problem, TestSuite
from tasks.records import ProblemFormatError
from tasks.synthetic import synthetic_family, template_kinds, templates

__all__ = [
    "FORMATS",
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "TestSuite",
    "detect_format",
    "load_problems",
    "synthetic_family",
    "template_kinds",
    "templates",
    "write_problems",
]
