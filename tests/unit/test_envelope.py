"""Specification of the envelope: robeing's one wire format and its strict decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_values import PAYLOADS

from robeing.protocol.envelope import (
    BROADCAST,
    PROTOCOL_VERSION,
    SIGNATURE_SIZE,
    Envelope,
    Limits,
    body_fields,
    envelope_from_fields,
    new_id,
    pack,
    split_wire,
    unpack,
)
from robeing.protocol.errors import DecodeError, ProtocolError, TooLarge, VersionError

FAKE_SIGNATURE = bytes(range(SIGNATURE_SIZE))

WireFactory = Callable[..., bytes]


def wire_for(
    env: Envelope,
    *,
    encryption: str = "none",
    cert: bytes = b"certificate-bytes",
    key_id: str = "0123456789abcdef",
    drop: tuple[str, ...] = (),
    **overrides: Any,
) -> bytes:
    """Frame ``env`` as wire bytes (the signature is not checked at this layer)."""
    fields = body_fields(env, encryption, cert, key_id)
    if encryption == "none":
        fields["payload"] = env.payload
    else:
        fields["ciphertext"] = b"\x00" * 40
    fields.update(overrides)
    for name in drop:
        fields.pop(name, None)
    return FAKE_SIGNATURE + pack(fields)


def sample_envelope() -> Envelope:
    return Envelope(
        "task.result",
        {"rows": [1, 2.5, "three", None, True, b"\x00\xff"], "nested": {"k": [{"deep": "x"}]}},
        receiver="worker-1",
        sender="coordinator-1",
        priority=7,
        requires_ack=True,
        reply_to="amq.rabbitmq.reply-to",
        in_reply_to=new_id(),
        timestamp=1_700_000_000.25,
    )


@pytest.fixture
def make_wire() -> WireFactory:
    """Factory: wire bytes of a valid envelope, with fields overridden or dropped."""

    def make(env: Envelope | None = None, **kw: Any) -> bytes:
        return wire_for(env or sample_envelope(), **kw)

    return make


# -- round trip ---------------------------------------------------------------


def test_valid_envelope_round_trips(make_wire: WireFactory) -> None:
    """Given a valid envelope framed as wire bytes, When split and rebuilt,
    Expect every field back unchanged, the signature and the exact body separated."""
    env = sample_envelope()
    data = make_wire(env)

    raw = split_wire(data)
    rebuilt = envelope_from_fields(raw.fields, raw.fields["payload"])

    assert rebuilt == env
    assert raw.signature == FAKE_SIGNATURE
    assert raw.body == data[SIGNATURE_SIZE:]
    assert unpack(raw.body) == raw.fields


def test_encrypted_body_carries_ciphertext_instead_of_payload(make_wire: WireFactory) -> None:
    """Given a body with encryption 'box' and a ciphertext but no payload,
    When split, Expect it accepted with the ciphertext as bytes."""
    raw = split_wire(make_wire(encryption="box"))

    assert raw.fields["encryption"] == "box"
    assert "payload" not in raw.fields
    assert isinstance(raw.fields["ciphertext"], bytes)


def test_envelope_defaults_are_a_broadcast_of_protocol_1_0() -> None:
    """Given an envelope built with only a type, Expect a broadcast at priority 5,
    protocol '1.0', and a fresh 128-bit hex id."""
    a, b = Envelope("note"), Envelope("note")

    assert a.is_broadcast and a.receiver == BROADCAST
    assert a.priority == 5 and a.protocol_version == PROTOCOL_VERSION == "1.0"
    assert len(a.id) == 32 and int(a.id, 16) >= 0
    assert a.id != b.id


@pytest.mark.parametrize("priority", [-1, 10, 2.5, "5"])
def test_envelope_refuses_priority_outside_0_to_9(priority: Any) -> None:
    """Given a priority that is not an integer 0-9, When building an envelope, Expect ValueError."""
    with pytest.raises(ValueError, match="priority"):
        Envelope("note", priority=priority)


def test_envelope_refuses_empty_type() -> None:
    """Given an empty message type, When building an envelope, Expect ValueError."""
    with pytest.raises(ValueError, match="type"):
        Envelope("")


def test_pack_refuses_unencodable_values() -> None:
    """Given a value msgpack cannot encode, When packing, Expect TypeError."""
    with pytest.raises(TypeError):
        pack({"x": object()})


# -- size limit ---------------------------------------------------------------


def test_size_limit_is_checked_before_anything_else() -> None:
    """Given garbage one byte over the size limit, When split or unpacked,
    Expect TooLarge (reason too_large), not a decode error."""
    limits = Limits(max_message_bytes=100)
    data = b"\xc1" * 101

    with pytest.raises(TooLarge) as split_exc:
        split_wire(data, limits)
    with pytest.raises(TooLarge):
        unpack(data, limits)
    assert split_exc.value.reason == "too_large"


def test_size_limit_is_inclusive(make_wire: WireFactory) -> None:
    """Given a valid envelope exactly at the size limit, When split, Expect it accepted;
    one byte less of limit, Expect TooLarge."""
    data = make_wire()

    assert split_wire(data, Limits(max_message_bytes=len(data))).fields["type"] == "task.result"
    with pytest.raises(TooLarge):
        split_wire(data, Limits(max_message_bytes=len(data) - 1))


# -- length limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "at_limit", "over_limit"),
    [
        (Limits(max_str_len=5), "abcde", "abcdef"),
        (Limits(max_bin_len=5), b"12345", b"123456"),
        (Limits(max_array_len=3), [1, 2, 3], [1, 2, 3, 4]),
        (Limits(max_map_len=2), {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}),
    ],
    ids=["str", "bin", "array", "map"],
)
def test_length_limits(limits: Limits, at_limit: Any, over_limit: Any) -> None:
    """Given a string/binary/array/map at and one over its length limit,
    When unpacked, Expect the first accepted and the second a DecodeError."""
    assert unpack(pack(at_limit), limits) == at_limit
    with pytest.raises(DecodeError):
        unpack(pack(over_limit), limits)


def test_length_limits_apply_inside_an_envelope(make_wire: WireFactory) -> None:
    """Given an envelope whose payload holds a string over the limit, When split,
    Expect DecodeError."""
    data = make_wire(Envelope("note", "x" * 50))

    with pytest.raises(DecodeError):
        split_wire(data, Limits(max_str_len=49))


# -- nesting depth ------------------------------------------------------------


def nest(depth: int, kind: str) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "map"])
def test_nesting_depth_limit(kind: str) -> None:
    """Given containers nested exactly to max_depth and one deeper,
    When unpacked, Expect the first accepted and the second a DecodeError."""
    limits = Limits(max_depth=4)

    assert unpack(pack(nest(4, kind)), limits) == nest(4, kind)
    with pytest.raises(DecodeError, match="nesting"):
        unpack(pack(nest(5, kind)), limits)


def test_empty_container_past_the_depth_limit_is_refused() -> None:
    """Given an empty list one level past max_depth, When unpacked, Expect DecodeError
    (the container itself is too deep, even with nothing inside)."""
    value: Any = []
    for _ in range(3):
        value = [value]

    with pytest.raises(DecodeError):
        unpack(pack(value), Limits(max_depth=3))


def test_nesting_far_beyond_msgpack_stack_is_a_decode_error() -> None:
    """Given 5000 nested arrays (past msgpack's own parser stack), When unpacked,
    Expect DecodeError, not a recursion or parser exception."""
    with pytest.raises(DecodeError):
        unpack(b"\x91" * 5000 + b"\xc0")


# -- extension types ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pack(msgpack.ExtType(5, b"payload")),
        b"\xd4\x05\x01",  # fixext1, type 5
        b"\xc7\x00\x05",  # ext8 with zero length, type 5
        pack(msgpack.Timestamp(1, 0)),  # the reserved timestamp type -1
        pack({"payload": msgpack.ExtType(1, b"")}),
    ],
    ids=["ext", "fixext1", "ext8-empty", "timestamp", "nested"],
)
def test_extension_types_are_refused(data: bytes) -> None:
    """Given msgpack data holding an extension type (any size, any code),
    When unpacked, Expect DecodeError."""
    with pytest.raises(DecodeError):
        unpack(data)


# -- map keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {None: "a"}, {1.5: "a"}, {True: "a"}, {"outer": {2: "b"}}, {b"key": "a"}],
    ids=["int", "nil", "float", "bool", "nested-int", "bytes"],
)
def test_map_keys_must_be_strings(value: dict[Any, Any]) -> None:
    """Given a map with a key that is not a (UTF-8) string, When unpacked,
    Expect DecodeError — the module promises string keys only."""
    with pytest.raises(DecodeError):
        unpack(pack(value))


# -- framing ------------------------------------------------------------------


def test_trailing_data_is_refused(make_wire: WireFactory) -> None:
    """Given a valid envelope followed by one more byte, When split, Expect DecodeError."""
    with pytest.raises(DecodeError):
        split_wire(make_wire() + b"\x00")
    with pytest.raises(DecodeError):
        unpack(pack({"a": 1}) + pack(2))


def test_truncated_body_is_refused(make_wire: WireFactory) -> None:
    """Given a valid envelope cut short by one byte, When split, Expect DecodeError."""
    with pytest.raises(DecodeError):
        split_wire(make_wire()[:-1])


@pytest.mark.parametrize("size", [0, 1, SIGNATURE_SIZE - 1, SIGNATURE_SIZE])
def test_too_short_for_an_envelope(size: int) -> None:
    """Given no more bytes than a signature, When split, Expect DecodeError."""
    with pytest.raises(DecodeError, match="too short"):
        split_wire(b"\x80" * size)


@pytest.mark.parametrize("body", [pack([1, 2]), pack("text"), pack(None), pack(3)])
def test_body_must_be_a_map(body: bytes) -> None:
    """Given a well-formed body that is not a map, When split, Expect DecodeError."""
    with pytest.raises(DecodeError, match="not a map"):
        split_wire(FAKE_SIGNATURE + body)


@pytest.mark.parametrize("version", ["2.0", "1", 1.0, None])
def test_unknown_protocol_version(make_wire: WireFactory, version: Any) -> None:
    """Given a body with another protocol_version, When split, Expect VersionError."""
    with pytest.raises(VersionError) as exc:
        split_wire(make_wire(protocol_version=version))
    assert exc.value.reason == "version"


def test_missing_protocol_version(make_wire: WireFactory) -> None:
    """Given a body without protocol_version, When split, Expect VersionError."""
    with pytest.raises(VersionError):
        split_wire(make_wire(drop=("protocol_version",)))


@pytest.mark.parametrize(
    ("field", "bad_value"),
    [
        ("id", 12),
        ("timestamp", "now"),
        ("sender", b"alice"),
        ("receiver", None),
        ("type", ["ping"]),
        ("priority", 5.0),
        ("requires_ack", 1),
        ("encryption", None),
        ("cert", "certificate"),
    ],
)
def test_required_fields_must_have_their_types(
    make_wire: WireFactory, field: str, bad_value: Any
) -> None:
    """Given a required field of the wrong type, or missing, When split, Expect DecodeError
    naming the field."""
    with pytest.raises(DecodeError, match=field):
        split_wire(make_wire(**{field: bad_value}))
    with pytest.raises(DecodeError, match=field):
        split_wire(make_wire(drop=(field,)))


def test_unknown_encryption_is_refused(make_wire: WireFactory) -> None:
    """Given encryption 'rot13', When split, Expect DecodeError."""
    with pytest.raises(DecodeError, match="encryption"):
        split_wire(make_wire(encryption="rot13"))


@pytest.mark.parametrize("priority", [-1, 10, 255])
def test_priority_outside_0_to_9_is_refused(make_wire: WireFactory, priority: int) -> None:
    """Given a priority outside 0-9 on the wire, When split, Expect DecodeError."""
    with pytest.raises(DecodeError, match="priority"):
        split_wire(make_wire(priority=priority))


def test_clear_envelope_needs_a_payload_field(make_wire: WireFactory) -> None:
    """Given encryption 'none' and no payload field, When split, Expect DecodeError;
    a payload that is nil is fine."""
    with pytest.raises(DecodeError, match="payload"):
        split_wire(make_wire(drop=("payload",)))
    assert split_wire(make_wire(payload=None)).fields["payload"] is None


@pytest.mark.parametrize("encryption", ["box", "secretbox"])
def test_encrypted_envelope_needs_binary_ciphertext(
    make_wire: WireFactory, encryption: str
) -> None:
    """Given an encrypted body whose ciphertext is missing or text, When split,
    Expect DecodeError."""
    with pytest.raises(DecodeError, match="ciphertext"):
        split_wire(make_wire(encryption=encryption, drop=("ciphertext",)))
    with pytest.raises(DecodeError, match="ciphertext"):
        split_wire(make_wire(encryption=encryption, ciphertext="text"))


@pytest.mark.parametrize("field", ["reply_to", "in_reply_to"])
def test_optional_reference_fields_must_be_strings(make_wire: WireFactory, field: str) -> None:
    """Given reply_to / in_reply_to that is not a string, When split, Expect DecodeError;
    absent or nil, Expect accepted."""
    with pytest.raises(DecodeError, match=field):
        split_wire(make_wire(**{field: 7}))
    assert split_wire(make_wire(**{field: None})).fields[field] is None
    assert field not in split_wire(make_wire(drop=(field,))).fields


def test_empty_type_passes_framing_but_not_the_envelope(make_wire: WireFactory) -> None:
    """Given a body whose type is the empty string, When rebuilding the envelope,
    Expect DecodeError (never a bare ValueError)."""
    raw = split_wire(make_wire(type=""))

    with pytest.raises(DecodeError):
        envelope_from_fields(raw.fields, None)


def test_decode_error_keeps_a_bounded_sample_of_the_data() -> None:
    """Given malformed bytes, When unpacked, Expect a DecodeError with reason 'decode'
    that carries at most 64 bytes of the input for the logs."""
    with pytest.raises(DecodeError) as exc:
        unpack(b"\xc1" * 500)

    assert exc.value.reason == "decode"
    assert exc.value.data is not None and 0 < len(exc.value.data) <= 64


# -- properties ---------------------------------------------------------------


def only_protocol_errors(fn: Callable[[], Any]) -> None:
    """Run ``fn``; a ProtocolError is fine, any other exception fails the test."""
    try:
        fn()
    except ProtocolError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    """Given arbitrary bytes, When split or unpacked, Expect success or a ProtocolError,
    never any other exception."""
    only_protocol_errors(lambda: split_wire(data))
    only_protocol_errors(lambda: unpack(data))
    only_protocol_errors(lambda: split_wire(FAKE_SIGNATURE + data))


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, Any]]) -> bytes:
    out = bytearray(data)
    for kind, pos, arg in mutations:
        if not out:
            break
        i = pos % len(out)
        if kind == "flip":
            out[i] ^= arg
        elif kind == "set":
            out[i] = arg
        elif kind == "insert":
            out[i:i] = arg
        elif kind == "delete":
            del out[i : i + arg]
        else:
            del out[i:]
    return bytes(out)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_envelopes_raise_only_protocol_errors(mutations: list[Any]) -> None:
    """Given a valid envelope with random bytes flipped, set, inserted, deleted or cut,
    When split and rebuilt, Expect success or a ProtocolError, never another exception."""
    data = mutate(wire_for(sample_envelope()), mutations)

    def split_and_rebuild() -> None:
        raw = split_wire(data)
        envelope_from_fields(raw.fields, raw.fields.get("payload"))

    only_protocol_errors(split_and_rebuild)
    only_protocol_errors(lambda: unpack(data[SIGNATURE_SIZE:]))


FIELD_NAMES = st.sampled_from(
    [
        "protocol_version",
        "id",
        "timestamp",
        "sender",
        "receiver",
        "type",
        "priority",
        "requires_ack",
        "reply_to",
        "in_reply_to",
        "encryption",
        "cert",
        "payload",
        "ciphertext",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(FIELD_NAMES, PAYLOADS, max_size=4), st.sets(FIELD_NAMES, max_size=3))
def test_wrongly_typed_fields_raise_only_protocol_errors(
    overrides: dict[str, Any], dropped: set[str]
) -> None:
    """Given a well-formed body with fields replaced by arbitrary values or dropped,
    When split and rebuilt, Expect success or a ProtocolError, never another exception."""
    data = wire_for(sample_envelope(), drop=tuple(dropped), **overrides)

    def split_and_rebuild() -> None:
        raw = split_wire(data)
        envelope_from_fields(raw.fields, raw.fields.get("payload"))

    only_protocol_errors(split_and_rebuild)


IDS = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)
ENVELOPES = st.builds(
    Envelope,
    type=IDS,
    payload=PAYLOADS,
    receiver=IDS,
    sender=IDS,
    priority=st.integers(0, 9),
    requires_ack=st.booleans(),
    reply_to=st.none() | IDS,
    in_reply_to=st.none() | IDS,
    id=st.binary(min_size=16, max_size=16).map(bytes.hex),
    timestamp=st.floats(0, 4e9),
)


@settings(max_examples=300, deadline=None)
@given(ENVELOPES)
def test_any_valid_envelope_round_trips(env: Envelope) -> None:
    """Given any valid envelope, When framed, split and rebuilt, Expect an equal envelope."""
    raw = split_wire(wire_for(env))

    assert envelope_from_fields(raw.fields, raw.fields["payload"]) == env
