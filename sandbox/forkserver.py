"""Trusted-side handle on one fork-server process (sandbox/server.py): start it isolated, run jobs, stop it.

``ForkServer.run(problem, program)`` is the whole life of one program: ask the server to fork a child wired to a
fresh socket, grade it over that socket (sandbox/grading.py), then have the server kill everything the program
left and report how the child ended. One job at a time per ForkServer; pools hold several. ``info`` and
``isolation_level`` say what isolation the server actually got (sandbox/isolation.py).
"""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from configs.schema import SandboxConfig
from sandbox import cgroups, isolation
from sandbox.channel import ProgramChannel, ServerDied
from sandbox.grading import grade, prepare
from sandbox.isolation import SandboxUnavailable
from sandbox.verdict import ProgramError, Verdict

log = logging.getLogger(__name__)

SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")
_UID_BASE = 1_000_000  # per-worker uid = base + the unshare process's pid: unique among live workers
_warned: set[str] = set()

__all__ = ["ForkServer", "SandboxUnavailable", "ServerDied"]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _readonly_paths() -> list[str]:
    """What the program may see (read-only): the system directories and the interpreter, nothing else."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.dirname(os.path.dirname(exe))
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", prefix]
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
    """One fork-server process. ``info`` is what isolation it actually got: the server's own report (``pid1``,
    ``root``, ``isolated``, ``seccomp``, ``drop``, ``single_process``) plus ``namespaces``, ``cgroup`` (e.g.
    "cgroup-v1" or "") and ``level`` (see `isolation_level`)."""

    def __init__(self, limits: SandboxConfig | None = None):
        self.limits = limits or SandboxConfig()
        if self.limits.isolation not in ("auto", "full", "none"):
            raise ValueError(f"SandboxConfig.isolation must be auto, full or none, not {self.limits.isolation!r}")
        self.proc: subprocess.Popen | None = None
        self.ctrl: socket.socket | None = None
        self.info: dict = {}
        self.cgroup: cgroups.WorkerCgroup | None = None
        self._baseline = 0  # the server's own memory in its cgroup
        self._scratch_host: str | None = None
        self.last_status: dict | None = None  # how the last collected child ended (exit code / signal, rusage)
        self._lock = threading.Lock()
        self.start()

    @property
    def isolation_level(self) -> str:
        """e.g. "namespaces+cgroup-v1", "userns+rlimits", "none" (sandbox/isolation.py)."""
        return self.info.get("level", "")

    # --- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        wanted = self.limits.isolation
        if wanted == "none":
            _warn_once("sandbox isolation=none (asked for): programs run with rlimits only, without namespaces or "
                       "seccomp; never use this for untrusted programs")
            self._spawn(namespaces=False, group=None)
            return
        group, why = cgroups.create()
        if group is None and wanted == "full":
            raise SandboxUnavailable(f"isolation=full needs cgroups to limit each program's process tree: {why}. "
                                     "Use isolation=auto to run each program as a single process instead.")
        for attempt in ([group, None] if group is not None and wanted == "auto" else [group]):
            try:
                self._spawn(namespaces=True, group=attempt)
                break
            except (OSError, ServerDied) as exc:
                self._kill_process()
                if attempt is not None:
                    attempt.remove()
                    why = f"the sandbox server failed in its cgroup: {exc}"
                if attempt is None or wanted == "full":
                    raise SandboxUnavailable(isolation.explain(str(exc))) from exc
        if self.cgroup is None:
            _warn_once(f"sandbox: no cgroup for per-program limits ({why}); each program runs as one process (fork "
                       f"refused) whose address-space limit bounds its memory")
        try:
            isolation.confirm(self.info)
        except SandboxUnavailable:
            self.close()
            raise

    def _spawn(self, namespaces: bool, group: cgroups.WorkerCgroup | None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        python = os.path.realpath(sys.executable)
        cmd = [python, "-S", "-s", "-B", SERVER_SCRIPT, str(theirs.fileno())]
        if namespaces:
            cmd = isolation.namespace_command(cmd)
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
                "max_processes")},
            "isolate": namespaces,
            "ro_paths": _readonly_paths(),
            "scratch_bytes": max(64 << 20, 8 * self.limits.max_file_bytes),
            "scratch_root": self._scratch_host,
            "cgroup_procs": group.procs_files if group is not None else [],
        }
        ours.send(json.dumps(init).encode())
        hello = self._ctrl_recv(timeout=30.0)
        if not hello.get("ok"):
            raise ServerDied(f"sandbox server failed to start: {hello.get('error')}")
        if group is not None:
            # The server (already warm) is in the cgroup: the programs get the memory limit on top of its own use.
            self._baseline = group.usage_bytes()
            group.set_limits(self._baseline + (self.limits.memory_mb << 20), self.limits.max_processes + 1)
            self.cgroup = group
        self.info = {**hello, "namespaces": namespaces, "cgroup": group.name if group is not None else ""}
        self.info["level"] = isolation.level_name(self.info)
        if not namespaces and hello.get("root") and not _world_traversable(os.path.realpath(sys.executable)):
            log.warning("sandbox without namespaces: programs run as an unprivileged uid that cannot read the Python "
                        "installation under %s; imports of modules not preloaded will fail", sys.base_prefix)

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
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
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
        with self._lock:
            start = time.monotonic()
            verdict = prepare(problem, program, use_grading_tests=use_grading_tests)
            if not isinstance(verdict, Verdict):  # compiled: run it (a compile error needs no process)
                verdict = self._run_compiled(problem, verdict, use_grading_tests)
            verdict.isolation = self.isolation_level
            verdict.wall_ms = (time.monotonic() - start) * 1000.0
            return verdict

    def _run_compiled(self, problem, compiled, use_grading_tests: bool) -> Verdict:
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
        try:
            verdict = grade(ProgramChannel(ours, self, events), problem, compiled, self.limits,
                            use_grading_tests=use_grading_tests)
        finally:
            ours.close()
            # Synchronous on purpose: when run() returns, nothing of the program is left (letting the clean-up
            # overlap with the next job was tried and gained nothing measurable on 2 cores).
            status = self._reap(events)
        _explain_death(verdict, status, self.limits)
        return verdict

    def _reap(self, events: list[dict]) -> dict | None:
        """Have the server kill the program's processes and empty scratch; how the child ended."""
        try:
            self.ctrl.send(b"reap")
        except OSError as exc:
            raise ServerDied(f"cannot reach the sandbox server: {exc}") from exc
        reaped = self._wait_event("reaped", events)
        status = dict(reaped.get("status") or next((e for e in events if e.get("ev") == "exited"), None) or {})
        if self.cgroup is not None:  # the whole tree's memory: did the OOM killer strike, and the peak use
            ooms, self._ooms = self.cgroup.oom_kills(), getattr(self, "_ooms", 0)
            status["oom_killed"], self._ooms = ooms > self._ooms, ooms
            peak = self.cgroup.peak_bytes()
            status["tree_peak_kb"] = None if peak is None else max(peak - self._baseline, 0) >> 10
            self.cgroup.reset_peak()
        self.last_status = status or None
        return self.last_status

    def _wait_event(self, name: str, events: list[dict]) -> dict:
        while True:
            msg = self._ctrl_recv(timeout=max(60.0, 3 * self.limits.program_timeout_s))
            if msg.get("ev") == "fork_failed":
                raise ServerDied(f"sandbox server could not fork: {msg.get('message')}")
            if msg.get("ev") == name:
                return msg
            events.append(msg)


def _explain_death(verdict: Verdict, status: dict | None, limits: SandboxConfig) -> None:
    """Fill in why the process ended when the verdict only knows it stopped answering."""
    if verdict.reason != "exit" or not status or not verdict.error or verdict.error.type != "ProcessExited":
        return  # the program answered (e.g. SystemExit was reported); the server's SIGKILL afterwards is ours
    sig = status.get("signal")
    if sig is None:
        return
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    if sig == signal.SIGXCPU:
        verdict.reason = "timeout"
    elif status.get("oom_killed") or status.get("maxrss_kb", 0) >= 0.8 * limits.memory_mb * 1024:
        verdict.reason = "memory"
    else:
        verdict.reason = "signal"
    verdict.error = ProgramError(type=name, message=f"killed by {name}", line=None)
