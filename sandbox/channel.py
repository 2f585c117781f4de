"""The trusted side's end of one program's socket: numbered requests, deadlines, size caps on replies.

Every request carries a fresh id and the reply must carry the same one: a frame left over from an earlier
request (a program thread answering late, a forged frame) is a protocol error, never the answer to a later test.
The channel also watches the fork-server's control socket for the news that the program's process has ended
(its socket may stay open in a leftover grandchild).
"""
from __future__ import annotations

import select
import socket
import time

from sandbox import wire


class ChildGone(Exception):
    """The program's process ended without answering."""


class ChildTimeout(Exception):
    """No answer before the deadline."""


class ServerDied(RuntimeError):
    """The fork-server process itself is gone: an infrastructure failure, never the program's."""


class ProgramChannel:
    def __init__(self, sock: socket.socket, server, events: list[dict]):
        self.sock = sock
        self.reader = wire.FrameReader(sock)
        self.server = server  # the ForkServer: its control socket and `_ctrl_recv`
        self.events = events
        self.next_id = 1

    def request(self, msg: dict, deadline: float, max_bytes: int) -> dict:
        """Send ``msg`` and return the reply to it (a dict). ChildTimeout, ChildGone, ServerDied or WireError."""
        msg_id = msg["id"] = self.next_id
        self.next_id += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChildTimeout()
        self.sock.settimeout(remaining)  # a process that stops reading cannot hold a large request forever
        with self:
            wire.send_msg(self.sock, msg)
        while True:
            for event in self.events:
                if event.get("ev") == "fork_failed":
                    raise ServerDied(f"sandbox server could not fork: {event.get('message')}")
            if any(e.get("ev") == "exited" for e in self.events):
                ready, _, _ = select.select([self.sock], [], [], 0)
                if not ready and not self.reader.buffer:
                    raise ChildGone("the program's process ended without answering")
                return self._read(msg_id, min(deadline, time.monotonic() + 0.05), max_bytes)
            if self.reader.buffer:  # more than one frame arrived earlier: refused by its id in _read
                return self._read(msg_id, deadline, max_bytes)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildTimeout()
            ready, _, _ = select.select([self.sock, self.server.ctrl], [], [], remaining)
            if self.sock in ready:
                return self._read(msg_id, deadline, max_bytes)
            if self.server.ctrl in ready:
                self.events.append(self.server._ctrl_recv(timeout=0))

    # The socket's failures as the channel's (a timeout is ChildTimeout, a closed peer ChildGone), and the socket
    # left blocking again: `with self:` around every send and read (a class, not contextlib: it runs per message).
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        self.sock.settimeout(None)
        if kind is None:
            return False
        if issubclass(kind, wire.PeerClosed):
            raise ChildGone("the program's process ended without answering") from None
        if issubclass(kind, TimeoutError):
            raise ChildTimeout() from None
        if issubclass(kind, OSError):
            raise ChildGone("the program's process closed its channel") from None
        return False

    def _read(self, msg_id: int, deadline: float, max_bytes: int) -> dict:
        with self:
            reply = self.reader.recv(max_bytes, deadline)
        if type(reply) is not dict:
            raise wire.WireError("reply is not an object")
        if reply.get("id") != msg_id or type(reply.get("id")) is not int:
            raise wire.WireError(f"reply to request {str(reply.get('id'))[:20]} while request {msg_id} was pending")
        return reply
