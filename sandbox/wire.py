"""Framing and the plain-data codec spoken between the sandbox's trusted side and the program's process.

Standard library only: the fork-server and the program's process import this file as a top-level module (they
run with ``python -S``), the trusted side imports it as ``sandbox.wire``.

Messages are a 4-byte big-endian length followed by UTF-8 JSON; every request carries an ``id`` and its reply
must carry the same one. JSON, not pickle or marshal: the program's process is hostile and may write any bytes
to its end of the channel, so the trusted side only ever parses data, and `Decoder` enforces its caps (size,
depth, element count, integer size, hash collisions) while it builds the value. Values are tagged so that tuples,
sets, dicts with non-string keys, big ints, bytes and complex numbers survive the trip; every JSON object inside
an encoded value is a tag. Anything that is not plain data stays in the program's process and travels as an
opaque handle ``{"h": id}`` whose only operation is a call back into that process.
"""
from __future__ import annotations

import builtins
import collections
import json
import socket
import struct
import time

_HEADER = struct.Struct(">I")
_SMALL_INT = 1 << 62
_HASH_MODULUS = (1 << 61) - 1  # ints at least this large can share a hash: hash(n) is n modulo it
_PLAIN_CONTAINERS = (list, tuple, dict, set, frozenset)


class WireError(Exception):
    """The peer sent something that is not a well-formed message (too big, truncated, not JSON, over a cap)."""


class PeerClosed(WireError):
    """The peer closed its end (the process died or closed the descriptor)."""


# One instance (json.dumps(..., separators=) builds one per call); UTF-8 as is, so text does not grow 6-fold.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def send_msg(sock: socket.socket, obj) -> None:
    data = _ENCODER.encode(obj).encode("utf-8", "surrogatepass")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _json_int(text: str) -> int:
    # Ints beyond 62 bits travel as {"i": hex}: a long decimal literal is malformed, and converting one would
    # cost quadratic time.
    if len(text) > 20:
        raise WireError("integer literal too long")
    return int(text)


_DECODER = json.JSONDecoder(parse_int=_json_int)  # one instance: json.loads(parse_int=) builds one per call


class FrameReader:
    """Reads messages from one socket. Each read asks for everything that has arrived, so a reply usually costs
    one ``recv``; bytes past the frame stay here for the next read (where a frame nobody asked for is refused
    by its id, see sandbox/channel.py)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, need: int, deadline: float | None) -> None:
        while len(self.buffer) < need:
            if deadline is not None:  # per read: a peer trickling one byte at a time still ends at the deadline
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("deadline passed while reading a message")
                self.sock.settimeout(remaining)
            # At least what is waiting for a small reply, at most 1 MiB per read (a frame may announce megabytes).
            chunk = self.sock.recv(min(max(need - len(self.buffer), 1 << 16), 1 << 20))
            if not chunk:
                raise PeerClosed("peer closed the channel")
            self.buffer += chunk

    def recv(self, max_bytes: int, deadline: float | None = None):
        """One message; WireError when it is longer than ``max_bytes`` (checked before reading it) or not JSON;
        TimeoutError when it is not complete by ``deadline`` (time.monotonic())."""
        self._fill(_HEADER.size, deadline)
        (size,) = _HEADER.unpack_from(self.buffer)
        if size > max_bytes:
            raise WireError(f"message of {size} bytes exceeds the limit of {max_bytes}")
        end = _HEADER.size + size
        self._fill(end, deadline)
        data = bytes(self.buffer[_HEADER.size:end])
        del self.buffer[:end]
        try:
            return _DECODER.decode(data.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError) as exc:
            raise WireError(f"malformed message: {str(exc)[:200]}") from None


class Handle:
    """An object that lives in the program's process. It can only be called (the call runs there, through
    ``remote``); it equals nothing but itself, and every other use (truth value, length, iteration, attributes,
    arithmetic) is a TypeError, so no behaviour of the program's object ever runs on the trusted side."""

    __slots__ = ("ref", "type_name", "remote")

    def __init__(self, ref: int, type_name: str = "object", remote=None):
        self.ref = ref
        self.type_name = type_name
        self.remote = remote

    def __repr__(self):
        return f"<program object {self.type_name} #{self.ref}>"

    def __call__(self, *args, **kwargs):
        if self.remote is None:
            raise TypeError(f"{self!r} cannot be called here")
        return self.remote(self, args, kwargs)

    def _opaque(self, *_):
        raise TypeError(f"{self!r} is a program object: it can only be called")

    __bool__ = __len__ = __iter__ = __getitem__ = __contains__ = __index__ = __int__ = __float__ = _opaque


