"""The trusted side's view of the program's process during grading: requests under deadlines, and validation of
everything the process sends back.

Nothing the program sends changes the grader's control flow except through the two exceptions defined here,
both `BaseException`s so that test code's ``except Exception`` cannot swallow them:

- `ProgramRaised`: a call into the program raised. The program's exception is reported, never re-created on
  this side: a ``StopIteration`` does not end the test's ``all(map(...))``, an ``AssertionError`` is not a failed
  assert, a ``SystemExit`` does not exit.
- `Stop`: grading ends (timeout, dead process, memory, malformed or oversized reply); sticky, so a test that
  swallowed it with a bare ``except:`` still ends.

Error reports from the program are checked field by field (type, message, line, frames, reason from a fixed
set); a malformed one is the program's runtime error (``bad_result``), never a crash of the grader.
"""
from __future__ import annotations

import re
import time

from sandbox import wire
from sandbox.channel import ChildGone, ChildTimeout
from sandbox.verdict import CHILD_REASONS, ProgramError

_MAX_TYPE, _MAX_MESSAGE, _MAX_FRAMES, _MAX_NAME = 100, 2000, 64, 100
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Stop(BaseException):
    """Ends the test run: runtime error, timeout, dead process or bad result (status "infra": the sandbox's or
    the problem's fault, never the program's)."""

    def __init__(self, reason: str, error: ProgramError | None, status: str = "error"):
        super().__init__(reason)
        self.reason, self.error, self.status = reason, error, status


class ProgramRaised(BaseException):
    """A call into the program raised; ``reason`` and ``error`` describe it (already validated)."""

    def __init__(self, reason: str, error: ProgramError):
        super().__init__(error.type)
        self.reason, self.error = reason, error


def bad_result(message: str) -> Stop:
    return Stop("bad_result", ProgramError("BadResult", message[:500]))


def _text(value, limit: int) -> str:
    return _CONTROL.sub("?", value[:limit])


def program_error(info, program_lines: int) -> tuple[str, ProgramError]:
    """(reason, error) from the program's error report; raises a bad_result Stop when it is malformed."""
    if type(info) is not dict:
        raise bad_result("malformed error report")
    kind, message = info.get("type", "Exception"), info.get("message", "")
    line, frames, reason = info.get("line"), info.get("frames", []), info.get("reason", "")
    if type(kind) is not str or type(message) is not str or type(reason) is not str or reason not in CHILD_REASONS:
        raise bad_result("malformed error report (type, message or reason)")
    if line is not None and type(line) is not int or type(frames) is not list:
        raise bad_result("malformed error report (line or frames)")
    clean_frames = []
    for frame in frames[-_MAX_FRAMES:]:
        if type(frame) is not list or len(frame) != 2 or type(frame[1]) is not str or (
                frame[0] is not None and type(frame[0]) is not int):
            raise bad_result("malformed error report (frame)")
        clean_frames.append([frame[0] if frame[0] is not None and 1 <= frame[0] <= program_lines else None,
                             _text(frame[1], _MAX_NAME)])
    if line is not None and not 1 <= line <= program_lines:
        line = None  # e.g. the line of the wrapper's call: not a line of the program
    return reason, ProgramError(_text(kind, _MAX_TYPE) or "Exception", _text(message, _MAX_MESSAGE), line,
                                clean_frames)


class Remote:
    """Requests to the program's process under the current test's deadline; decodes replies into plain values and
    call-only handles. Trusted-side work counts too: a reply decoded after the deadline is a timeout."""

    def __init__(self, channel, program_lines: int, max_result: int, max_stdio_reply: int):
        self.channel = channel
        self.program_lines = program_lines
        self.max_result, self.max_stdio_reply = max_result, max_stdio_reply
        self.deadline = 0.0
        self.stopped: Stop | None = None

    def stop(self, stop: Stop) -> Stop:
        self.stopped = self.stopped or stop
        return self.stopped

    def check(self) -> None:
        """Re-raise a stop that test code swallowed; a test that overran its deadline is a timeout."""
        if self.stopped is not None:
            raise self.stopped
        if time.monotonic() > self.deadline:
            raise self.stop(Stop("timeout", ProgramError("Timeout", "the test did not finish in time"), "timeout"))

    def request(self, msg: dict, expect: str, max_bytes: int | None = None) -> dict:
        """The reply, which holds ``expect`` or a (validated) error; ProgramRaised for the program's error."""
        if self.stopped is not None:
            raise self.stopped
        try:
            reply = self.channel.request(msg, self.deadline, max_bytes or self.max_result)
        except ChildTimeout:
            raise self.stop(Stop("timeout", ProgramError("Timeout", "the program did not answer in time"),
                                 "timeout")) from None
        except ChildGone as exc:
            raise self.stop(Stop("exit", ProgramError("ProcessExited", str(exc)))) from None
        except wire.WireError as exc:
            raise self.stop(bad_result(str(exc))) from None
        if set(reply) - {"id", expect, "error"} or (expect not in reply and "error" not in reply):
            raise self.stop(bad_result(f"unexpected reply to {msg['op']}"))
        if reply.get("error") is None:
            return reply
        try:
            reason, error = program_error(reply["error"], self.program_lines)
        except Stop as stop:
            raise self.stop(stop) from None
        if reason or msg["op"] != "call":  # memory, exit, output limit, or an error loading / running the program
            raise self.stop(Stop(reason, error))
        raise ProgramRaised(reason, error)

    def decode(self, data):
        try:
            value = wire.decode(data, self.handle)
        except wire.WireError as exc:
            raise self.stop(bad_result(str(exc))) from None
        self.check()
        return value

    def handle(self, ref: int, type_name: str) -> wire.Handle:
        return wire.Handle(ref, type_name, self)

    def __call__(self, handle: wire.Handle, args: tuple, kwargs: dict):
        """A test calls a program object: the call runs in the program's process."""
        try:
            encoded = {"args": wire.encode(list(args)), "kwargs": wire.encode(kwargs)}
        except (TypeError, ValueError) as exc:
            raise self.stop(Stop("", ProgramError("SandboxUnsupported", f"the test passes a value the sandbox "
                                                                         f"cannot send: {exc}"), "infra")) from None
        reply = self.request({"op": "call", "h": handle.ref, **encoded}, "v")
        return self.decode(reply["v"])
