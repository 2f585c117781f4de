"""The fork-server: one long-lived process per sandbox worker, forking one child per program.

Run as a script with ``python -S -s -B server.py FD`` (standard library only), normally as PID 1 of fresh PID,
network, mount and IPC namespaces made by ``unshare`` (with a user namespace when the host user is not root).
The isolation is paid once, here, at start:

- the cgroup(s) the trusted side made for this worker are joined first, so every program's whole process tree
  is under their memory and process limits (sandbox/cgroups.py);
- the read-only minimal root (sandbox/rootfs.py);
- a seccomp filter (sandbox/seccomp_filter.py) for the server and everything it forks;
- the server cannot be reached by its programs: not dumpable (no /proc/1/mem, no pidfd_getfd), no signal it
  handles that a program could abuse, and programs run either as another uid (real root) or, in a user
  namespace, with every capability dropped;
- common standard-library modules imported so that forks start warm.

Per program the server forks; the child starts a new session, drops its privileges, sets rlimits (and, where
no cgroup bounds the tree, a second filter allowing threads but no new processes), changes into an empty scratch
directory and serves the program (sandbox/child.py) over a socket it received from the trusted side. The server
never sees the program, its tests or its results: job data never lives in the memory that later children
inherit. After the job the server kills every process in its namespace (``kill(-1, SIGKILL)`` as PID 1; outside
a PID namespace, every process of the worker's uid) and empties the scratch directory.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import child  # noqa: E402  (imports wire too: both are warm in every fork)
import rootfs  # noqa: E402
import seccomp_filter  # noqa: E402

WARM_MODULES = (  # what MBPP / HumanEval / APPS programs import most; each extension module is mapped into
    # every fork (more to copy), so rarely used ones (cmath, array, datetime, random) are left to the programs
    "re collections math itertools heapq functools bisect operator copy string typing"
).split()

_PR_SET_DUMPABLE = 4
_NS_BASE_PROCESSES = 2  # `unshare` and the server itself share the user namespace's uid
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


def drop_capabilities() -> None:
    """Empty effective, permitted and inheritable sets: root of a user namespace with no power over it."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if _libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


