"""Specification of identities: the authority, certificates, revocation lists, the trust store."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest

from robeing.protocol.envelope import SIGNATURE_SIZE, pack
from robeing.protocol.errors import (
    CertificateError,
    CertificateExpired,
    ConfigError,
    Revoked,
    SignatureError,
)
from robeing.protocol.identity import (
    CERT_TAG,
    CRL_TAG,
    Authority,
    Certificate,
    Identity,
    RevocationList,
    TrustStore,
    key_id,
    verify_key_from_bytes,
)

NOW = 1_700_000_000.0

CertFactory = Callable[..., Certificate]


@pytest.fixture
def authority() -> Authority:
    return Authority.generate()


@pytest.fixture
def make_cert(authority: Authority) -> CertFactory:
    """Factory: a certificate for a fresh key, issued by the cluster authority."""

    def make(
        agent_id: str = "agent-1", role: str = "worker", now: float = NOW, ttl: float = 3600.0
    ) -> Certificate:
        key = nacl.signing.SigningKey.generate()
        return authority.issue(agent_id, role, bytes(key.verify_key), now, ttl)

    return make


@pytest.fixture
def trust(authority: Authority) -> TrustStore:
    return TrustStore(authority.verify_key)


def signed_by(key: nacl.signing.SigningKey, body: Any) -> bytes:
    raw = body if isinstance(body, bytes) else pack(body)
    return key.sign(raw).signature + raw


def cert_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tag": CERT_TAG,
        "agent_id": "agent-1",
        "role": "worker",
        "verify_key": b"\x01" * 32,
        "serial": "00ff",
        "issued_at": NOW,
        "expires_at": NOW + 60,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


# -- Authority.issue --------------------------------------------------------------


def test_issue_binds_id_role_key_and_validity(authority: Authority) -> None:
    """Given an agent key, When the authority issues a certificate, Expect the id, role, key,
    validity period and a fingerprint key id, and raw bytes that parse back to it."""
    key = nacl.signing.SigningKey.generate()
    vk = bytes(key.verify_key)

    cert = authority.issue("worker-7", "worker", vk, NOW, ttl=120)

    assert (cert.agent_id, cert.role, cert.verify_key) == ("worker-7", "worker", vk)
    assert (cert.issued_at, cert.expires_at) == (NOW, NOW + 120)
    assert cert.key_id == key_id(vk) == hashlib.sha256(vk).hexdigest()[:16]
    assert Certificate.parse(cert.raw, authority.verify_key) == cert


def test_each_certificate_gets_its_own_serial(make_cert: CertFactory) -> None:
    """Given two certificates for the same agent, Expect different serials."""
    assert make_cert("a").serial != make_cert("a").serial


@pytest.mark.parametrize(
    ("agent_id", "vk"),
    [("", b"\x01" * 32), ("a", b"\x01" * 31), ("a", b"\x01" * 33), ("a", b"")],
)
def test_issue_refuses_empty_id_or_wrong_key_size(
    authority: Authority, agent_id: str, vk: bytes
) -> None:
    """Given an empty agent id or a key that is not 32 bytes, When issuing, Expect ConfigError."""
    with pytest.raises(ConfigError):
        authority.issue(agent_id, "worker", vk, NOW)


def test_identity_create_pairs_key_and_certificate(authority: Authority) -> None:
    """Given the authority, When an identity is created, Expect its certificate to carry
    the public half of its signing key, and its id and role to come from the certificate."""
    ident = Identity.create(authority, "spec-1", "specialist", NOW)

    assert ident.certificate.verify_key == bytes(ident.signing_key.verify_key)
    assert (ident.agent_id, ident.role) == ("spec-1", "specialist")
    assert bytes(ident.box_key.public_key) == bytes(
        ident.signing_key.verify_key.to_curve25519_public_key()
    )


def test_identity_refuses_a_key_that_does_not_match_the_certificate(
    make_cert: CertFactory,
) -> None:
    """Given a certificate for one key, When paired with another key, Expect ConfigError."""
    with pytest.raises(ConfigError, match="does not match"):
        Identity(nacl.signing.SigningKey.generate(), make_cert())


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_verify_key_from_bytes_needs_32_bytes(size: int) -> None:
    """Given a public key of the wrong size, When loading it, Expect ConfigError."""
    with pytest.raises(ConfigError, match="32 bytes"):
        verify_key_from_bytes(b"\x02" * size)


# -- Certificate.parse ------------------------------------------------------------


def test_certificate_from_another_authority_is_refused(authority: Authority) -> None:
    """Given a certificate issued by another authority, When parsed with ours,
    Expect CertificateError."""
    other = Authority.generate().issue("a", "worker", b"\x01" * 32, NOW)

    with pytest.raises(CertificateError, match="not signed"):
        Certificate.parse(other.raw, authority.verify_key)


@pytest.mark.parametrize("position", [0, SIGNATURE_SIZE - 1, SIGNATURE_SIZE + 5, -1])
def test_tampered_certificate_is_refused(
    authority: Authority, make_cert: CertFactory, position: int
) -> None:
    """Given a certificate with one bit flipped in its signature or body, When parsed,
    Expect CertificateError."""
    raw = bytearray(make_cert().raw)
    raw[position] ^= 0x01

    with pytest.raises(CertificateError):
        Certificate.parse(bytes(raw), authority.verify_key)


def test_forged_role_upgrade_is_refused(authority: Authority, make_cert: CertFactory) -> None:
    """Given a worker certificate whose body is rewritten to 'coordinator' (signature kept),
    When parsed, Expect CertificateError."""
    raw = make_cert(role="worker").raw
    forged = raw.replace(pack("worker"), pack("coordinator"))
    assert forged != raw

    with pytest.raises(CertificateError):
        Certificate.parse(forged, authority.verify_key)


@pytest.mark.parametrize("data", [b"", b"\x00" * SIGNATURE_SIZE])
def test_too_short_certificate_is_refused(authority: Authority, data: bytes) -> None:
    """Given no more bytes than a signature, When parsed, Expect CertificateError."""
    with pytest.raises(CertificateError, match="too short"):
        Certificate.parse(data, authority.verify_key)


def test_revocation_list_is_not_a_certificate(authority: Authority) -> None:
    """Given an authority-signed revocation list, When parsed as a certificate,
    Expect CertificateError (domain separation by tag)."""
    crl = authority.revocation_list(1, ["a"])

    with pytest.raises(CertificateError, match=re.escape(CERT_TAG)):
        Certificate.parse(crl.raw, authority.verify_key)


@pytest.mark.parametrize(
    "body",
    [
        cert_body(agent_id=None),
        cert_body(verify_key=None),
        cert_body(expires_at="tomorrow"),
        cert_body(verify_key="not-bytes"),
        cert_body(tag="robeing.cert.v0"),
        [CERT_TAG, "agent-1"],
    ],
    ids=["no-id", "no-key", "text-expiry", "text-key", "old-tag", "not-a-map"],
)
def test_malformed_signed_certificate_is_refused(authority: Authority, body: Any) -> None:
    """Given an authority-signed object that is not a well-formed certificate,
    When parsed, Expect CertificateError."""
    with pytest.raises(CertificateError):
        Certificate.parse(signed_by(authority.signing_key, body), authority.verify_key)


def test_signed_bytes_that_are_not_msgpack_are_a_certificate_error(authority: Authority) -> None:
    """Given authority-signed bytes that are not msgpack at all, When parsed,
    Expect CertificateError (the documented error), not another exception type."""
    with pytest.raises(CertificateError):
        Certificate.parse(signed_by(authority.signing_key, b"\xc1\xc1"), authority.verify_key)


# -- revocation lists -------------------------------------------------------------


def test_revocation_list_revokes_by_agent_id_or_serial(
    authority: Authority, make_cert: CertFactory
) -> None:
    """Given a list naming agent 'a' and the serial of one of b's certificates, Expect every
    certificate of a revoked, that certificate of b revoked, and b's other certificate not."""
    a, b_old, b_new = make_cert("a"), make_cert("b"), make_cert("b")
    crl = authority.revocation_list(3, agent_ids=["a"], serials=[b_old.serial])

    assert crl.version == 3
    assert crl.revokes(a) and crl.revokes(b_old)
    assert not crl.revokes(b_new)
    assert RevocationList.parse(crl.raw, authority.verify_key) == crl


