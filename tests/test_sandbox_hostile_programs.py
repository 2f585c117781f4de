"""The hostile programs of the adversarial suite (data only; tests/test_sandbox_hostile.py runs them).

Each defines ``f(x)`` for the test ``f(TOKEN) == 'secret-' + TOKEN`` (or reads stdin for the stdio form) and
either attacks the host or tries to be graded as right without computing the answer. Placeholders filled in by
the suite: @PORT@ (a 127.0.0.1 listener it opened), @TOKEN@, @VICTIM@ (a world-writable host file),
@SECRET_FILE@ (a host file holding the expected answer), @MARKERS@ (host paths that must never appear).
"""

_WRITE_MARKERS = """
def touch_all():
    for path in @MARKERS@:
        try:
            with open(path, 'w') as fh:
                fh.write('pwned')
        except Exception:
            pass
"""

ESCAPES_AND_BOMBS = {
    "posix_system": "import posix\ndef f(x):\n    posix.system('touch ' + ' '.join(@MARKERS@))\n    return 0\n",
    "posix_spawn": ("import os\ndef f(x):\n    pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'touch ' + ' '.join(@MARKERS@)],"
                    " {})\n    os.waitpid(pid, 0)\n    return 0\n"),
    "ctypes_execve": ("import ctypes\ndef f(x):\n    libc = ctypes.CDLL(None)\n"
                      "    argv = (ctypes.c_char_p * 4)(b'sh', b'-c', ('touch ' + ' '.join(@MARKERS@)).encode(), None)\n"
                      "    libc.execve(b'/bin/sh', argv, None)\n    return 0\n"),
    "connect_loopback": ("import socket\ndef f(x):\n    s = socket.create_connection(('127.0.0.1', @PORT@), timeout=0.5)\n"
                         "    s.sendall(b'leak')\n    return 'secret-' + x\n"),
    "raw_and_netlink_sockets": ("import socket\ndef f(x):\n    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
                                "    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n    return 0\n"),
    "write_outside_scratch": _WRITE_MARKERS + "def f(x):\n    touch_all()\n    return 0\n",
    "write_outside_scratch_then_raise": _WRITE_MARKERS + "touch_all()\nimport os\nos.makedirs('/tmp/x/y')\n",
    "read_parent_environ": ("def f(x):\n    return open('/proc/1/environ').read()\n"),
    "double_fork_daemon": _WRITE_MARKERS + ("import os, time\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n"
                                            "        if os.fork() == 0:\n            time.sleep(0.5)\n"
                                            "            touch_all()\n        os._exit(0)\n    return 'nope'\n"),
    "kill_parent": "import os\ndef f(x):\n    os.kill(os.getppid(), 9)\n    return 0\n",
    "kill_everything": "import os\ndef f(x):\n    os.kill(-1, 9)\n    return 0\n",
    "symlink_to_host_file": ("import os\ndef f(x):\n    os.symlink('@VICTIM@', 'link')\n    open('link', 'w').write('owned')\n"
                             "    os.symlink('/etc/passwd', 'pw')\n    return open('pw').read()\n"),
    "busy_loop": "def f(x):\n    while True:\n        pass\n",
    "sleep_forever": "import time\ndef f(x):\n    time.sleep(10 ** 6)\n",
    "blocking_input": "def f(x):\n    return 'secret-' + input()\n",
    "catch_sigxcpu_sigterm": ("import signal\nfor s in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
                              "    signal.signal(s, lambda *a: None)\ndef f(x):\n    while True:\n        pass\n"),
    "huge_allocation": "def f(x):\n    return len(bytearray(64 << 30))\n",
    "growing_allocation": "def f(x):\n    a = []\n    while True:\n        a.append(bytearray(1 << 20))\n",
    "fork_bomb": ("import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
                  "            pass\n"),
    "thread_bomb": ("import threading, time\ndef f(x):\n    for _ in range(5000):\n"
                    "        threading.Thread(target=time.sleep, args=(100,)).start()\n    return 0\n"),
    "stdout_flood": "import sys\ndef f(x):\n    for _ in range(1 << 14):\n        sys.stdout.write('x' * (1 << 16))\n",
    "fill_the_disk": ("def f(x):\n    i = 0\n    while True:\n        with open(f'junk{i}', 'wb') as fh:\n"
                      "            fh.write(b'x' * (1 << 16))\n        i += 1\n"),
    "fd_exhaustion": "def f(x):\n    files = [open('/dev/null') for _ in range(100000)]\n    return len(files)\n",
    "close_std_fds": "import os\nfor fd in (0, 1, 2):\n    os.close(fd)\ndef f(x):\n    return 'nope'\n",
    "deep_recursion": "def f(x):\n    return f(x) + 1\n",
    "deep_recursion_c_stack": ("import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(x, d=0):\n    return f(x, d + 1)\n"),
    "giant_power": "def f(x):\n    return 10 ** (10 ** 8)\n",
    "huge_return": "def f(x):\n    return 'x' * (50 << 20)\n",
    "deeply_nested_return": "def f(x):\n    a = []\n    for _ in range(100000):\n        a = [a]\n    return a\n",
    "self_referencing_return": "def f(x):\n    a = []\n    a.append(a)\n    return a\n",
    "ctypes_segfault": "import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n",
    "unshare_namespaces": ("import ctypes, os\ndef f(x):\n    libc = ctypes.CDLL(None, use_errno=True)\n"
                           "    if libc.unshare(0x10000000 | 0x00020000) == 0:\n        return 'secret-' + x\n"
                           "    raise OSError(ctypes.get_errno(), 'unshare refused')\n"),
}