class Server:
    def __init__(self, ctrl: socket.socket, init: dict):
        self.ctrl = ctrl
        self.uid = int(init["uid"])
        self.limits = init["limits"]
        for path in init.get("cgroup_procs", []):  # first: everything from here on is charged to the cgroup
            with open(path, "w") as fh:
                fh.write("0")
        self.cgroup = bool(init.get("cgroup_procs"))
        self.pid1 = os.getpid() == 1
        self.is_root = os.geteuid() == 0
        initial_ns = _initial_user_namespace()
        # Real root runs each program as its own uid; root of a user namespace (a non-root host user) has a
        # single uid to give, so programs keep it but lose every capability.
        self.drop_uid = self.is_root and initial_ns
        self.drop_caps = self.is_root and not initial_ns
        self.child_pid = 0
        self.child_status = None
        self.isolated = self.seccomp = self.single_process = False
        isolate = bool(init.get("isolate"))
        if isolate and self.pid1:
            rootfs.build_root(init["ro_paths"], int(init["scratch_bytes"]))
            self.isolated = True
            self.scratch_root = rootfs.SCRATCH_ROOT
        else:
            self.scratch_root = init["scratch_root"]
        self.oom_fd = None
        if self.cgroup:
            # A cgroup OOM kill must take a program, not the server: every child is forked with the highest score
            # (the program, non-dumpable, cannot lower it); the server itself goes lowest where it may (that
            # needs CAP_SYS_RESOURCE; else it stays at 0).
            self.oom_fd = os.open("/proc/self/oom_score_adj", os.O_RDWR)
            try:
                os.pwrite(self.oom_fd, b"-1000", 0)
            except PermissionError:
                pass
            self.oom_own = os.pread(self.oom_fd, 16, 0).strip()
        if isolate and _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:  # no /proc/1/mem, no pidfd_getfd
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
        if isolate and seccomp_filter.supported():
            seccomp_filter.Filter(seccomp_filter.base_program()).install()
            self.seccomp = True
            # Without a cgroup nothing bounds the memory of a tree of processes: programs get one process.
            self.single_process = not self.cgroup
            self.process_filter = seccomp_filter.Filter(seccomp_filter.single_process_program())
        self.scratch = os.path.join(self.scratch_root, "job")
        self.scratch_bytes = int(init["scratch_bytes"])
        # Set up once here rather than in every child (each object a child touches costs a page copy): the
        # program's environment, and text streams on fds 1 and 2 (the child points those fds at its files).
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": self.scratch, "TMPDIR": self.scratch,
                           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        # The only signals a PID 1 receives from inside its namespace are those it handles: SIGALRM (kill the
        # namespace's processes, which belong to the program anyway) and SIGCHLD; never SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, self._kill_all)
        self.null_fd = os.open("/dev/null", os.O_RDWR)
        self._inherited_limits()
        for name in WARM_MODULES:
            __import__(name)
        import site  # under -S this adds nothing to sys.path; programs expect exit(), quit(), help()

        site.setquit()
        site.setcopyright()
        site.sethelper()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        import gc
        gc.collect()
        gc.freeze()  # forked children then do not dirty the server's pages on their first collection
        # Every page the server keeps is one more page table entry each fork copies and each program's exit
        # unmaps (the largest kernel costs per program): give the set-up's freed heap back first (-320 kB of 7 MB).
        _libc.malloc_trim(0)

    def _inherited_limits(self) -> None:
        """Limits every child inherits, set once here. They do not hinder the server: it writes no big files,
        stays far below the address-space limit, and forks one process at a time."""
        limits = self.limits
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too much output: write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # The hard file-size limit is the scratch size, so the child runtime can lift its soft limit to write a
        # large test input; the program could do the same, but the scratch tmpfs is full by then anyway.
        hard_fsize = max(limits["max_file_bytes"], self.scratch_bytes)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_bytes"], hard_fsize))
        nproc = None
        if self.drop_uid:  # counts the processes (and threads) of the program's own uid: its tree
            nproc = limits["max_processes"]
        elif self.drop_caps and self.pid1:
            # Counted per user namespace (Linux >= 5.14): the program's tree plus `unshare` and this server.
            nproc = limits["max_processes"] + _NS_BASE_PROCESSES
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] << 20, limits["memory_mb"] << 20))
        if self.drop_uid:
            os.setgroups([])

    def hello(self) -> dict:
        return {"ok": True, "pid1": self.pid1, "root": self.is_root, "isolated": self.isolated,
                "seccomp": self.seccomp, "cgroup": self.cgroup, "single_process": self.single_process,
                "drop": "uid" if self.drop_uid else "capabilities" if self.drop_caps else ""}

    def fork_child(self, job_fd: int) -> None:
        limits = self.limits
        try:
            os.mkdir(self.scratch, 0o700)
        except FileExistsError:  # only if a previous clean-up failed
            _rmtree(self.scratch)
            os.mkdir(self.scratch, 0o700)
        if self.drop_uid:
            os.chown(self.scratch, self.uid, self.uid)
        self.child_status = None
        if self.oom_fd is not None:
            os.pwrite(self.oom_fd, b"1000", 0)
        pid = os.fork()
        if pid:
            if self.oom_fd is not None:
                os.pwrite(self.oom_fd, self.oom_own, 0)
            os.close(job_fd)
            self.child_pid = pid
            return
        try:  # the child; from here on it never returns into the server loop. Limits that are the same for
            # every child were set once on the server (see _inherited_limits); only per-process ones are here.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.setsid()
            os.chdir(self.scratch)
            job = os.dup(job_fd) if job_fd < 3 else job_fd
            os.dup2(self.null_fd, 0)
            os.dup2(self.null_fd, 2)
            os.closerange(3, job)
            os.closerange(job + 1, 1 << 16)
            cpu = int(limits["program_timeout_s"]) + 2  # CPU time counts per process: it cannot be inherited
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            if self.drop_uid:
                os.setgid(self.uid)
                os.setuid(self.uid)
            elif self.drop_caps:
                drop_capabilities()
            if self.single_process:
                self.process_filter.install()
            out = os.open("stdout.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, 1)
            os.close(out)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"], limits["max_open_files"]))
            sock = socket.socket(fileno=job)
            # Requests come from the trusted side (test inputs can be large); the cap only stops a runaway.
            child.serve(sock, 1 << 28, int(limits["max_output_bytes"]))
        except BaseException:
            pass
        os._exit(0)

    def poll_child(self) -> None:
        if not self.child_pid or self.child_status is not None:
            return
        try:
            pid, status, usage = os.wait4(self.child_pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            self.child_status = _describe(status, usage)
            _send(self.ctrl, {"ev": "exited", **self.child_status})

    def reap(self) -> dict:
        """Kill everything the program left behind, collect exit status, empty scratch."""
        if self.child_pid and self.child_status is None:
            try:
                pid, status, usage = os.wait4(self.child_pid, os.WNOHANG)
                if pid:
                    self.child_status = _describe(status, usage)
            except ChildProcessError:
                pass
        if self.pid1:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.drop_uid:
            self._kill_uid()
        elif self.child_pid:
            try:
                os.killpg(self.child_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.pid1:
            self._reap_namespace()
        elif self.child_pid and self.child_status is None:
            try:
                pid, status, usage = os.wait4(self.child_pid, 0)
                self.child_status = _describe(status, usage)
            except ChildProcessError:
                pass
        self.child_pid = 0
        self._empty_scratch()
        return {"ev": "reaped", "status": self.child_status}

    def _empty_scratch(self) -> None:
        # Usually only the captured stdout/stdin files are there; rmtree (which never follows symlinks) for the rest.
        try:
            with os.scandir(self.scratch) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        raise IsADirectoryError(entry.path)
                    os.unlink(entry.path)
            os.rmdir(self.scratch)
        except OSError:
            _rmtree(self.scratch)

    def _reap_namespace(self) -> None:
        # As PID 1 every orphan of the program is our child: wait for all of them. kill(-1) cannot miss a
        # process forked during the kill (the kernel aborts forks of a parent with SIGKILL pending), but if a
        # wait ever stalls, a timer (SIGALRM -> _kill_all) kills again every 50 ms.
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        try:
            while True:
                try:
                    pid, status, usage = os.wait4(-1, 0)
                except ChildProcessError:
                    return
                if pid == self.child_pid and self.child_status is None:
                    self.child_status = _describe(status, usage)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    @staticmethod
    def _kill_all(*_) -> None:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _kill_uid(self) -> None:
        # Outside a PID namespace: kill(-1) from a helper running as the program's uid reaches exactly the
        # processes of that uid (the program's tree, daemons included) and nothing else.
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(self.uid)
                os.setuid(self.uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    def loop(self) -> None:
        # Kept lean on purpose: every page the server writes while a child lives costs a copy-on-write fault.
        poller = select.poll()
        poller.register(self.ctrl, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        ctrl_fd = self.ctrl.fileno()
        while True:
            for fd, _ in poller.poll():
                if fd != ctrl_fd:
                    self._drain_wakeups()
                    self.poll_child()
                    continue
                msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, 256, 1)
                if msg == b"fork":
                    try:
                        self.fork_child(fds[0])  # no reply: the trusted side talks to the child at once
                    except (OSError, IndexError) as exc:
                        for extra in fds:
                            os.close(extra)
                        _send(self.ctrl, {"ev": "fork_failed", "message": str(exc)})
                elif msg == b"reap":
                    status = self.reap()
                    self._drain_wakeups()  # the SIGCHLDs of what reap() just collected
                    _send(self.ctrl, status)
                else:  # b"exit", or b"" when the trusted side is gone
                    return

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass


def _rmtree(path: str) -> None:
    import shutil  # only here: shutil drags compression modules into the server, and so into every fork

    shutil.rmtree(path, ignore_errors=True)  # never follows symlinks


def _initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as fh:
            return fh.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def _describe(status: int, usage) -> dict:
    info = {"maxrss_kb": usage.ru_maxrss, "user_ms": usage.ru_utime * 1e3, "sys_ms": usage.ru_stime * 1e3}
    if os.WIFSIGNALED(status):
        info["signal"] = os.WTERMSIG(status)
    else:
        info["code"] = os.WEXITSTATUS(status)
    return info


def _send(ctrl: socket.socket, obj: dict) -> None:
    ctrl.send(json.dumps(obj).encode())  # a SOCK_SEQPACKET channel: one send is one message


def main() -> None:
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    init = json.loads(ctrl.recv(1 << 20))
    try:
        server = Server(ctrl, init)
    except Exception as exc:  # report set-up failures to the trusted side instead of dying silently
        _send(ctrl, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    _send(ctrl, server.hello())
    server.loop()


if __name__ == "__main__":
    main()
