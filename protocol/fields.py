"""Readers for the fields of decoded msgpack, shared by every payload decoder.

A payload from the wire is untrusted data: each reader checks one value and
returns it typed, or raises :class:`~robeing.protocol.errors.DecodeError`
naming the field, so a decoder is a list of reads and nothing else can escape
it. ``bool`` never passes where an int or float is asked for: msgpack keeps
them apart, Python's ``isinstance`` does not.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import DecodeError

__all__ = [
    "REQUIRED",
    "blob",
    "count",
    "ensure",
    "finite",
    "items",
    "mapping",
    "need",
    "strings",
    "text",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of :func:`need` meaning: the field must be present."""


def ensure(ok: bool, message: str) -> None:
    """Raise ``DecodeError(message)`` unless ``ok`` (a check no reader covers).

    Raises:
        DecodeError: ``ok`` is false.
    """
    if not ok:
        raise DecodeError(message)


def _fail(what: str, expected: str, value: Any) -> DecodeError:
    # The type, not the value: a value from the wire may be huge or hostile.
    return DecodeError(f"field {what!r} must be {expected}, got {type(value).__name__}")


def _is(value: Any, types: type | tuple[type, ...]) -> bool:
    kinds = types if isinstance(types, tuple) else (types,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def mapping(value: Any, what: str) -> dict[Any, Any]:
    """A map.

    Raises:
        DecodeError: ``value`` is not a map.
    """
    if not isinstance(value, dict):
        raise _fail(what, "a map", value)
    return value


def need(data: Any, key: str, types: type | tuple[type, ...], default: Any = REQUIRED) -> Any:
    """``data[key]``, one of ``types``; ``default`` when absent or None.

    Raises:
        DecodeError: ``data`` is not a map, the field is missing without a
            default, or it has another type.
    """
    value = mapping(data, "payload").get(key)
    if value is None:
        if default is REQUIRED:
            raise DecodeError(f"field {key!r} is missing")
        return default
    if not _is(value, types):
        kinds = types if isinstance(types, tuple) else (types,)
        raise _fail(key, " or ".join(t.__name__ for t in kinds), value)
    return value


def count(value: Any, what: str, *, low: int | None = 0, high: int | None = None) -> int:
    """An int in ``[low, high]`` (by default: not negative).

    Raises:
        DecodeError: not an int, or out of range.
    """
    if not _is(value, int):
        raise _fail(what, "an integer", value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'-inf' if low is None else low}..{'inf' if high is None else high}"
        raise DecodeError(f"field {what!r} must be in {bounds}")
    return int(value)


def finite(value: Any, what: str) -> float:
    """A finite number, as a float.

    Raises:
        DecodeError: not an int or float, NaN or infinite.
    """
    if not _is(value, (int, float)) or not math.isfinite(value):
        raise _fail(what, "a finite number", value)
    return float(value)


def text(value: Any, what: str, max_len: int | None = None) -> str:
    """A string of at most ``max_len`` characters.

    Raises:
        DecodeError: not a string, or too long.
    """
    if not isinstance(value, str):
        raise _fail(what, "a string", value)
    if max_len is not None and len(value) > max_len:
        raise DecodeError(f"field {what!r} is longer than {max_len} characters")
    return value


def strings(
    value: Any, what: str, *, max_items: int | None = None, max_len: int | None = None
) -> tuple[str, ...]:
    """A list of at most ``max_items`` strings, each at most ``max_len`` long.

    Raises:
        DecodeError: not a list, too many items, or an item is not such a string.
    """
    found = items(value, what)
    if max_items is not None and len(found) > max_items:
        raise DecodeError(f"field {what!r} holds more than {max_items} items")
    return tuple(text(s, f"{what}[]", max_len) for s in found)


def blob(value: Any, what: str, size: int | None = None) -> bytes:
    """Bytes, exactly ``size`` of them when given.

    Raises:
        DecodeError: not bytes, or another length.
    """
    if not isinstance(value, bytes):
        raise _fail(what, "bytes", value)
    if size is not None and len(value) != size:
        raise DecodeError(f"field {what!r} must be {size} bytes, got {len(value)}")
    return bytes(value)


def items(value: Any, what: str, length: int | None = None) -> list[Any]:
    """A list (an array on the wire), of exactly ``length`` items when given.

    Raises:
        DecodeError: not a list, or another length.
    """
    if not isinstance(value, list):
        raise _fail(what, "a list", value)
    if length is not None and len(value) != length:
        raise DecodeError(f"field {what!r} must hold {length} items, got {len(value)}")
    return value
