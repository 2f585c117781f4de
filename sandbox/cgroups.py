"""Limits over a program's whole process tree: one cgroup per sandbox worker, made and read by the trusted side.

The fork-server joins its worker's cgroup before it forks anything, so every program and all of its descendants
are charged to it: memory (``memory.max`` in v2, ``memory.limit_in_bytes`` and the swap-inclusive limit in v1)
bounds them together, ``pids.max`` their number, and the OOM killer acts inside the cgroup only. After each
program the trusted side reads whether the OOM killer struck and the peak use.

Where: under the cgroup this process is in. cgroup v2 when its memory and pids controllers can be used there
(the root of a cgroup namespace, e.g. root in a container) or in the delegated cgroup named by
``RLTF_SANDBOX_CGROUP`` (e.g. a scope made by ``systemd-run --user -p Delegate=yes``); cgroup v1 where the memory
and pids hierarchies are writable (root on a v1 or hybrid host, as on the machine this was written on).
Elsewhere `create` returns None with the reason, and the sandbox gives each program one process whose
address-space rlimit bounds its memory (sandbox/seccomp_filter.py, `single_process_program`).
"""
from __future__ import annotations

import itertools
import os
import time

ENV_PARENT = "RLTF_SANDBOX_CGROUP"
_PREFIX = "rltf-sandbox-"
_counter = itertools.count()


def _own_paths() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's cgroup path in that hierarchy."""
    paths = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _mount_points() -> dict[str, str]:
    """Controller (``""`` for the v2 hierarchy) -> where its hierarchy is mounted."""
    points = {}
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            fstype, options = fields[fields.index("-") + 1], fields[-1].split(",")
            if fstype == "cgroup2":
                points.setdefault("", fields[4])
            elif fstype == "cgroup":
                for name in ("memory", "pids"):
                    if name in options:
                        points.setdefault(name, fields[4])
    return points


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _sweep(parent: str) -> None:
    """Remove cgroups left by sandbox workers that died without cleaning up (their owner pid is gone)."""
    try:
        entries = [e for e in os.listdir(parent) if e.startswith(_PREFIX)]
    except OSError:
        return
    for entry in entries:
        try:
            os.kill(int(entry[len(_PREFIX):].split("-")[0]), 0)
        except ProcessLookupError:
            try:
                os.rmdir(os.path.join(parent, entry))
            except OSError:
                pass
        except (ValueError, PermissionError):
            pass


class WorkerCgroup:
    """The cgroup (v2) or the memory and pids cgroups (v1) of one fork-server and the programs it runs."""

    def __init__(self, version: int, memory_dir: str, pids_dir: str):
        self.version, self.memory_dir, self.pids_dir = version, memory_dir, pids_dir
        self.name = f"cgroup-v{version}"
        self._fds: dict[str, int] = {}  # read after every program: kept open

    def _fd(self, name: str) -> int:
        if name not in self._fds:
            self._fds[name] = os.open(os.path.join(self.memory_dir, name), os.O_RDWR)
        return self._fds[name]

    @property
    def procs_files(self) -> list[str]:
        return sorted({os.path.join(d, "cgroup.procs") for d in (self.memory_dir, self.pids_dir)})

    def _memory(self, v1: str, v2: str) -> str:
        return os.path.join(self.memory_dir, v1 if self.version == 1 else v2)

    def usage_bytes(self) -> int:
        return int(_read(self._memory("memory.usage_in_bytes", "memory.current")))

    def set_limits(self, memory_bytes: int, max_processes: int) -> None:
        if self.version == 1:
            _write(self._memory("memory.limit_in_bytes", ""), str(memory_bytes))
            if os.path.exists(self._memory("memory.memsw.limit_in_bytes", "")):  # no escape into swap
                _write(self._memory("memory.memsw.limit_in_bytes", ""), str(memory_bytes))
        else:
            _write(self._memory("", "memory.max"), str(memory_bytes))
            if os.path.exists(self._memory("", "memory.swap.max")):
                _write(self._memory("", "memory.swap.max"), "0")
        _write(os.path.join(self.pids_dir, "pids.max"), str(max_processes))

    def oom_kills(self) -> int:
        text = os.pread(self._fd("memory.oom_control" if self.version == 1 else "memory.events"), 4096, 0).decode()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        try:
            return int(os.pread(self._fd("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"), 64, 0))
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> None:
        try:
            os.pwrite(self._fd("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"), b"0", 0)
        except OSError:  # v2 before Linux 6.12: the peak then covers the worker's whole life
            pass

    def remove(self, timeout: float = 2.0) -> None:
        """After the fork-server is gone: kill anything left (v2), then remove the directories."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self.version == 2 and os.path.exists(os.path.join(self.memory_dir, "cgroup.kill")):
            try:
                _write(os.path.join(self.memory_dir, "cgroup.kill"), "1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for path in dict.fromkeys((self.memory_dir, self.pids_dir)):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY until the last process has been reaped
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)


def _make(parent: str) -> str:
    _sweep(parent)
    path = os.path.join(parent, f"{_PREFIX}{os.getpid()}-{next(_counter)}")
    os.mkdir(path)
    return path


def _try_v2(points: dict, own: dict) -> tuple[WorkerCgroup | None, str]:
    if "" not in points:
        return None, "no cgroup v2 hierarchy"
    parent = os.environ.get(ENV_PARENT) or points[""] + own.get("", "/")
    try:
        if not {"memory", "pids"} <= set(_read(os.path.join(parent, "cgroup.controllers")).split()):
            return None, f"cgroup v2 at {parent} has no memory and pids controllers"
        if not {"memory", "pids"} <= set(_read(os.path.join(parent, "cgroup.subtree_control")).split()):
            _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
        path = _make(parent)
    except OSError as exc:
        return None, (f"cannot use cgroup v2 at {parent} ({exc.strerror}); set {ENV_PARENT} to a delegated cgroup "
                      "whose memory and pids controllers are enabled")
    return WorkerCgroup(2, path, path), ""


def _try_v1(points: dict, own: dict) -> tuple[WorkerCgroup | None, str]:
    if "memory" not in points or "pids" not in points:
        return None, "no cgroup v1 memory and pids hierarchies"
    made = []
    try:
        for name in ("memory", "pids"):
            made.append(_make(points[name] + own.get(name, "/").rstrip("/")))
    except OSError as exc:
        for path in made:
            os.rmdir(path)
        return None, f"cannot create cgroup v1 {name} cgroups ({exc.strerror})"
    return WorkerCgroup(1, made[0], made[1]), ""


def create() -> tuple[WorkerCgroup | None, str]:
    """A fresh cgroup for one worker, or None and why not."""
    try:
        points, own = _mount_points(), _own_paths()
    except (OSError, ValueError, IndexError) as exc:
        return None, f"cannot read this process's cgroups ({exc})"
    group, why_v2 = _try_v2(points, own)
    if group is not None:
        return group, ""
    group, why_v1 = _try_v1(points, own)
    return group, ("" if group is not None else f"{why_v2}; {why_v1}")
