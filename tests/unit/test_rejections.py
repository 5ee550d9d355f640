"""Specification of signed rejection reports (``protocol/rejections.py``)."""

from __future__ import annotations

import msgpack
import nacl.signing
import pytest
from hypothesis import given
from wire_values import JUNK

from robeing.protocol.errors import DecodeError
from robeing.protocol.evidence import ed25519_check, ed25519_signer
from robeing.protocol.rejections import (
    MAX_STORED,
    UNATTRIBUTABLE,
    RejectionReport,
    stored_copy,
)

KEYS = {name: nacl.signing.SigningKey(bytes([i + 1]) * 32) for i, name in enumerate(["w1", "w2"])}
CHECK = ed25519_check({name: bytes(k.verify_key) for name, k in KEYS.items()})
BODY = b"some refused bytes"


def report(reason: str = "timestamp", sender: str | None = "mallory", body: bytes = BODY):
    return RejectionReport.of(
        "w1", "robeing.agent.w1", body, stored_copy(body), reason, sender, 5.0
    )


def test_a_report_round_trips_and_is_about_the_stored_bytes() -> None:
    """Given w1's signed report of refusing BODY, Expect it to verify as w1's, to match
    BODY and nothing else, and to blame the sender whose signature had verified."""
    wire = report().sign(ed25519_signer(KEYS["w1"]))
    back = RejectionReport.verify(wire, CHECK)
    assert back == report()
    assert back.matches(BODY) and not back.matches(BODY + b"!")
    assert back.sender == "mallory" and back.reporter == "w1"


@pytest.mark.parametrize("reason", sorted(UNATTRIBUTABLE))
def test_refusals_before_the_signature_check_blame_nobody(reason: str) -> None:
    """Given a refusal decided before the sender's signature verified (the sender is only a
    claim), Expect the report to blame nobody, whatever sender it was given."""
    assert report(reason, "honest-agent").sender is None


def test_a_forged_or_misattributed_report_does_not_verify() -> None:
    """Given a report signed by w2 but naming w1 as reporter, or altered after signing,
    Expect DecodeError: a report proves only what its reporter signed."""
    wire = report().sign(ed25519_signer(KEYS["w2"]))
    with pytest.raises(DecodeError, match="does not verify"):
        RejectionReport.verify(wire, CHECK)
    statement, signature = msgpack.unpackb(report().sign(ed25519_signer(KEYS["w1"])))
    altered = msgpack.packb([statement.replace(b"mallory", b"malloRY"), signature])
    with pytest.raises(DecodeError):
        RejectionReport.verify(altered, CHECK)


def test_oversized_bodies_are_stored_truncated_and_the_report_says_how_large() -> None:
    big = b"x" * (MAX_STORED + 10)
    r = report(body=big)
    assert len(stored_copy(big)) == MAX_STORED and r.size == MAX_STORED + 10
    assert r.matches(stored_copy(big))


@given(JUNK)
def test_junk_is_only_ever_a_decode_error(data: object) -> None:
    raw = msgpack.packb(data, use_bin_type=True) if not isinstance(data, bytes) else data
    with pytest.raises(DecodeError):
        RejectionReport.verify(raw, CHECK)
