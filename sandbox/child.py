"""What runs inside the program's process: load the program, then answer the trusted side's requests.

Standard library only; imported by the fork-server before it forks, so it costs nothing per program. Everything
here is untrusted once the program has run (the program can rewrite this module or write its own replies),
which is why it never decides anything: it returns the values the trusted side asks for (the solution's names,
a call's return value, a stdio run's output) as plain data, and the trusted side validates and compares. The
expected answers are never sent here.

Requests and replies (each reply carries the request's ``id``):
  load  {code, offset, setup, stdio, names, method_of} -> {names: {name: value}} | {error}
  call  {h, args, kwargs}                             -> {v: value} | {error}
  stdio {input}                                        -> {out: hex of stdout bytes, error?} | {error}
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

import wire

PROGRAM_FILE = "<program>"


class _Session:
    def __init__(self, sock: socket.socket, max_msg: int, max_output: int):
        self.sock = sock
        self.max_msg = max_msg
        self.max_output = max_output
        self.code = None
        self.line_offset = 0
        self.namespace: dict = {}
        self.objects: dict = {}
        # A private copy of the captured-stdout file: fd 1 is restored from it before every request, so a program
        # that closes or replaces its standard output only spoils its own answer.
        self.out_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 10)

    # --- plumbing -------------------------------------------------------------------------------------------
    def to_handle(self, obj) -> int:
        ref = len(self.objects) + 1
        self.objects[ref] = obj
        return ref

    def from_handle(self, ref, _name):
        if ref not in self.objects:
            raise wire.WireError(f"unknown handle {ref}")
        return self.objects[ref]

    def reply(self, msg_id, payload: dict) -> None:
        payload["id"] = msg_id
        try:
            wire.send_msg(self.sock, payload)
        except (ValueError, OverflowError, RecursionError, TypeError) as exc:  # e.g. an int too long for JSON
            wire.send_msg(self.sock, {"id": msg_id, "error": {"type": type(exc).__name__, "message": str(exc)[:500],
                                                              "reason": "bad_result"}})

    def encode(self, value):
        return wire.encode(value, self.to_handle)

    def error(self, exc: BaseException) -> dict:
        """Type, message and the program's own frames (outermost first) of an exception."""
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename == PROGRAM_FILE:
                line = tb.tb_lineno - self.line_offset
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
        line = next((ln for ln, _ in reversed(frames) if ln is not None), None)
        return {"type": type(exc).__name__[:200], "message": message, "line": line, "frames": frames[-64:],
                "reason": reason}

    def truncate_output(self):
        try:
            sys.stdout.flush()
        except BaseException:
            pass
        os.dup2(self.out_fd, 1)
        os.ftruncate(self.out_fd, 0)
        os.lseek(self.out_fd, 0, os.SEEK_SET)

    # --- requests -------------------------------------------------------------------------------------------
    def load(self, msg) -> dict:
        """Run the program (compiled on the trusted side, which also reported any compile error) and the problem's
        setup code, then return the names the tests will use (and only those)."""
        self.line_offset = int(msg["offset"])
        self.code = marshal.loads(bytes.fromhex(msg["code"]))
        if msg["stdio"]:
            return {"names": {}}
        self.namespace = {"__name__": "__program__", "__builtins__": builtins}
        try:
            self.truncate_output()
            exec(self.code, self.namespace)
            if msg.get("setup"):
                exec(marshal.loads(bytes.fromhex(msg["setup"])), self.namespace)
            names, instance = {}, None
            for name in msg["names"]:
                if name in self.namespace:
                    names[name] = self.encode(self.namespace[name])
                elif msg.get("method_of") in self.namespace:  # APPS: `class Solution` with the method to call
                    if instance is None:
                        instance = self.namespace[msg["method_of"]]()
                    names[name] = self.encode(getattr(instance, name))
        except BaseException as exc:  # everything the program raises is reported, SystemExit included
            return {"error": self.error(exc)}
        return {"names": names}

    def call(self, msg) -> dict:
        decoder = wire.Decoder(self.from_handle, wire.Caps(max_depth=1000, max_items=1 << 30), builtins_ok=True)
        target = self.from_handle(msg["h"], "")
        args, kwargs = decoder.decode(msg["args"]), decoder.decode(msg["kwargs"])
        try:
            self.truncate_output()
            value = target(*args, **kwargs)
        except BaseException as exc:
            return {"error": self.error(exc)}
        try:
            return {"v": self.encode(value)}
        except (ValueError, RecursionError) as exc:  # nested too deeply to send
            return {"error": {**self.error(exc), "reason": "bad_result"}}

    def stdio(self, msg) -> dict:
        """Run the whole program as ``__main__`` on one input; reply with the bytes it wrote to standard output."""
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
            error = error or self.error(exc)
        size = os.fstat(self.out_fd).st_size
        if size > self.max_output:
            return {"error": {"type": "OutputLimit", "message": f"wrote {size} bytes to stdout",
                              "reason": "output_limit"}}
        out = os.pread(self.out_fd, size, 0).hex()
        return {"out": out, "error": error} if error else {"out": out}


def serve(sock: socket.socket, max_msg: int, max_output: int) -> None:
    """Answer requests until the trusted side closes the channel or the fork-server kills this process."""
    session = _Session(sock, max_msg, max_output)
    reader = wire.FrameReader(sock)
    handlers = {"load": session.load, "call": session.call, "stdio": session.stdio}
    while True:
        try:
            msg = reader.recv(max_msg)
            handler = handlers[msg["op"]]
        except (wire.WireError, OSError, KeyError, TypeError):
            # Wait for the fork-server's kill instead of exiting: an exit here would only wake it for nothing.
            while True:
                signal.pause()
        try:
            payload = handler(msg)
        except BaseException as exc:  # the program sabotaged this runtime (closed files, patched modules, ...)
            payload = {"error": session.error(exc)}
        session.reply(msg.get("id"), payload)
