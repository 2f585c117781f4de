"""Seccomp-BPF filters for the fork-server and every program it forks (x86-64; elsewhere none).

Standard library only (ctypes + struct), imported by sandbox/server.py. Written out here rather than through
pyseccomp/libseccomp because those pull ``ctypes.util``, ``subprocess``, ``shutil`` and compression libraries
into the fork-server, and every extra mapping is copied on each fork; the filters are a few dozen instructions.

`BASE` (the server, inherited by every program): default allow; denied with EPERM: exec, ptrace and every other
way to reach another process's memory or descriptors (process_vm_*, pidfd_getfd, kcmp), mounts, new namespaces,
module loading, keyrings, SysV IPC, io_uring, memfd (shared memory no limit sees) and the like; ``clone`` with
namespace flags; ``clone3`` answers ENOSYS so that the C library falls back to ``clone`` whose flags the filter
can see; ``socket`` for any family but AF_UNIX answers EAFNOSUPPORT; calls that act on another process by pid
(prlimit, priorities, scheduling) only for the caller itself (pid 0): under an unprivileged user namespace the
program has the fork-server's uid, and must not starve or throttle it; ``prctl(PR_SET_DUMPABLE)``, so a program
stays non-dumpable (its OOM score, which the server set, and its memory stay out of its own reach). Other
architectures' calls (and x32) kill the process.

`SINGLE_PROCESS` (stacked on a program when no cgroup bounds its process tree): threads only, no new processes,
so the address-space rlimit of its one process bounds its memory.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_LD_ABS_W, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_OFF_NR, _OFF_ARCH = 0, 4
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_THREAD = 0x00010000

DENIED_X86_64 = {
    "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "pidfd_getfd": 438, "kcmp": 312, "process_madvise": 440, "process_mrelease": 448,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "fsopen": 430, "fsmount": 432, "move_mount": 429, "open_tree": 428, "fspick": 433, "mount_setattr": 442,
    "swapon": 167, "swapoff": 168, "reboot": 169, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249, "acct": 163,
    "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "syslog": 103, "quotactl": 179,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "fanotify_init": 300, "shmget": 29, "msgget": 68, "semget": 64, "mq_open": 240,
    "personality": 135, "memfd_create": 319, "memfd_secret": 447, "migrate_pages": 256, "move_pages": 279,
}
# Calls allowed only on the calling process itself: syscall -> index of the pid argument.
SELF_ONLY_X86_64 = {"prlimit64": (302, 0), "setpriority": (141, 1), "sched_setparam": (142, 0),
                    "sched_setscheduler": (144, 0), "sched_setaffinity": (203, 0), "sched_setattr": (314, 0),
                    "ioprio_set": (251, 1)}
_CLONE, _CLONE3, _SOCKET, _FORK, _VFORK, _PRCTL = 56, 435, 41, 57, 58, 157
_PR_SET_DUMPABLE = 4


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _arg(index: int) -> bytes:
    return _ins(_LD_ABS_W, 16 + 8 * index)  # the low 32 bits of the argument (little-endian)


def _prologue() -> list[bytes]:
    return [_ins(_LD_ABS_W, _OFF_ARCH), _ins(_JEQ_K, AUDIT_ARCH_X86_64, 1, 0), _ins(_RET_K, _KILL_PROCESS),
            _ins(_LD_ABS_W, _OFF_NR), _ins(_JGE_K, _X32_BIT, 0, 1), _ins(_RET_K, _KILL_PROCESS)]


def base_program() -> bytes:
    """The filter of the server and all programs, as the kernel's array of ``struct sock_filter``."""
    eperm = _ERRNO | errno.EPERM
    lowest = min([*DENIED_X86_64.values(), *(nr for nr, _ in SELF_ONLY_X86_64.values()), _CLONE, _SOCKET, _PRCTL])
    # The hottest calls (read, write, mmap, brk, signals, ...) have the lowest numbers: allowed at once.
    prog = _prologue() + [_ins(_JGE_K, lowest, 1, 0), _ins(_RET_K, _ALLOW)]
    for nr in sorted(DENIED_X86_64.values()):
        prog += [_ins(_JEQ_K, nr, 0, 1), _ins(_RET_K, eperm)]
    for nr, index in sorted(SELF_ONLY_X86_64.values()):
        prog += [_ins(_JEQ_K, nr, 0, 4), _arg(index), _ins(_JEQ_K, 0, 0, 1), _ins(_RET_K, _ALLOW), _ins(_RET_K, eperm)]
    prog += [_ins(_JEQ_K, _PRCTL, 0, 4), _arg(0), _ins(_JEQ_K, _PR_SET_DUMPABLE, 0, 1), _ins(_RET_K, eperm),
             _ins(_RET_K, _ALLOW),
             _ins(_JEQ_K, _CLONE3, 0, 1), _ins(_RET_K, _ERRNO | errno.ENOSYS),
             # clone: refuse namespace flags (its flags are the low 32 bits of the first argument)
             _ins(_JEQ_K, _CLONE, 0, 4), _arg(0), _ins(_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
             _ins(_RET_K, eperm), _ins(_RET_K, _ALLOW),
             # socket: AF_UNIX only
             _ins(_JEQ_K, _SOCKET, 0, 4), _arg(0), _ins(_JEQ_K, 1, 1, 0),
             _ins(_RET_K, _ERRNO | errno.EAFNOSUPPORT), _ins(_RET_K, _ALLOW),
             _ins(_RET_K, _ALLOW)]
    return b"".join(prog)


def single_process_program() -> bytes:
    """Threads (clone with CLONE_THREAD) but no new processes: fork, vfork and other clones answer EAGAIN."""
    again = _ERRNO | errno.EAGAIN
    prog = _prologue() + [
        _ins(_JEQ_K, _FORK, 0, 1), _ins(_RET_K, again), _ins(_JEQ_K, _VFORK, 0, 1), _ins(_RET_K, again),
        _ins(_JEQ_K, _CLONE, 0, 4), _arg(0), _ins(_JSET_K, CLONE_THREAD, 0, 1), _ins(_RET_K, _ALLOW),
        _ins(_RET_K, again), _ins(_RET_K, _ALLOW)]
    return b"".join(prog)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """A filter prepared once (in the server, before forking) and installed with one prctl call."""

    def __init__(self, program: bytes):
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._fprog = _Fprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:
        """On the calling (single-threaded) process and everything it later creates; irreversible."""
        if self._libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if self._libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._fprog), 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_SECCOMP) failed: {os.strerror(err)}")


def supported() -> bool:
    return os.uname().machine == "x86_64"