def test_empty_revocation_list_revokes_nothing(make_cert: CertFactory) -> None:
    """Given the default list (version 0), Expect nothing revoked."""
    assert RevocationList().version == 0
    assert not RevocationList().revokes(make_cert())


# -- TrustStore.check_certificate ------------------------------------------------


def test_check_certificate_accepts_a_valid_certificate(
    trust: TrustStore, make_cert: CertFactory
) -> None:
    """Given a valid certificate, When checked within its validity, Expect it returned;
    checked again, Expect the cached certificate."""
    cert = make_cert()

    first = trust.check_certificate(cert.raw, NOW + 1)
    second = trust.check_certificate(cert.raw, NOW + 2)

    assert first == cert
    assert second is first


def test_check_certificate_refuses_foreign_certificates(
    trust: TrustStore, authority: Authority
) -> None:
    """Given a certificate from another authority, When checked, Expect CertificateError
    (the base class, which the codec reports as an unknown sender)."""
    foreign = Authority.generate().issue("a", "worker", b"\x01" * 32, NOW)

    with pytest.raises(CertificateError) as exc:
        trust.check_certificate(foreign.raw, NOW)
    assert type(exc.value) is CertificateError


def test_cached_certificate_still_expires(trust: TrustStore, make_cert: CertFactory) -> None:
    """Given a certificate checked (and cached) while valid, When checked again after its
    expiry, Expect CertificateExpired; exactly at expiry, Expect it still accepted."""
    cert = make_cert(ttl=60)
    trust.check_certificate(cert.raw, NOW)

    assert trust.check_certificate(cert.raw, NOW + 60) == cert
    with pytest.raises(CertificateExpired):
        trust.check_certificate(cert.raw, NOW + 60.001)


