"""Specification of the exception tree and of errors crossing the wire as data."""

from __future__ import annotations

from typing import Any

import pytest

from robeing.protocol import errors
from robeing.protocol.errors import (
    AckTimeout,
    BrokerError,
    CertificateError,
    CertificateExpired,
    ConfigError,
    DecodeError,
    DecryptError,
    Duplicate,
    NotAllowed,
    ProtocolError,
    PublishTimeout,
    Reject,
    RemoteError,
    Replay,
    Retry,
    Revoked,
    RobeingError,
    SignatureError,
    StaleMessage,
    TooLarge,
    UnknownPeer,
    UnknownSender,
    Unroutable,
    VersionError,
    error_from_data,
    error_to_data,
)

PROTOCOL_ERRORS = [
    TooLarge,
    DecodeError,
    VersionError,
    UnknownSender,
    CertificateError,
    Revoked,
    CertificateExpired,
    SignatureError,
    StaleMessage,
    Replay,
    Duplicate,
    NotAllowed,
    DecryptError,
]


def test_one_exception_tree() -> None:
    """Expect every error under RobeingError, protocol failures under ProtocolError,
    broker failures under BrokerError and UnknownPeer a configuration error."""
    assert all(issubclass(cls, ProtocolError) for cls in PROTOCOL_ERRORS)
    assert issubclass(ProtocolError, RobeingError)
    assert issubclass(PublishTimeout, BrokerError) and issubclass(Unroutable, BrokerError)
    assert issubclass(UnknownPeer, ConfigError)
    assert issubclass(AckTimeout, TimeoutError) and issubclass(AckTimeout, RobeingError)
    assert issubclass(Revoked, CertificateError) and issubclass(
        CertificateExpired, CertificateError
    )
    for cls in (Retry, Reject, RemoteError, ConfigError, BrokerError):
        assert issubclass(cls, RobeingError)


def test_reason_codes_are_distinct_and_stable() -> None:
    """Expect one distinct reason per protocol error (they key dead-letter headers and
    counters), with the documented spellings."""
    reasons = [cls.reason for cls in PROTOCOL_ERRORS]

    assert len(set(reasons)) == len(reasons)
    assert TooLarge.reason == "too_large"
    assert UnknownSender.reason == "unknown_sender"
    assert CertificateExpired.reason == "certificate_expired"
    assert StaleMessage.reason == "timestamp"
    assert NotAllowed.reason == "not_allowed"


def test_retry_and_reject_carry_their_details() -> None:
    """Expect Retry to carry a delay (default 1 s) and Reject its reason."""
    assert Retry().delay == 1.0
    assert Retry("later", delay=2.5).delay == 2.5
    assert Reject("bad input").reason == "bad input"
    assert str(Reject("bad input")) == "bad input"


def test_decode_error_keeps_the_data() -> None:
    """Expect DecodeError to keep the offending bytes (or None)."""
    assert DecodeError("x", b"\x01").data == b"\x01"
    assert DecodeError("x").data is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("boom"), {"type": "ValueError", "message": "boom"}),
        (ConfigError("no keys"), {"type": "ConfigError", "message": "no keys"}),
        (Reject("too big"), {"type": "Reject", "message": "too big", "reason": "too big"}),
        (
            NotAllowed("worker may not"),
            {"type": "NotAllowed", "message": "worker may not", "reason": "not_allowed"},
        ),
        (Replay("again"), {"type": "Replay", "message": "again", "reason": "replay"}),
    ],
)
def test_error_to_data(exc: BaseException, expected: dict[str, Any]) -> None:
    """Given an exception, Expect plain data: type name, message, and the reason when it has one."""
    assert error_to_data(exc) == expected


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("bad setting"),
        BrokerError("down"),
        AckTimeout("no ack"),
        NotAllowed("forbidden"),
        RobeingError("generic"),
    ],
)
def test_allow_listed_errors_round_trip(exc: RobeingError) -> None:
    """Given an allow-listed error, When sent as data and rebuilt, Expect the same type and
    message."""
    rebuilt = error_from_data(error_to_data(exc))

    assert type(rebuilt) is type(exc)
    assert str(rebuilt) == str(exc)


def test_reject_round_trips_with_its_reason() -> None:
    """Given a Reject, When sent as data and rebuilt, Expect a Reject with the same reason."""
    rebuilt = error_from_data(error_to_data(Reject("csv cells must be scalars")))

    assert isinstance(rebuilt, Reject)
    assert rebuilt.reason == "csv cells must be scalars"


def test_not_allowed_round_trips_with_its_reason_code() -> None:
    """Given a NotAllowed, When rebuilt, Expect its reason code to survive."""
    rebuilt = error_from_data(error_to_data(NotAllowed("no")))

    assert isinstance(rebuilt, ProtocolError)
    assert rebuilt.reason == "not_allowed"


@pytest.mark.parametrize(
    "type_name",
    [
        "ValueError",
        "KeyError",
        "SystemExit",
        "KeyboardInterrupt",
        "Replay",
        "Retry",
        "RemoteError",
        "os.system",
        "builtins.eval",
        "__class__",
        "ProtocolError",
    ],
)
def test_unknown_types_become_remote_errors(type_name: str) -> None:
    """Given data naming a type that is not allow-listed, When rebuilt, Expect a RemoteError
    carrying the type name, the message and the full data."""
    data = {"type": type_name, "message": "remote failure", "extra": [1, 2]}

    rebuilt = error_from_data(data)

    assert type(rebuilt) is RemoteError
    assert rebuilt.type == type_name
    assert rebuilt.data == data
    assert "remote failure" in str(rebuilt) and type_name in str(rebuilt)


@pytest.mark.parametrize(
    "data",
    [{}, {"type": None}, {"type": 42, "message": 7}, {"message": "only a message"}],
)
def test_incomplete_error_data_still_rebuilds(data: dict[str, Any]) -> None:
    """Given error data missing or mistyping its fields, When rebuilt, Expect a RemoteError,
    never an exception."""
    assert isinstance(error_from_data(data), RemoteError)


def test_rebuilding_never_instantiates_other_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a RobeingError subclass that counts its instances, even one placed in the errors
    module, When data naming it is rebuilt, Expect it never instantiated."""
    created: list[Any] = []

    class Tripwire(RobeingError):
        def __init__(self, *args: Any) -> None:
            created.append(args)
            super().__init__(*args)

    monkeypatch.setattr(errors, "Tripwire", Tripwire, raising=False)

    rebuilt = error_from_data({"type": "Tripwire", "message": "pwned"})

    assert created == []
    assert type(rebuilt) is RemoteError