# Programs that try to be graded as right without computing the answer.
_SCAN_MEMORY = """
import gc, sys
def scan():
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            found += [v for v in obj.values() if isinstance(v, str) and v.startswith('secret-')]
    frame = sys._getframe()
    while frame is not None:
        found += [v for v in list(frame.f_locals.values()) + list(frame.f_globals.values())
                  if isinstance(v, str) and v.startswith('secret-')]
        frame = frame.f_back
    return found
"""

_SCAN_FILES = """
import glob, os
def scan():
    found = []
    paths = glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline') + ['@SECRET_FILE@', '/proc/self/cmdline']
    for root in ('/work', '/tmp', '/root', '/home', os.getcwd()):
        paths += glob.glob(root + '/**/*.json*', recursive=True)[:200]
    for path in paths:
        try:
            text = open(path, 'rb').read().decode('latin-1')
        except Exception:
            continue
        if 'secret-' in text:
            found.append(text[text.index('secret-'):][:39])
    return found
"""

ESCAPES_AND_BOMBS["read_test_files_and_proc"] = _SCAN_FILES + "def f(x):\n    found = scan()\n    return found[0] if found else None\n"

CHEATS = {
    "sys_exit_top_level": "import sys\nsys.exit(0)\n",
    "raise_system_exit": "def f(x):\n    raise SystemExit(0)\n",
    "os_exit": "import os\ndef f(x):\n    os._exit(0)\n",
    "quit": "def f(x):\n    quit()\n",
    "atexit_hook": "import atexit\natexit.register(lambda: print('All tests passed'))\ndef f(x):\n    return 'nope'\n",
    "excepthook": ("import sys\nsys.excepthook = lambda *a: None\ndef f(x):\n    raise AssertionError('ignore me')\n"),
    "always_equal": ("class Any:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
                     "    def __bool__(self): return True\n    def __hash__(self): return 0\n"
                     "def f(x):\n    return Any()\n"),
    "lying_str_subclass": ("class S(str):\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
                           "    __hash__ = str.__hash__\ndef f(x):\n    return S('wrong')\n"),
    "lying_int_list_subclasses": ("class L(list):\n    def __eq__(self, o): return True\n    def __len__(self): return 0\n"
                                  "    def __bool__(self): return True\ndef f(x):\n    return L([1])\n"),
    "scan_gc_and_frames": _SCAN_MEMORY + "def f(x):\n    found = scan()\n    return found[0] if found else None\n",
    "inspect_caller": ("import inspect\ndef f(x):\n    for info in inspect.stack():\n"
                       "        for v in info.frame.f_locals.values():\n"
                       "            if isinstance(v, str) and v.startswith('secret-'):\n                return v\n"
                       "    return 'secret-' + 'guess'\n"),
    "forge_result_channel": ("import os, struct, json\ndef forge(obj):\n    data = json.dumps(obj).encode()\n"
                             "    for fd in range(3, 64):\n        try:\n"
                             "            os.write(fd, struct.pack('>I', len(data)) + data)\n        except OSError:\n"
                             "            pass\nforge({'names': {}})\nforge({'v': True})\n"
                             "def f(x):\n    forge({'v': 'secret-' + 'forged'})\n    forge({'v': True})\n    return None\n"),
    "forge_malformed_replies": ("import os, struct, json\ndef forge(obj):\n    data = json.dumps(obj).encode()\n"
                                "    for fd in range(3, 64):\n        try:\n"
                                "            os.write(fd, struct.pack('>I', len(data)) + data)\n        except OSError:\n"
                                "            pass\nforge({'names': {'f': 5, 'g': {'k': 'value', 'v': {'zz': 1}}}, 'error': 7})\n"
                                "def f(x):\n    forge([1, 2])\n    return 0\n"),
    "forge_garbage": ("import os\ndef f(x):\n    for fd in range(3, 64):\n        try:\n"
                      "            os.write(fd, b'\\xff' * 64)\n        except OSError:\n            pass\n    return 1\n"),
    "patch_builtins": ("import builtins, math, operator\nbuiltins.isinstance = lambda *a: True\nbuiltins.abs = lambda x: 0\n"
                       "builtins.sorted = lambda *a, **k: []\nbuiltins.print = lambda *a, **k: None\n"
                       "math.isclose = lambda *a, **k: True\noperator.eq = lambda a, b: True\n"
                       "str.__eq__ = lambda a, b: True\ndef f(x):\n    return 'nope'\n"),
    "settrace_skip": ("import sys\ndef tracer(frame, event, arg):\n    if event == 'line':\n"
                      "        try:\n            frame.f_lineno = frame.f_lineno + 1\n        except Exception:\n"
                      "            pass\n    return tracer\nsys.settrace(tracer)\ndef f(x):\n    return 'nope'\n"),
    "print_success": "print('All tests passed')\nprint('OK')\ndef f(x):\n    print('passed')\n    return None\n",
    "env_detection": ("import os\ndef f(x):\n    if any(k.startswith(('PYTEST', 'RLTF', 'CI')) for k in os.environ):\n"
                      "        return 'secret-' + 'grader'\n    return os.environ.get('RLTF_EXPECTED_ANSWER')\n"),
    "unclosed_triple_quote": "def f(x):\n    return 'nope'\n'''\n",
    "redefine_assert_helpers": "AssertionError = None\n__builtins__ = {}\ndef f(x):\n    return 1\n",
    "generator_return": "def f(x):\n    return (c for c in 'secret-' + x)\n",
}

STDIO_CHEATS = {
    "sys_exit_before_output": "import sys\nsys.exit(0)\n",
    "print_success": "print('All tests passed')\n",
    "print_many_candidates": "x = input()\nprint('secret-a', 'secret-' + 'b', 'secret-c')\n",
    "print_nan_inf": "print(float('nan'))\nprint(float('inf'))\n",
    "scan_memory_for_expected_output": _SCAN_MEMORY + "input()\nprint((scan() or [''])[0])\n",
    "write_to_fd1_directly_wrong": "import os\nos.write(1, b'wrong\\n')\n",
    "empty_output": "",
}