def test_cached_certificate_is_still_checked_against_revocations(
    trust: TrustStore, authority: Authority, make_cert: CertFactory
) -> None:
    """Given a certificate checked (and cached), When a revocation list naming it is installed,
    Expect Revoked on the next check."""
    cert = make_cert("a")
    trust.check_certificate(cert.raw, NOW)

    assert trust.update_revocations(authority.revocation_list(1, ["a"]).raw)

    with pytest.raises(Revoked):
        trust.check_certificate(cert.raw, NOW)


def test_require_valid_checks_expiry_and_revocation(
    trust: TrustStore, authority: Authority, make_cert: CertFactory
) -> None:
    """Given a peer certificate, When required valid, Expect nothing while valid,
    CertificateExpired after expiry and Revoked once revoked."""
    cert = make_cert("a", ttl=10)
    trust.require_valid(cert, NOW)

    with pytest.raises(CertificateExpired):
        trust.require_valid(cert, NOW + 11)
    trust.update_revocations(authority.revocation_list(1, serials=[cert.serial]).raw)
    with pytest.raises(Revoked):
        trust.require_valid(cert, NOW)


def test_verify_checks_signatures_with_the_certificate_key(authority: Authority) -> None:
    """Given an identity, When bytes it signed are verified, Expect success; bytes changed
    or signed by another key, Expect SignatureError."""
    trust = TrustStore(authority.verify_key)
    ident = Identity.create(authority, "a", "worker", NOW)
    other = nacl.signing.SigningKey.generate()
    sig = ident.signing_key.sign(b"body").signature

    trust.verify(ident.certificate, b"body", sig)
    with pytest.raises(SignatureError):
        trust.verify(ident.certificate, b"bodY", sig)
    with pytest.raises(SignatureError):
        trust.verify(ident.certificate, b"body", other.sign(b"body").signature)


