"""The sandbox: run untrusted programs against a problem's unit tests, fast and isolated, and return Verdicts.

`run_program` grades one program; `LocalSandboxPool` grades many on N fork-servers without Ray;
`sandbox.pool` (imported separately, it needs Ray) holds the Ray actors. See sandbox/server.py for the isolation
and sandbox/isolation.py for its levels.
"""
from sandbox.forkserver import ForkServer, SandboxUnavailable, ServerDied
from sandbox.local_pool import LocalSandboxPool, default_num_workers, run_program
from sandbox.verdict import ProgramError, TestResult, Verdict

__all__ = [
    "ForkServer",
    "LocalSandboxPool",
    "ProgramError",
    "SandboxUnavailable",
    "ServerDied",
    "TestResult",
    "Verdict",
    "default_num_workers",
    "run_program",
]