def encode(value, to_handle=None, depth: int = 0):
    """Value -> JSON-able tagged structure. The trusted side sends plain data (and built-in types or functions,
    e.g. MBPP 533 passes `int`, and handles); the program's side turns everything else into a handle through
    ``to_handle``. Subclasses of plain types are encoded as their base type."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(value)
    if value is None or t is bool or t is str or t is float:
        return value
    if t is int:
        return value if -_SMALL_INT < value < _SMALL_INT else {"i": format(value, "x")}
    if t is Handle:
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
    if to_handle is not None:
        return {"h": to_handle(value), "n": type(value).__name__[:60]}
    name = getattr(value, "__name__", None)
    if type(name) is str and not name.startswith("_") and getattr(builtins, name, None) is value:
        return {"B": name}
    raise TypeError(f"cannot send a {type(value).__name__} to the program (plain data only)")


class Caps:
    """Limits a decoded value must respect; checked while it is built, so a hostile reply costs at most a
    bounded amount of work (JSON parsing itself is bounded by the message size)."""

    def __init__(self, max_depth: int = 64, max_items: int = 1 << 18, max_int_bits: int = 1 << 16,
                 max_same_hash: int = 16):
        self.max_depth, self.max_items = max_depth, max_items
        self.max_int_bits, self.max_same_hash = max_int_bits, max_same_hash


DEFAULT_CAPS = Caps()


class Decoder:
    """Tagged JSON -> value, building only genuine built-in types plus Handles (through ``from_handle``).

    ``builtins_ok``: whether ``{"B": name}`` may name a built-in; only the program's side accepts it (a test
    passing `int`); on the trusted side nothing from the program may become one of its own builtins."""

    def __init__(self, from_handle=None, caps: Caps = DEFAULT_CAPS, builtins_ok: bool = False):
        self.from_handle, self.caps, self.builtins_ok = from_handle, caps, builtins_ok
        self.budget = caps.max_items
        # Large ints by hash over the whole value: the test may turn a list of them into a set or dict keys.
        self.big_hashes: collections.Counter = collections.Counter()

    def _big(self, value: int) -> int:
        if not -_HASH_MODULUS < value < _HASH_MODULUS:
            self.big_hashes[hash(value)] += 1
            if self.big_hashes[hash(value)] > self.caps.max_same_hash:
                raise WireError("integers with colliding hashes")
        return value

    def decode(self, data):
        try:
            return self._value(data, 0)
        except WireError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
            raise WireError(f"malformed value: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _items(self, body, depth: int) -> list:
        if type(body) is not list:
            raise WireError("container body is not a list")
        self.budget -= len(body)
        if self.budget < 0:
            raise WireError(f"value has more than {self.caps.max_items} elements")
        return [self._value(v, depth) for v in body]

    def _hashed(self, values: list) -> list:
        """Refuse sets and dict keys built to collide: inserting n equal-hash elements costs n^2 comparisons."""
        if len(values) > self.caps.max_same_hash:
            counts = collections.Counter(map(hash, values))
            if max(counts.values()) > self.caps.max_same_hash:
                raise WireError("set or dict keys with colliding hashes")
        return values

    def _value(self, data, depth: int):
        t = type(data)
        if data is None or t is bool or t is float or t is str:
            return data
        if t is int:
            return data if -_HASH_MODULUS < data < _HASH_MODULUS else self._big(data)
        if depth >= self.caps.max_depth:
            raise WireError(f"value nested deeper than {self.caps.max_depth}")
        depth += 1
        if t is list:
            return self._items(data, depth)
        if t is not dict or not 1 <= len(data) <= 2:
            raise WireError(f"unexpected {t.__name__} in value")
        tag, body = next(iter(data.items()))
        if tag == "t":
            return tuple(self._items(body, depth))
        if tag == "d":
            pairs = self._items(body, depth)
            if any(type(p) is not list or len(p) != 2 for p in pairs):
                raise WireError("dict entry is not a pair")
            return dict(zip(self._hashed([p[0] for p in pairs]), [p[1] for p in pairs]))
        if tag == "s":
            return set(self._hashed(self._items(body, depth)))
        if tag == "f":
            return frozenset(self._hashed(self._items(body, depth)))
        if tag == "i":
            if type(body) is not str or len(body) * 4 > self.caps.max_int_bits + 4:
                raise WireError(f"integer larger than {self.caps.max_int_bits} bits")
            return self._big(int(body, 16))
        if tag == "y":
            return bytes.fromhex(body)
        if tag == "c":
            real, imag = body
            if type(real) is not float and type(real) is not int or type(imag) is not float and type(imag) is not int:
                raise WireError("malformed complex number")
            return complex(real, imag)
        if tag == "B" and self.builtins_ok:
            if type(body) is not str or body.startswith("_") or not hasattr(builtins, body):
                raise WireError(f"unknown built-in {body!r}")
            return getattr(builtins, body)
        if tag == "h" and self.from_handle is not None and type(body) is int:
            name = data.get("n", "object")
            return self.from_handle(body, name[:60] if type(name) is str else "object")
        raise WireError(f"unexpected tag {str(tag)[:20]!r}")


def decode(data, from_handle=None, caps: Caps = DEFAULT_CAPS, builtins_ok: bool = False):
    """`Decoder(...).decode(data)`: WireError on anything malformed or over a cap."""
    return Decoder(from_handle, caps, builtins_ok).decode(data)
