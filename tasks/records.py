"""Reading raw problem records from disk, and the error every loader raises for a malformed one.

Records come from JSONL (optionally gzip-compressed) or from a JSON list; each is yielded with the line it starts
on, so that a bad row can be reported as "file, line N, field F". The small `field_*` helpers validate one field
of one record and raise `ProblemFormatError` naming all three.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ProblemFormatError(ValueError):
    """A problem record that cannot be read. ``where`` is a file (or problem directory), ``line`` the 1-based line
    the record starts on when known, ``field`` the offending field when known."""

    def __init__(self, where: str | Path, message: str, line: int | None = None, field: str | None = None):
        self.where = str(where)
        self.line = line
        self.field = field
        self.detail = message
        parts = [self.where]
        if line is not None:
            parts.append(f"line {line}")
        if field is not None:
            parts.append(f"field '{field}'")
        super().__init__(", ".join(parts) + f": {message}")


def open_text(path: Path):
    """Open a text file, transparently gunzipping ``*.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_text(path: Path) -> str:
    try:
        with open_text(path) as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise ProblemFormatError(path, f"cannot read the file ({exc})") from exc


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, record)`` for every object in a JSONL file or a JSON list file.

    A JSON list is walked item by item with ``raw_decode`` so each item keeps the line it starts on.
    """
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _iter_json_list(path, text)
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProblemFormatError(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line_no) from exc
        if not isinstance(record, dict):
            raise ProblemFormatError(path, f"expected a JSON object, got {type(record).__name__}", line_no)
        yield line_no, record


def _iter_json_list(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise ProblemFormatError(path, "unterminated JSON list", text.count("\n", 0, pos) + 1)
        if text[pos] == "]":
            return
        line_no = text.count("\n", 0, pos) + 1
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ProblemFormatError(path, f"not valid JSON ({exc.msg})", exc.lineno) from exc
        if not isinstance(record, dict):
            raise ProblemFormatError(path, f"expected a JSON object, got {type(record).__name__}", line_no)
        yield line_no, record
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def first_record(path: Path) -> dict[str, Any] | None:
    """The first record of a file, for format detection; None when the file has none or is not JSON."""
    try:
        for _, record in iter_records(path):
            return record
    except ProblemFormatError:
        return None
    return None


class RecordReader:
    """Field access on one record that reports malformed fields with file, line and field name."""

    def __init__(self, record: dict[str, Any], where: str | Path, line: int | None = None):
        self.record = record
        self.where = where
        self.line = line

    def error(self, field: str | None, message: str) -> ProblemFormatError:
        return ProblemFormatError(self.where, message, self.line, field)

    def get(self, field: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
        """The field's value, checked against ``types``; ``default`` (when given) replaces a missing or null one."""
        if field not in self.record:
            if default is ...:
                raise self.error(field, "missing")
            return default
        value = self.record[field]
        if value is None and default is not ...:
            return default
        # bool is an int subclass: a JSON true where a number belongs is malformed.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            raise self.error(field, f"expected {_type_names(types)}, got {type(value).__name__} {_short(value)}")
        return value

    def str_list(self, field: str, default: Any = ...) -> list[str]:
        value = self.get(field, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{field}[{i}]", f"expected a string, got {type(item).__name__} {_short(item)}")
        return value

    def json_string(self, field: str, default: Any = ...) -> Any:
        """A field that holds JSON encoded as a string (APPS's ``input_output`` and ``solutions``); an already
        decoded value is accepted as is. An empty string gives ``default``."""
        value = self.get(field, (str, list, dict), default)
        if not isinstance(value, str):
            return value
        if not value.strip():
            if default is ...:
                raise self.error(field, "empty")
            return default
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise self.error(field, f"not a valid JSON string ({exc.msg} at char {exc.pos})") from exc


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
