"""A small seccomp-BPF filter for the fork-server and every program it forks (x86-64; elsewhere none).

Standard library only (ctypes + struct), imported by sandbox/server.py. Written out here rather than through
pyseccomp/libseccomp because those pull ``ctypes.util``, ``subprocess``, ``shutil`` and compression libraries
into the fork-server, and every extra mapping is copied on each fork; the filter itself is a few dozen
instructions. Default allow; denied with EPERM: exec, ptrace, mounts, new namespaces, module loading, keyrings,
SysV IPC, io_uring and the like; ``clone`` with namespace flags; ``clone3`` answers ENOSYS so that the C library
falls back to ``clone`` whose flags the filter can see; ``socket`` for any family but AF_UNIX answers
EAFNOSUPPORT. Other architectures' calls (and x32) are refused outright.
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
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

DENIED_X86_64 = {
    "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "fsopen": 430, "fsmount": 432, "move_mount": 429, "open_tree": 428, "fspick": 433, "mount_setattr": 442,
    "swapon": 167, "swapoff": 168, "reboot": 169, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249, "acct": 163,
    "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "syslog": 103, "quotactl": 179,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "fanotify_init": 300, "shmget": 29, "msgget": 68, "semget": 64, "mq_open": 240,
    "personality": 135,
}
_CLONE, _CLONE3, _SOCKET = 56, 435, 41


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def build_program() -> bytes:
    """The BPF program for x86-64, as the kernel's array of ``struct sock_filter``."""
    eperm = _ERRNO | errno.EPERM
    prog = [_ins(_LD_ABS_W, _OFF_ARCH), _ins(_JEQ_K, AUDIT_ARCH_X86_64, 1, 0), _ins(_RET_K, _KILL_PROCESS),
            _ins(_LD_ABS_W, _OFF_NR), _ins(_JGE_K, _X32_BIT, 0, 1), _ins(_RET_K, _KILL_PROCESS)]
    for nr in sorted(DENIED_X86_64.values()):
        prog += [_ins(_JEQ_K, nr, 0, 1), _ins(_RET_K, eperm)]
    prog += [_ins(_JEQ_K, _CLONE3, 0, 1), _ins(_RET_K, _ERRNO | errno.ENOSYS),
             # clone: refuse namespace flags (its flags are the low 32 bits of the first argument)
             _ins(_JEQ_K, _CLONE, 0, 4), _ins(_LD_ABS_W, _OFF_ARG0), _ins(_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
             _ins(_RET_K, eperm), _ins(_RET_K, _ALLOW),
             # socket: AF_UNIX only
             _ins(_JEQ_K, _SOCKET, 0, 4), _ins(_LD_ABS_W, _OFF_ARG0), _ins(_JEQ_K, 1, 1, 0),
             _ins(_RET_K, _ERRNO | errno.EAFNOSUPPORT), _ins(_RET_K, _ALLOW),
             _ins(_RET_K, _ALLOW)]
    return b"".join(prog)


def install() -> bool:
    """Load the filter on this (single-threaded) process; False where unsupported (not x86-64)."""
    if os.uname().machine != "x86_64":
        return False
    program = build_program()
    buffer = ctypes.create_string_buffer(program, len(program))

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Fprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP) failed: {os.strerror(err)}")
    return True
