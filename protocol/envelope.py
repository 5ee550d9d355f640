"""The envelope: robeing's one wire format (DESIGN §2).

Wire layout::

    signature (64 bytes, Ed25519 over body) || body (msgpack map)

The signature covers the exact body bytes that travel; a receiver verifies
those bytes and never re-encodes anything before verifying. The body map holds
the fields of the original design (``id``, ``timestamp``, ``sender``,
``receiver``, ``type``, ``payload``, ``priority``, ``requires_ack``,
``protocol_version``) and what security needs: ``encryption`` (``none``,
``box`` or ``secretbox``), ``key_id`` and ``cert`` (the sender's certificate,
so any receiver trusting the authority can check a sender it never met).
When the payload is encrypted it travels as ``ciphertext`` (nonce included)
instead of ``payload``.

Decoding is strict and bounded (:class:`Limits`): total size, string, binary,
array and map lengths, nesting depth; no extension types; map keys must be
strings. Every failure is one :class:`~robeing.protocol.errors.DecodeError`
(or ``TooLarge`` / ``VersionError``), never a bare msgpack exception.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import DecodeError, TooLarge, VersionError

PROTOCOL_VERSION = "1.0"
SIGNATURE_SIZE = 64
BROADCAST = "*"

ENC_NONE = "none"
ENC_BOX = "box"
ENC_SECRETBOX = "secretbox"
_ENCRYPTIONS = frozenset({ENC_NONE, ENC_BOX, ENC_SECRETBOX})


def new_id() -> str:
    """A 128-bit random id as 32 hex characters."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied before and while decoding untrusted bytes.

    The defaults allow a 1 MiB message; lengths are per string/binary/array/map.
    """

    max_message_bytes: int = 1 << 20
    max_str_len: int = 1 << 20
    max_bin_len: int = 1 << 20
    max_array_len: int = 100_000
    max_map_len: int = 10_000
    max_depth: int = 32


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message between agents, as the application sees it (decrypted).

    Attributes:
        id: 128-bit random hex id, unique per message (replay cache key).
        timestamp: sender's wall clock, seconds since the epoch.
        sender: the sending agent's id (must match its certificate).
        receiver: the receiving agent's id, or ``"*"`` for a broadcast.
        type: message type, e.g. ``"chat"``, ``"task.assign"``, ``"ack"``.
        payload: any msgpack-serialisable value.
        priority: 0 (lowest) to 9 (highest); maps to the AMQP priority.
        requires_ack: the receiver must answer with a signed ``ack``.
        reply_to: queue where ACKs and replies for this message go.
        in_reply_to: id of the message this one answers.
        protocol_version: always ``"1.0"`` for now.
    """

    type: str
    payload: Any = None
    receiver: str = BROADCAST
    sender: str = ""
    priority: int = 5
    requires_ack: bool = False
    reply_to: str | None = None
    in_reply_to: str | None = None
    id: str = field(default_factory=new_id)
    timestamp: float = 0.0
    protocol_version: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.priority, int) or not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be an integer 0-9, got {self.priority!r}")
        if not self.type or not isinstance(self.type, str):
            raise ValueError("message type must be a non-empty string")

    @property
    def is_broadcast(self) -> bool:
        return self.receiver == BROADCAST


@dataclass(frozen=True, slots=True)
class RawEnvelope:
    """A decoded but not yet verified or decrypted envelope.

    ``body`` is the exact signed byte string; ``fields`` its decoded map.
    """

    signature: bytes
    body: bytes
    fields: dict[str, Any]


