"""Which isolation a fork-server gets, what it is called, and what to tell the user when it cannot be had.

Levels (recorded on every Verdict and reported by the pools): ``<namespaces>+<limits>``, where namespaces is
``namespaces`` (real root: new PID, network, mount, IPC and UTS namespaces, programs as another uid) or
``userns`` (any other user: the same inside an unprivileged user namespace, programs without capabilities),
both with the seccomp filter; and limits is ``cgroup-v1`` / ``cgroup-v2`` (memory and processes over the
program's whole tree) or ``rlimits`` (one process per program, bounded by its address-space limit). ``none``:
no namespaces and no seccomp, rlimits only, and only when asked for explicitly.

``isolation="auto"`` takes the strongest available and never falls back to ``none``: without namespaces it
stops with `SandboxUnavailable`, saying what is missing and how to allow it. ``"full"`` also requires cgroups.
"""
from __future__ import annotations

import os
import shutil


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be set up on this machine; the message says why and what to do."""


NONE_HINT = ("To run programs without isolation anyway (rlimits only: unsafe for untrusted or model-generated "
             "programs), ask for it explicitly: --sandbox.isolation=none (launch.py execute: --isolation none).")


def namespace_command(cmd: list[str]) -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("the sandbox needs the `unshare` program (util-linux), which is not installed. "
                                 "Install util-linux. " + NONE_HINT)
    flags = ["--pid", "--net", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user"] + flags
    return [unshare, *flags, *cmd]


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as fh:
            return fh.read().strip()
    except OSError:
        return None


def explain(error: str) -> str:
    """The message for a fork-server that could not isolate itself: what failed, and how to allow it."""
    hints = []
    if os.geteuid() != 0:
        if _sysctl("kernel.unprivileged_userns_clone") == "0":
            hints.append("unprivileged user namespaces are switched off: sysctl -w kernel.unprivileged_userns_clone=1")
        if _sysctl("user.max_user_namespaces") == "0":
            hints.append("user namespaces are limited to 0: sysctl -w user.max_user_namespaces=15000")
        if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
            hints.append("AppArmor restricts unprivileged user namespaces: sysctl -w "
                         "kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile that allows `userns` "
                         "for this Python)")
        if not hints:
            hints.append("the kernel or a container policy refuses unprivileged user namespaces; in a container, "
                         "allow unshare and mount (e.g. docker --security-opt seccomp=unconfined --security-opt "
                         "apparmor=unconfined; Kubernetes: a seccomp profile that allows them)")
    else:
        hints.append("root could not create namespaces or mounts; in a container, grant CAP_SYS_ADMIN (e.g. docker "
                     "--cap-add SYS_ADMIN --security-opt seccomp=unconfined) or run as an ordinary user with "
                     "unprivileged user namespaces allowed")
    return (f"the sandbox cannot isolate programs (new user, PID, network and mount namespaces and a seccomp filter): "
            f"{error.strip()}. To allow it: {'; '.join(hints)}. " + NONE_HINT)


def level_name(info: dict) -> str:
    if not info.get("namespaces"):
        return "none"
    ns = "namespaces" if info.get("drop") == "uid" else "userns"
    return f"{ns}+{info.get('cgroup') or 'rlimits'}"


def confirm(info: dict) -> None:
    """The checks a namespaced server's own report must pass before any program runs on it."""
    missing = [what for what, ok in (
        ("PID namespace", info.get("pid1")), ("private read-only root", info.get("isolated")),
        ("seccomp filter", info.get("seccomp")), ("privilege drop", info.get("drop")),
        ("per-program process bound", info.get("cgroup") or info.get("single_process"))) if not ok]
    if missing:
        raise SandboxUnavailable(explain(f"the sandbox server started without: {', '.join(missing)}"))
