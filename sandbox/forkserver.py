"""Trusted-side handle on one fork-server process (sandbox/server.py): start it isolated, run jobs, stop it.

``ForkServer.run(problem, program)`` is the whole life of one program: ask the server to fork a child wired to a
fresh socket, grade it over that socket (sandbox/grading.py), then have the server kill everything the program
left and report how the child ended. One job at a time per ForkServer; pools hold several.
"""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from configs.schema import SandboxConfig
from sandbox import wire
from sandbox.verdict import ProgramError, Verdict

log = logging.getLogger(__name__)

SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")
_UID_BASE = 1_000_000  # per-worker uid = base + the unshare process's pid: unique among live workers


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be set up on this machine (isolation="full" without namespaces)."""


class ServerDied(RuntimeError):
    """The fork-server process itself is gone: an infrastructure failure, never the program's."""


class ChildGone(Exception):
    """The program's process ended without answering."""


class ChildTimeout(Exception):
    """No answer before the deadline."""


def _readonly_paths() -> list[str]:
    """What the program may see (read-only): the system directories and the interpreter, nothing else."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.dirname(os.path.dirname(exe))
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", prefix]
    return [p for p in paths if os.path.lexists(p)]


def _world_traversable(path: str) -> bool:
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        try:
            if not os.stat(os.sep.join(parts[:i])).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


class ForkServer:
    """One fork-server process. ``info`` says what isolation it actually got:
    ``{"pid1": bool, "root": bool, "isolated": bool, "seccomp": bool, "namespaces": bool}``."""

    def __init__(self, limits: SandboxConfig | None = None):
        self.limits = limits or SandboxConfig()
        if self.limits.isolation not in ("auto", "full", "none"):
            raise ValueError(f"SandboxConfig.isolation must be auto, full or none, not {self.limits.isolation!r}")
        self.proc: subprocess.Popen | None = None
        self.ctrl: socket.socket | None = None
        self.info: dict = {}
        self._scratch_host: str | None = None
        self.last_status: dict | None = None  # how the last collected child ended (exit code / signal, rusage)
        self._lock = threading.Lock()
        self.start()

    # --- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        wanted = self.limits.isolation
        if wanted != "none":
            try:
                self._spawn(namespaces=True)
                return
            except (OSError, ServerDied) as exc:
                self._kill_process()
                if wanted == "full":
                    raise SandboxUnavailable(f"cannot start the sandbox with namespaces: {exc}") from exc
                log.warning("sandbox: namespaces unavailable (%s); falling back to rlimits only", exc)
        self._spawn(namespaces=False)

    def _spawn(self, namespaces: bool) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        python = os.path.realpath(sys.executable)
        cmd = [python, "-S", "-s", "-B", SERVER_SCRIPT, str(theirs.fileno())]
        if namespaces:
            unshare = shutil.which("unshare")
            if unshare is None:
                raise OSError("the `unshare` program (util-linux) is not installed")
            flags = ["--pid", "--net", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]
            if os.geteuid() != 0:
                flags = ["--user", "--map-root-user"] + flags
            cmd = [unshare, *flags, *cmd]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}  # hashing is reproducible
        self.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        theirs.close()
        self.ctrl = ours
        if not namespaces:
            self._scratch_host = tempfile.mkdtemp(prefix="rltf-sandbox-")
            os.chmod(self._scratch_host, 0o711)
        init = {
            "uid": _UID_BASE + self.proc.pid,
            "limits": {k: getattr(self.limits, k) for k in (
                "program_timeout_s", "memory_mb", "max_output_bytes", "max_file_bytes", "max_open_files",
                "max_processes", "max_result_bytes")},
            "isolate": namespaces,
            "ro_paths": _readonly_paths(),
            "scratch_bytes": max(64 << 20, 8 * self.limits.max_file_bytes),
            "scratch_root": self._scratch_host,
        }
        ours.send(json.dumps(init).encode())
        hello = self._ctrl_recv(timeout=30.0)
        if not hello.get("ok"):
            raise ServerDied(f"sandbox server failed to start: {hello.get('error')}")
        self.info = {**hello, "namespaces": namespaces}
        if not namespaces and hello.get("root") and not _world_traversable(os.path.realpath(sys.executable)):
            log.warning("sandbox without namespaces: programs run as an unprivileged uid that cannot read the Python "
                        "installation under %s; imports of modules not preloaded will fail", sys.base_prefix)
        if namespaces and not hello.get("isolated"):
            raise ServerDied("sandbox server started but could not isolate itself")

    def _ctrl_recv(self, timeout: float | None) -> dict:
        ready, _, _ = select.select([self.ctrl], [], [], timeout)
        data = self.ctrl.recv(1 << 16) if ready else None
        if not data:
            err = b""
            if self.proc is not None and data is not None:
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc is not None and self.proc.poll() is not None and self.proc.stderr:
                err = self.proc.stderr.read()[-2000:]
            raise ServerDied(f"sandbox server is not answering ({'timeout' if data is None else 'closed'}) "
                             f"{err.decode(errors='replace')}")
        return json.loads(data)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill_process(self) -> None:
        if self.ctrl is not None:
            self.ctrl.close()
            self.ctrl = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def close(self) -> None:
        if self.ctrl is not None and self.alive():
            try:
                self.ctrl.send(b"exit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill_process()
        if self._scratch_host:
            shutil.rmtree(self._scratch_host, ignore_errors=True)
            self._scratch_host = None

    def restart(self) -> None:
        self.close()
        self.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- one program ----------------------------------------------------------------------------------------
    def run(self, problem, program: str, *, use_grading_tests: bool = False) -> Verdict:
        """Grade one program. Raises ServerDied when the sandbox itself failed (callers retry elsewhere)."""
        from sandbox.grading import grade, prepare  # local: grading imports this module

        with self._lock:
            start = time.monotonic()
            compiled = prepare(problem, program, use_grading_tests=use_grading_tests)
            if isinstance(compiled, Verdict):  # compile error: no process needed
                compiled.wall_ms = (time.monotonic() - start) * 1000.0
                return compiled
            if not self.alive():
                raise ServerDied("sandbox server process has exited")
            ours, theirs = socket.socketpair()
            try:
                socket.send_fds(self.ctrl, [b"fork"], [theirs.fileno()])
            except OSError as exc:
                raise ServerDied(f"cannot reach the sandbox server: {exc}") from exc
            finally:
                theirs.close()
            events: list[dict] = []
            # A stdio reply carries the captured output, JSON-escaped (control characters up to 6-fold).
            max_reply = max(self.limits.max_result_bytes, 6 * self.limits.max_output_bytes) + 4096
            channel = ProgramChannel(ours, self, events, max_reply)
            try:
                verdict = grade(channel, problem, compiled, self.limits, use_grading_tests=use_grading_tests)
            finally:
                ours.close()
                # Synchronous on purpose: when run() returns, nothing of the program is left (letting the clean-up
                # overlap with the next job was tried and gained nothing measurable on 2 cores).
                status = self._reap(events)
            _explain_death(verdict, status, self.limits)
            verdict.wall_ms = (time.monotonic() - start) * 1000.0
            return verdict

    def _reap(self, events: list[dict]) -> dict | None:
        """Have the server kill the program's processes and empty scratch; how the child ended."""
        try:
            self.ctrl.send(b"reap")
        except OSError as exc:
            raise ServerDied(f"cannot reach the sandbox server: {exc}") from exc
        reaped = self._wait_event("reaped", events)
        self.last_status = reaped.get("status") or next((e for e in events if e.get("ev") == "exited"), None)
        return self.last_status

    def _wait_event(self, name: str, events: list[dict]) -> dict:
        while True:
            msg = self._ctrl_recv(timeout=max(60.0, 3 * self.limits.program_timeout_s))
            if msg.get("ev") == "fork_failed":
                raise ServerDied(f"sandbox server could not fork: {msg.get('message')}")
            if msg.get("ev") == name:
                return msg
            events.append(msg)


