"""The frames of openpi's websocket policy protocol: msgpack maps whose numpy arrays are maps
{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype string, b"shape": shape} (numpy
scalars: {b"__npgeneric__": True, b"data": value, b"dtype": ...}). Object, void and complex
arrays are refused: a frame never carries pickled Python objects.

The exchange: the server sends one metadata frame when a client connects; then each client frame
is an observation dict and each answer a dict with "actions" ((horizon, dim) array). A text frame
from the server is an error message (the server then closes the connection).

Both ends use it: the remote backend (models/remote.py) and vla-serve (serving/server.py).
"""

from __future__ import annotations

import msgpack
import numpy as np

REFUSED_KINDS = ("O", "V", "c")


class WireError(ValueError):
    """A frame that is not a valid protocol message (names the key and what was wrong)."""


def _encode(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in REFUSED_KINDS:
        raise WireError(f"numpy dtype {obj.dtype} cannot be sent (object, void and complex arrays are refused)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send {type(obj).__name__}")


def _decode(obj: dict):
    if b"__ndarray__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            if dtype.kind in REFUSED_KINDS:
                raise WireError(f"array dtype {dtype} refused")
            return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed array: {exc}") from None
    if b"__npgeneric__" in obj:
        try:
            return np.dtype(obj[b"dtype"]).type(obj[b"data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed numpy scalar: {exc}") from None
    return obj


def pack(message: dict) -> bytes:
    """A dict (str keys; numbers, strings, lists, dicts, numpy arrays and scalars) -> one frame."""
    return msgpack.packb(message, default=_encode)


def unpack(frame: bytes) -> dict:
    """One binary frame -> dict; WireError when it is not a msgpack map."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary frame, got {type(frame).__name__}")
    try:
        message = msgpack.unpackb(frame, object_hook=_decode)
    except WireError:
        raise
    except Exception as exc:       # msgpack raises several unrelated types for bad bytes
        raise WireError(f"not a msgpack frame: {exc}") from None
    if not isinstance(message, dict):
        raise WireError(f"expected a map, got {type(message).__name__}")
    return message
