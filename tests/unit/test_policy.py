"""Specification of the signed access policy that tightens the role table."""

from __future__ import annotations

import nacl.signing
import pytest

from robeing.protocol.errors import DecodeError
from robeing.protocol.evidence import ed25519_check, ed25519_signer
from robeing.protocol.policy import AccessPolicy, PolicyBook, PolicyDenied

KEYS = {n: nacl.signing.SigningKey.generate() for n in ("g1", "g2", "w1")}
CHECK = ed25519_check({n: bytes(k.verify_key) for n, k in KEYS.items()})
ROLES = {"g1": "guardian", "g2": "guardian", "w1": "worker"}


def signed(p: AccessPolicy) -> bytes:
    return p.sign(ed25519_signer(KEYS[p.guardian]))


def test_a_policy_denies_exact_types_and_prefixes_for_its_roles_only() -> None:
    p = AccessPolicy("g1", 1, 0.0, {"worker": ("vote.", "greet")})
    assert p.denies("worker", "vote.cast") and p.denies("worker", "greet")
    assert not p.denies("worker", "greeting") and not p.denies("specialist", "vote.cast")


def test_no_policy_takes_away_heartbeats_or_a_guardians_own_messages() -> None:
    p = AccessPolicy("g1", 1, 0.0, {"worker": ("heartbeat",), "guardian": ("guardian.",)})
    assert not p.denies("worker", "heartbeat") and not p.denies("guardian", "guardian.policy")


def test_only_a_certified_guardian_signs_a_policy() -> None:
    p = AccessPolicy("g1", 2, 5.0, {"worker": ("vote.",)})
    assert AccessPolicy.verify(signed(p), CHECK, ROLES.get) == p
    with pytest.raises(DecodeError, match="guardian"):
        AccessPolicy.verify(signed(AccessPolicy("w1", 3, 0.0)), CHECK, ROLES.get)
    with pytest.raises(DecodeError, match="unknown role"):
        AccessPolicy.verify(
            signed(AccessPolicy("g1", 3, 0.0, {"wizard": ("x",)})), CHECK, ROLES.get
        )
    raw = AccessPolicy("g1", 4, 0.0).sign(ed25519_signer(KEYS["g2"]))
    with pytest.raises(DecodeError, match="does not verify"):
        AccessPolicy.verify(raw, CHECK, ROLES.get)


def test_the_newest_version_wins_in_any_order_of_arrival() -> None:
    v1 = AccessPolicy("g1", 1, 10.0, {"worker": ("a",)})
    v2 = AccessPolicy("g2", 2, 5.0, {"worker": ("b",)})
    for order in ([v1, v2], [v2, v1]):
        book = PolicyBook()
        for p in order:
            book.apply(p, signed(p))
        assert book.current == v2
        book.check("worker", "a")
        with pytest.raises(PolicyDenied, match="v2 of g2"):
            book.check("worker", "b")
