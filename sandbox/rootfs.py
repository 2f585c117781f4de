"""The file system a program sees: a new root of read-only bind mounts, built once by the fork-server.

Standard library only (imported by sandbox/server.py inside its private mount namespace, as root of the
namespace: real root, or root of an unprivileged user namespace). The repository, data sets, home directories
and everything else of the host are simply not there: only the system and interpreter directories (read-only),
a minimal ``/dev``, a private ``/proc`` that hides other users' processes, and one small tmpfs for the
per-program scratch directories. Then ``chroot`` into it.
"""
from __future__ import annotations

import ctypes
import os

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
NEW_ROOT = "/tmp"  # shadowed by a tmpfs inside our private mount namespace; the host's /tmp is untouched
SCRATCH_ROOT = "/scratch"
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _encoded(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source, target, fstype, flags, data=None):
    if _libc.mount(_encoded(source), _encoded(target), _encoded(fstype), ctypes.c_ulong(flags), _encoded(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _kept_flags(path: str) -> int:
    """The flags of the mount holding ``path`` that a read-only remount must keep: inside a user namespace the
    kernel refuses a remount that would clear the host's nodev / noexec / atime choices."""
    flags = os.statvfs(path).f_flag
    kept = 0
    for st, ms in ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):
        if flags & st:
            kept |= ms
    return kept


def _bind_readonly(path: str, root: str) -> None:
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return
    if not os.path.isdir(path) or os.path.isdir(target) and os.path.ismount(target):
        return
    os.makedirs(target, exist_ok=True)
    _mount(path, target, None, MS_BIND)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | _kept_flags(path))


def build_root(ro_paths: list[str], scratch_bytes: int) -> None:
    """Replace the file system view with the minimal read-only root, then chroot into it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("rltf-root", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=4m")
    for path in ro_paths:
        _bind_readonly(path, NEW_ROOT)
    dev = NEW_ROOT + "/dev"
    os.makedirs(dev, exist_ok=True)
    _mount("rltf-dev", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name in DEVICES:
        open(f"{dev}/{name}", "w").close()
        _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "mode=755")
    os.makedirs(NEW_ROOT + "/proc", exist_ok=True)
    _mount("proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    os.makedirs(NEW_ROOT + "/tmp", mode=0o755, exist_ok=True)
    os.makedirs(NEW_ROOT + SCRATCH_ROOT, exist_ok=True)
    _mount("rltf-scratch", NEW_ROOT + SCRATCH_ROOT, "tmpfs", MS_NOSUID | MS_NODEV,
           f"mode=711,size={scratch_bytes},nr_inodes=4096")
    _mount(None, NEW_ROOT, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=755")
    os.chroot(NEW_ROOT)
    os.chdir("/")
