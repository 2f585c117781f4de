"""Framing and the plain-data codec spoken between the sandbox's trusted side and the program's process.

Standard library only: the fork-server and the program's process import this file as a top-level module (they
run with ``python -I -S``), the trusted side imports it as ``sandbox.wire``.

Messages are a 4-byte big-endian length followed by UTF-8 JSON. JSON, not pickle or marshal: the program's
process is hostile and may write any bytes to its end of the channel, so the trusted side must only ever parse
data. Values are tagged so that tuples, sets, dicts with non-string keys, big ints, bytes and complex numbers
survive the trip; every JSON object in an encoded value is a tag, so decoding is unambiguous. Anything that is
not plain data stays in the program's process and travels as an opaque handle ``{"h": id}``.
"""
from __future__ import annotations

import builtins
import collections
import json
import socket
import struct
import types

_HEADER = struct.Struct(">I")
_SMALL_INT = 1 << 62


class WireError(Exception):
    """The peer sent something that is not a well-formed message (too big, truncated, not JSON, bad tag)."""


class PeerClosed(WireError):
    """The peer closed its end (the process died or closed the descriptor)."""


# One instance (json.dumps(..., separators=) builds one per call); UTF-8 as is, so text does not grow 6-fold.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def send_msg(sock: socket.socket, obj) -> None:
    data = _ENCODER.encode(obj).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise PeerClosed("peer closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_msg(sock: socket.socket, max_bytes: int):
    """One message; WireError when it is longer than ``max_bytes`` or not JSON (the stream is then unusable)."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > max_bytes:
        raise WireError(f"message of {size} bytes exceeds the limit of {max_bytes}")
    try:
        return json.loads(_recv_exact(sock, size))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"malformed message: {exc}") from None


class Handle:
    """An object that lives in the program's process. Only identity comparison: a handle never equals a plain
    value, so objects with lying ``__eq__`` cannot pass a test. Operations go back to the program's process
    through ``remote`` (set by the trusted side)."""

    __slots__ = ("ref", "type_name", "remote")

    def __init__(self, ref: int, type_name: str = "object", remote=None):
        self.ref = ref
        self.type_name = type_name
        self.remote = remote

    def __eq__(self, other):
        return isinstance(other, Handle) and other.ref == self.ref

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(("handle", self.ref))

    def __repr__(self):
        return f"<program object {self.type_name} #{self.ref}>"

    def _op(self, op, *args):
        if self.remote is None:
            raise TypeError(f"{self!r} cannot be used here")
        return self.remote(op, self, list(args))

    def __call__(self, *args, **kwargs):
        return self._op("call", list(args), kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._op("getattr", name)

    def __iter__(self):
        return iter(self._op("list"))

    def __len__(self):
        return self._op("len")

    def __bool__(self):
        return self._op("bool")

    def __getitem__(self, key):
        return self._op("getitem", key)

    def __contains__(self, item):
        return self._op("contains", item)

    def __str__(self):
        return self._op("str")


def encode(value, to_handle=None, depth: int = 0):
    """Plain data -> JSON-able tagged structure. Non-plain values go through ``to_handle`` (returns a Handle)
    or raise TypeError. Subclasses of the plain types are encoded as their base type: whatever their methods
    claim, the receiver rebuilds genuine built-in values, so a lying ``__eq__`` does not survive the trip."""
    if depth > 200:
        raise ValueError("value nested too deeply")
    t = type(value)
    if value is None or t is bool or t is str or t is float:
        return value
    if t is int:
        return value if -_SMALL_INT < value < _SMALL_INT else {"i": format(value, "x")}
    if isinstance(value, Handle):
        return {"h": value.ref}
    d = depth + 1
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return encode(int.__index__(value), to_handle, d)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, list):
        return [encode(v, to_handle, d) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [encode(v, to_handle, d) for v in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, to_handle, d), encode(v, to_handle, d)] for k, v in dict.items(value)]}
    if isinstance(value, frozenset):
        return {"f": [encode(v, to_handle, d) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [encode(v, to_handle, d) for v in set.__iter__(value)]}
    if isinstance(value, (bytes, bytearray)):
        return {"y": bytes(value).hex()}
    if isinstance(value, complex):
        return {"c": [complex.__complex__(value).real, complex.__complex__(value).imag]}
    if isinstance(value, collections.deque):
        return {"q": [encode(v, to_handle, d) for v in collections.deque.__iter__(value)]}
    if isinstance(value, (type, types.BuiltinFunctionType)):  # e.g. MBPP 533 passes `int` as an argument
        name = getattr(value, "__name__", None)
        if type(name) is str and getattr(builtins, name, None) is value:
            return {"B": name}
    if to_handle is not None:
        return {"h": to_handle(value).ref, "n": type(value).__name__[:60]}
    raise TypeError(f"cannot send a {type(value).__name__} to the program (plain data only)")


def decode(data, from_handle=None):
    """Inverse of `encode`; builds only built-in types (and Handles through ``from_handle``).
    Raises WireError on anything malformed."""
    try:
        return _decode(data, from_handle)
    except WireError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise WireError(f"malformed value: {type(exc).__name__}: {exc}") from None


def _decode(data, from_handle):
    t = type(data)
    if data is None or t is bool or t is int or t is float or t is str:
        return data
    if t is list:
        return [_decode(v, from_handle) for v in data]
    if t is not dict or len(data) not in (1, 2):
        raise WireError(f"unexpected {t.__name__} in value")
    (tag, body), *_ = data.items()
    if tag == "t":
        return tuple(_decode(v, from_handle) for v in body)
    if tag == "d":
        return {_decode(k, from_handle): _decode(v, from_handle) for k, v in body}
    if tag == "s":
        return {_decode(v, from_handle) for v in body}
    if tag == "f":
        return frozenset(_decode(v, from_handle) for v in body)
    if tag == "i":
        return int(body, 16)
    if tag == "y":
        return bytes.fromhex(body)
    if tag == "c":
        return complex(float(body[0]), float(body[1]))
    if tag == "q":
        return collections.deque(_decode(v, from_handle) for v in body)
    if tag == "B":
        if type(body) is not str or body.startswith("_") or not hasattr(builtins, body):
            raise WireError(f"unknown built-in {body!r}")
        return getattr(builtins, body)
    if tag == "h":
        if from_handle is None or type(body) is not int:
            raise WireError("unexpected handle")
        name = data.get("n", "object")
        return from_handle(body, name if type(name) is str else "object")
    raise WireError(f"unknown tag {tag!r}")