def pack(value: Any) -> bytes:
    """msgpack-encode ``value`` (binary-safe, UTF-8 strings).

    Raises:
        TypeError: when ``value`` holds something msgpack cannot encode.
    """
    return msgpack.packb(value, use_bin_type=True)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not allowed")


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS, depth: bool = True) -> Any:
    """Strictly decode untrusted msgpack bytes.

    Raises:
        TooLarge: more bytes than ``limits.max_message_bytes``.
        DecodeError: malformed, truncated, trailing data, over a length or
            depth limit, extension types, or non-string map keys.
    """
    if len(data) > limits.max_message_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the limit of {limits.max_message_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types; all mean "malformed"
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}", data[:64]) from exc
    if depth:
        check_depth(value, limits.max_depth)
    return value


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse values nested deeper than ``max_depth`` (iterative, no recursion).

    Only containers are visited, so flat values cost nothing. Map keys must be
    strings (msgpack's ``strict_map_key`` still admits bytes).

    Raises:
        DecodeError: nested too deeply, or a map key that is not a string.
    """
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise DecodeError(f"nesting deeper than {max_depth}")
        if isinstance(item, dict):
            if not all(type(k) is str for k in item):
                raise DecodeError("map keys must be strings")
            children: Any = item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


# Fields every body must carry, with the Python types they must have.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "protocol_version": str,
    "id": str,
    "timestamp": (int, float),
    "sender": str,
    "receiver": str,
    "type": str,
    "priority": int,
    "requires_ack": bool,
    "encryption": str,
    "cert": bytes,
}


def split_wire(data: bytes, limits: Limits = DEFAULT_LIMITS) -> RawEnvelope:
    """Split and decode wire bytes, cheapest checks first.

    Order: size → framing → strict msgpack decode → version → field types.

    Raises:
        TooLarge: over the size limit.
        DecodeError: not an envelope.
        VersionError: an unknown ``protocol_version``.
    """
    if len(data) > limits.max_message_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the limit of {limits.max_message_bytes}")
    if len(data) <= SIGNATURE_SIZE:
        raise DecodeError(f"{len(data)} bytes is too short for an envelope", data[:64])
    body = data[SIGNATURE_SIZE:]
    fields = unpack(body, limits, depth=False)
    if not isinstance(fields, dict):
        raise DecodeError(f"envelope body is a {type(fields).__name__}, not a map")
    if not all(type(k) is str for k in fields):
        raise DecodeError("envelope field names must be strings")
    version = fields.get("protocol_version")
    if version != PROTOCOL_VERSION:
        raise VersionError(f"unsupported protocol_version {version!r}")
    for name, expected in _REQUIRED.items():
        if not isinstance(fields.get(name), expected):
            raise DecodeError(f"field {name!r} missing or not {expected}")
    if fields["encryption"] not in _ENCRYPTIONS:
        raise DecodeError(f"unknown encryption {fields['encryption']!r}")
    if not 0 <= fields["priority"] <= 9:
        raise DecodeError(f"priority {fields['priority']} outside 0-9")
    if not math.isfinite(fields["timestamp"]):
        # NaN passes every comparison of the time window: refuse it here.
        raise DecodeError(f"timestamp {fields['timestamp']!r} is not a finite number")
    if fields["encryption"] == ENC_NONE:
        if "payload" not in fields:
            raise DecodeError("field 'payload' missing")
        # The other fields were type-checked flat above; only the payload nests.
        check_depth(fields["payload"], limits.max_depth - 1)
    elif not isinstance(fields.get("ciphertext"), bytes):
        raise DecodeError("field 'ciphertext' missing or not bytes")
    for optional in ("reply_to", "in_reply_to"):
        if fields.get(optional) is not None and not isinstance(fields[optional], str):
            raise DecodeError(f"field {optional!r} is not a string")
    return RawEnvelope(bytes(data[:SIGNATURE_SIZE]), bytes(body), fields)


def body_fields(env: Envelope, encryption: str, cert: bytes, key_id: str) -> dict[str, Any]:
    """The body map for ``env``, without the payload or ciphertext."""
    return {
        "protocol_version": env.protocol_version,
        "id": env.id,
        "timestamp": env.timestamp,
        "sender": env.sender,
        "receiver": env.receiver,
        "type": env.type,
        "priority": env.priority,
        "requires_ack": env.requires_ack,
        "reply_to": env.reply_to,
        "in_reply_to": env.in_reply_to,
        "encryption": encryption,
        "key_id": key_id,
        "cert": cert,
    }


def envelope_from_fields(fields: dict[str, Any], payload: Any) -> Envelope:
    """Build the application-facing envelope from verified fields.

    Raises:
        DecodeError: when a field value is out of range.
    """
    try:
        return Envelope(
            type=fields["type"],
            payload=payload,
            receiver=fields["receiver"],
            sender=fields["sender"],
            priority=fields["priority"],
            requires_ack=fields["requires_ack"],
            reply_to=fields.get("reply_to"),
            in_reply_to=fields.get("in_reply_to"),
            id=fields["id"],
            timestamp=float(fields["timestamp"]),
            protocol_version=fields["protocol_version"],
        )
    except ValueError as exc:
        raise DecodeError(str(exc)) from exc
