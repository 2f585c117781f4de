"""Reading raw records (problems, samples) from disk and writing JSONL, and the error every loader raises for a
malformed record.

Records come from JSONL (optionally gzip-compressed) or from a JSON list; each is yielded with the line it starts
on, so that a bad row can be reported as "file, line N, field F". `RecordReader` validates one field of one
record and raises `ProblemFormatError` naming all three; `InvalidRecords` decides what a malformed record does to a
load: stop it (the default), or be skipped, counted and logged (``skip_invalid``).
"""
from __future__ import annotations

import gzip
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def _raise(error: ProblemFormatError) -> None:
    raise error


def iter_records(path: Path, on_error: Callable[[ProblemFormatError], None] = _raise
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, record)`` for every object in a JSONL file or a JSON list file.

    A JSONL line that is not a JSON object goes to ``on_error`` (which raises by default; `InvalidRecords.add`
    may skip it instead). A JSON list is walked item by item with ``raw_decode`` so each item keeps the line it
    starts on; a syntax error there ends the file, so it always raises.
    """
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _iter_json_list(path, text, on_error)
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            on_error(ProblemFormatError(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line_no))
            continue
        if not isinstance(record, dict):
            on_error(ProblemFormatError(path, f"expected a JSON object, got {type(record).__name__}", line_no))
            continue
        yield line_no, record


def _iter_json_list(path: Path, text: str, on_error: Callable[[ProblemFormatError], None]
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
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
        if isinstance(record, dict):
            yield line_no, record
        else:
            on_error(ProblemFormatError(path, f"expected a JSON object, got {type(record).__name__}", line_no))
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: str | Path) -> int:
    """Write rows as JSONL to a file (gzip when its name ends in .gz; folders made as needed) or to standard output
    (``"-"``); returns how many."""
    if str(out) == "-":
        return _write_lines(rows, sys.stdout)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        return _write_lines(rows, handle)


def _write_lines(rows: Iterable[Mapping[str, Any]], handle) -> int:
    count = 0
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def first_record(path: Path) -> dict[str, Any] | None:
    """The first record of a file, for format detection (lines that are not JSON objects are passed over: the load
    itself reports them); None when the file has none or is not JSON."""
    try:
        for _, record in iter_records(path, on_error=lambda error: None):
            return record
    except ProblemFormatError:
        return None
    return None


class InvalidRecords:
    """What malformed records do to one load. Strict (the default): the first one stops the load, its error naming
    the record. ``skip``: each is left out and counted, and `report` logs the count with the first few reasons."""

    SHOWN = 3
    HINT = " (data.skip_invalid: true skips malformed records)"

    def __init__(self, source: str | Path, skip: bool = False):
        self.source = str(source)
        self.skip = skip
        self.errors: list[ProblemFormatError] = []

    def add(self, error: ProblemFormatError) -> None:
        if not self.skip:
            raise ProblemFormatError(error.where, error.detail + self.HINT, error.line, error.field) from None
        self.errors.append(error)

    def convert(self, convert: Callable[..., T], *args: Any) -> T | None:
        """``convert(*args)``, or None when it raises `ProblemFormatError` and malformed records are skipped."""
        try:
            return convert(*args)
        except ProblemFormatError as error:
            self.add(error)
            return None

    def report(self, kept: int) -> None:
        if self.errors:
            reasons = "; ".join(str(e) for e in self.errors[: self.SHOWN])
            more = f"; and {len(self.errors) - self.SHOWN} more" if len(self.errors) > self.SHOWN else ""
            log.warning("%s: skipped %d malformed record(s), kept %d (data.skip_invalid): %s%s",
                        self.source, len(self.errors), kept, reasons, more)


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
