"""What runs inside the program's process: load the program, then answer the trusted side's requests.

Standard library only; imported by the fork-server before it forks, so it costs nothing per program. Everything
here is untrusted once the program has run (the program can rewrite this module), which is why it only ever
sends plain data back and never decides whether a test passed: the trusted side asks for a function's return
value or a stdio run's output, and compares on its own side. The expected answers are never sent here.
"""
from __future__ import annotations

import builtins
import errno
import fcntl
import marshal
import os
import resource
import signal
import socket
import sys
import types

import wire

PROGRAM_FILE = "<program>"


class _Session:
    def __init__(self, sock: socket.socket, max_msg: int, max_result: int, max_output: int):
        self.sock = sock
        self.max_msg = max_msg
        self.max_result = max_result
        self.max_output = max_output
        self.code = None
        self.line_offset = 0
        self.namespace: dict = {}
        self.objects: dict = {}
        self.stdio = False
        # A private copy of the captured-stdout file: fd 1 is restored from it before every test, so a program
        # that closes or replaces its standard output only spoils its own answer.
        self.out_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 10)

    # --- plumbing -------------------------------------------------------------------------------------------
    def to_handle(self, obj):
        ref = len(self.objects) + 1
        self.objects[ref] = obj
        return wire.Handle(ref, type(obj).__name__)

    def from_handle(self, ref, _name):
        if ref not in self.objects:
            raise wire.WireError(f"unknown handle {ref}")
        return self.objects[ref]

    def reply_value(self, value, **extra):
        try:
            payload = {"v": wire.encode(value, self.to_handle), **extra}
        except (ValueError, RecursionError, TypeError) as exc:
            return self.reply({"error": {"type": type(exc).__name__, "message": str(exc), "reason": "bad_result"}})
        self.reply(payload)

    def reply(self, payload):
        try:
            wire.send_msg(self.sock, payload)
        except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an int too long for JSON
            wire.send_msg(self.sock, {"error": {"type": type(exc).__name__, "message": str(exc)[:500],
                                                "reason": "bad_result"}})

    def error(self, exc: BaseException, where_offset: int | None = None) -> dict:
        """Type, message and the program's own frames (outermost first) of an exception."""
        offset = self.line_offset if where_offset is None else where_offset
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename == PROGRAM_FILE:
                line = tb.tb_lineno - offset
                frames.append([line if line >= 1 else None, code.co_name])
            tb = tb.tb_next
        try:
            message = str(exc)[:2000]
        except BaseException:  # a program exception whose __str__ itself fails
            message = "<unprintable>"
        reason = ""
        if isinstance(exc, MemoryError):
            reason = "memory"
        elif isinstance(exc, SystemExit):
            reason = "exit"
        elif isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            reason = "output_limit"
        line = None
        for frame_line, _ in reversed(frames):
            if frame_line is not None:
                line = frame_line
                break
        return {"type": type(exc).__name__[:200], "message": message, "line": line, "frames": frames,
                "reason": reason}

    # --- requests -------------------------------------------------------------------------------------------
    def load(self, msg) -> None:
        """Run the program (compiled on the trusted side, which also reported any compile error) and its
        setup code, then describe the names it defined."""
        self.stdio = bool(msg["stdio"])
        self.line_offset = int(msg["offset"])
        self.code = marshal.loads(bytes.fromhex(msg["code"]))
        setup = marshal.loads(bytes.fromhex(msg["setup"])) if msg.get("setup") else None
        if self.stdio:
            return self.reply({"names": {}})
        self.namespace = {"__name__": "__program__", "__builtins__": builtins}
        try:
            self.truncate_output()
            exec(self.code, self.namespace)
            if setup is not None:
                exec(setup, self.namespace)
        except BaseException as exc:  # everything the program raises is reported, SystemExit included
            return self.reply({"error": self.error(exc)})
        self.reply({"names": self.describe_names()})

    def describe_names(self) -> dict:
        names = {}
        for name, value in list(self.namespace.items()):
            if name.startswith("__") or type(name) is not str:
                continue
            if isinstance(value, types.ModuleType):
                names[name] = {"k": "module", "m": str(getattr(value, "__name__", ""))[:200]}
                continue
            try:  # small plain values travel as values, everything else (functions, classes, ...) as handles
                encoded = wire.encode(value)
                if len(str(encoded)) > 4096:
                    raise ValueError("large")
            except (TypeError, ValueError, RecursionError):
                encoded = wire.encode(self.to_handle(value))
            names[name] = {"k": "value", "v": encoded}
        return names

    def target(self, spec):
        if "name" in spec:
            return self.namespace[spec["name"]]
        return self.from_handle(spec["h"], "")

    def truncate_output(self):
        try:
            sys.stdout.flush()
        except BaseException:
            pass
        os.dup2(self.out_fd, 1)
        os.ftruncate(self.out_fd, 0)
        os.lseek(self.out_fd, 0, os.SEEK_SET)

    def operate(self, msg) -> None:
        try:
            obj = self.target(msg["target"])
            args = wire.decode(msg.get("args", []), self.from_handle)
        except (KeyError, wire.WireError) as exc:
            return self.reply({"error": {"type": "SandboxProtocolError", "message": str(exc), "reason": "bad_result"}})
        op = msg["op"]
        try:
            self.truncate_output()
            if op == "call":
                value = obj(*args[0], **args[1])
            elif op == "getattr":
                value = getattr(obj, args[0])
            elif op == "list":
                value = list(obj)
            elif op == "len":
                value = len(obj)
            elif op == "bool":
                value = bool(obj)
            elif op == "getitem":
                value = obj[args[0]]
            elif op == "contains":
                value = args[0] in obj
            elif op == "str":
                value = str(obj)
            else:
                raise wire.WireError(f"unknown operation {op!r}")
        except BaseException as exc:
            return self.reply({"error": self.error(exc)})
        self.reply_value(value)

    def run_stdio(self, msg) -> None:
        """Run the whole program as ``__main__`` on one input; reply with what it wrote to standard output."""
        data = msg["input"].encode("utf-8", "surrogateescape")
        fd = os.open("stdin.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the input is not the program's output
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        os.lseek(fd, 0, os.SEEK_SET)
        if fd != 0:  # fd 0 is free when the previous run closed it (e.g. `open(0).read()`)
            os.dup2(fd, 0)
            os.close(fd)
        self.truncate_output()
        sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        error = None
        try:
            exec(self.code, {"__name__": "__main__", "__builtins__": builtins})
        except SystemExit:
            pass  # ends a stdio program normally; its output so far is its answer
        except BaseException as exc:
            error = self.error(exc)
        try:
            sys.stdout.flush()
        except BaseException as exc:
            if error is None:
                error = self.error(exc)
        size = os.fstat(self.out_fd).st_size
        if size > self.max_output:
            return self.reply({"error": {"type": "OutputLimit", "message": f"wrote {size} bytes to stdout",
                                         "reason": "output_limit"}})
        out = os.pread(self.out_fd, size, 0).decode("utf-8", "replace")
        self.reply({"out": out, "error": error} if error else {"out": out})


def serve(sock: socket.socket, max_msg: int, max_result: int, max_output: int) -> None:
    """Answer requests until the trusted side closes the channel or the fork-server kills this process."""
    session = _Session(sock, max_msg, max_result, max_output)
    handlers = {"load": session.load, "stdio": session.run_stdio}
    while True:
        try:
            msg = wire.recv_msg(sock, max_msg)
        except (wire.WireError, OSError):
            # Wait for the fork-server's kill instead of exiting: an exit here would only wake it for nothing.
            while True:
                signal.pause()
        handler = handlers.get(msg.get("op") if isinstance(msg, dict) else None, session.operate)
        try:
            handler(msg)
        except BaseException as exc:  # the program sabotaged this runtime (closed files, patched modules, ...)
            session.reply({"error": session.error(exc)})