class ProgramChannel:
    """The trusted side's end of one program's socket, with deadlines, and a watch on the server's channel for
    the news that the program's process has ended (its socket may stay open in a leftover grandchild)."""

    def __init__(self, sock: socket.socket, server: ForkServer, events: list[dict], max_bytes: int):
        self.sock = sock
        self.server = server
        self.events = events
        self.max_bytes = max_bytes

    def request(self, msg: dict, deadline: float) -> dict:
        try:
            wire.send_msg(self.sock, msg)
        except OSError:
            raise ChildGone("the program's process closed its channel") from None
        while True:
            for event in self.events:
                if event.get("ev") == "fork_failed":
                    raise ServerDied(f"sandbox server could not fork: {event.get('message')}")
            if any(e.get("ev") == "exited" for e in self.events):
                return self._read_final()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildTimeout()
            ready, _, _ = select.select([self.sock, self.server.ctrl], [], [], remaining)
            if self.sock in ready:
                return self._read(deadline)
            if self.server.ctrl in ready:
                self.events.append(self.server._ctrl_recv(timeout=0))

    def _read_final(self) -> dict:
        ready, _, _ = select.select([self.sock], [], [], 0)
        if ready:
            return self._read(time.monotonic() + 0.05)
        raise ChildGone("the program's process ended without answering")

    def _read(self, deadline: float) -> dict:
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            reply = wire.recv_msg(self.sock, self.max_bytes)
        except wire.PeerClosed:
            raise ChildGone("the program's process ended without answering") from None
        except TimeoutError:
            raise ChildTimeout() from None
        except OSError:
            raise ChildGone("the program's process closed its channel") from None
        finally:
            self.sock.settimeout(None)
        if type(reply) is not dict:
            raise wire.WireError("reply is not an object")
        return reply


def _explain_death(verdict: Verdict, status: dict | None, limits: SandboxConfig) -> None:
    """Fill in why the process ended when the verdict only knows it stopped answering."""
    if verdict.reason != "exit" or not status or not verdict.error or verdict.error.type != "ProcessExited":
        return  # the program answered (e.g. SystemExit was reported); the server's SIGKILL afterwards is ours
    sig = status.get("signal")
    if sig is None:
        return
    import signal as _signal

    name = _signal.Signals(sig).name if sig in _signal.Signals._value2member_map_ else f"signal {sig}"
    if sig == _signal.SIGXCPU:
        verdict.reason = "timeout"
    elif status.get("maxrss_kb", 0) >= 0.8 * limits.memory_mb * 1024:
        verdict.reason = "memory"
    else:
        verdict.reason = "signal"
    verdict.error = ProgramError(type=name, message=f"killed by {name}", line=None)