# -- update_revocations ----------------------------------------------------------


def test_newer_revocation_list_is_installed(trust: TrustStore, authority: Authority) -> None:
    """Given version 0 installed, When versions 1 then 5 arrive, Expect both installed."""
    assert trust.update_revocations(authority.revocation_list(1, ["a"]).raw)
    assert trust.update_revocations(authority.revocation_list(5, ["a", "b"]).raw)

    assert trust.revocations.version == 5
    assert trust.revocations.agent_ids == {"a", "b"}


@pytest.mark.parametrize("older", [2, 3])
def test_older_or_equal_revocation_list_is_refused(
    trust: TrustStore, authority: Authority, older: int
) -> None:
    """Given version 3 installed, When an equal or older version arrives (a rollback that
    would un-revoke agents), Expect False and the installed list kept."""
    trust.update_revocations(authority.revocation_list(3, ["a"]).raw)

    assert trust.update_revocations(authority.revocation_list(older, []).raw) is False
    assert trust.revocations.version == 3
    assert trust.revocations.agent_ids == {"a"}


def test_unsigned_revocation_list_is_refused(trust: TrustStore) -> None:
    """Given a revocation list signed by another authority, When installed,
    Expect CertificateError and nothing changed."""
    rogue = Authority.generate().revocation_list(99, [])

    with pytest.raises(CertificateError):
        trust.update_revocations(rogue.raw)
    assert trust.revocations.version == 0


def test_tampered_revocation_list_is_refused(trust: TrustStore, authority: Authority) -> None:
    """Given an authority-signed list whose body was edited, When installed,
    Expect CertificateError."""
    raw = authority.revocation_list(1, ["victim"]).raw
    tampered = raw.replace(pack("victim"), pack("victiM"))
    assert tampered != raw

    with pytest.raises(CertificateError):
        trust.update_revocations(tampered)


def test_certificate_is_not_a_revocation_list(trust: TrustStore, make_cert: CertFactory) -> None:
    """Given an authority-signed certificate, When installed as a revocation list,
    Expect CertificateError (domain separation by tag)."""
    with pytest.raises(CertificateError, match=re.escape(CRL_TAG)):
        trust.update_revocations(make_cert().raw)


def test_installing_revocations_forgets_revoked_peers(
    trust: TrustStore, authority: Authority, make_cert: CertFactory
) -> None:
    """Given peers a and b learned, When a list revoking a is installed, Expect a forgotten
    and b kept."""
    a, b = make_cert("a"), make_cert("b")
    trust.learn(a)
    trust.learn(b)

    trust.update_revocations(authority.revocation_list(1, ["a"]).raw)

    assert trust.peer("a") is None
    assert trust.peer("b") == b


# -- learn ----------------------------------------------------------------------------


def test_learn_keeps_the_newest_certificate(trust: TrustStore, make_cert: CertFactory) -> None:
    """Given a newer certificate of agent a learned, When an older one arrives,
    Expect the newer one kept; a newer one again, Expect it to replace."""
    older, newer = make_cert("a", now=NOW), make_cert("a", now=NOW + 10)
    trust.learn(newer)
    trust.learn(older)
    assert trust.peer("a") == newer

    newest = make_cert("a", now=NOW + 20)
    trust.learn(newest)
    assert trust.peer("a") == newest
    assert trust.peers() == {"a": newest}


def test_peers_is_a_copy(trust: TrustStore, make_cert: CertFactory) -> None:
    """Given a learned peer, When the caller edits the returned dict, Expect the store unchanged."""
    trust.learn(make_cert("a"))
    trust.peers().clear()

    assert trust.peer("a") is not None
