"""Specification of the field readers every payload decoder is built from."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from wire_values import JUNK

from robeing.protocol.errors import DecodeError
from robeing.protocol.fields import (
    blob,
    count,
    ensure,
    finite,
    items,
    mapping,
    need,
    strings,
    text,
)


def test_need_reads_a_field_of_the_given_types() -> None:
    """Given a map, Expect need to return the field's value when its type is one asked for."""
    data = {"n": 3, "x": 1.5, "s": "a", "ok": True}

    assert need(data, "n", int) == 3
    assert need(data, "x", (int, float)) == 1.5
    assert need(data, "s", str) == "a"
    assert need(data, "ok", bool) is True


def test_need_gives_the_default_for_an_absent_or_null_field() -> None:
    """Given an absent field or one that is None, Expect the default, unchecked."""
    assert need({}, "n", int, 7) == 7
    assert need({"n": None}, "n", int, None) is None


@pytest.mark.parametrize(
    "data, types, message",
    [
        ({}, int, "'n' is missing"),
        ({"n": None}, int, "'n' is missing"),
        ({"n": "3"}, int, "'n' must be int, got str"),
        ({"n": True}, int, "'n' must be int, got bool"),
        ({"n": False}, (int, float), "'n' must be int or float, got bool"),
        ([("n", 1)], int, "'payload' must be a map"),
    ],
)
def test_need_refuses_missing_and_mistyped_fields_naming_them(
    data: Any, types: type | tuple[type, ...], message: str
) -> None:
    """Given a missing field, a field of another type (bool is not an int), or no map,
    Expect DecodeError whose message names the field."""
    with pytest.raises(DecodeError, match=message):
        need(data, "n", types)


def test_count_checks_type_and_range() -> None:
    """Expect count to accept ints in range and to refuse bools, floats and ints outside it."""
    assert count(0, "n") == 0
    assert count(9, "n", low=1, high=9) == 9
    assert count(-5, "n", low=None) == -5
    for bad, kw in [(-1, {}), (10, {"low": 1, "high": 9}), (0, {"low": 1}), (True, {}), (1.0, {})]:
        with pytest.raises(DecodeError, match="'n'"):
            count(bad, "n", **kw)


def test_finite_accepts_ints_and_floats_but_not_nan_infinity_or_bool() -> None:
    assert finite(2, "t") == 2.0 and isinstance(finite(2, "t"), float)
    for bad in (math.nan, math.inf, -math.inf, True, "1.0", None):
        with pytest.raises(DecodeError, match="'t' must be a finite number"):
            finite(bad, "t")


def test_text_and_strings_bound_lengths() -> None:
    """Expect strings to return a tuple, and both readers to refuse what is too long."""
    assert text("abc", "s", 3) == "abc"
    assert strings(["a", "b"], "l", max_items=2, max_len=1) == ("a", "b")
    with pytest.raises(DecodeError, match="longer than 3"):
        text("abcd", "s", 3)
    with pytest.raises(DecodeError, match="more than 2 items"):
        strings(["a", "b", "c"], "l", max_items=2)
    with pytest.raises(DecodeError, match=r"'l\[\]' is longer than 1"):
        strings(["ab"], "l", max_len=1)
    with pytest.raises(DecodeError, match=r"'l\[\]' must be a string"):
        strings(["a", 1], "l")


def test_blob_items_and_mapping_check_shape() -> None:
    assert blob(b"\x00" * 32, "d", 32) == bytes(32)
    assert items([1, 2], "l", 2) == [1, 2]
    assert mapping({"a": 1}, "m") == {"a": 1}
    with pytest.raises(DecodeError, match="32 bytes, got 31"):
        blob(bytes(31), "d", 32)
    with pytest.raises(DecodeError, match="must be bytes, got str"):
        blob("x", "d")
    with pytest.raises(DecodeError, match="must hold 2 items, got 3"):
        items([1, 2, 3], "l", 2)
    with pytest.raises(DecodeError, match="must be a map, got list"):
        mapping([], "m")


def test_ensure_raises_its_message() -> None:
    ensure(True, "never")
    with pytest.raises(DecodeError, match=r"^bad shape$"):
        ensure(False, "bad shape")


READERS: list[Callable[[Any], Any]] = [
    lambda v: need(v, "k", int),
    lambda v: need(v, "k", (int, float), 0),
    lambda v: count(v, "k", low=1, high=9),
    lambda v: finite(v, "k"),
    lambda v: text(v, "k", 8),
    lambda v: strings(v, "k", max_items=3, max_len=4),
    lambda v: blob(v, "k", 4),
    lambda v: items(v, "k", 2),
    lambda v: mapping(v, "k"),
]


@settings(max_examples=300, deadline=None)
@given(JUNK)
def test_garbage_never_raises_anything_but_decode_error(value: Any) -> None:
    """Given any value msgpack can decode, When each reader reads it,
    Expect a value or DecodeError, never another exception."""
    for read in READERS:
        try:
            read(value)
        except DecodeError:
            pass
