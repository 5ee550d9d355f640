"""Identities: the cluster authority, agent certificates and the revocation list.

Trust model (DESIGN §2): one cluster authority key signs agent certificates
binding ``agent_id``, ``role`` and the agent's Ed25519 public key, with an
expiry. Agents trust only certificates the authority signed. X25519 keys for
encryption are derived from the Ed25519 keys (``to_curve25519_*``), so one
certificate covers both signing and encryption.

Serialised certificates and revocation lists use the envelope's framing:
``signature (64) || msgpack body`` with a domain-separation tag in the body,
so a certificate can never be confused with an envelope or a vote.

Invariants:
    * ``TrustStore.check_certificate`` accepts a certificate only if the
      authority signed it, it has not expired at ``now``, and neither its
      agent id nor its serial is revoked.
    * A revocation list replaces the current one only if it is authority-signed
      and its ``version`` is higher (no rollback).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from .envelope import SIGNATURE_SIZE, pack, unpack
from .errors import (
    CertificateError,
    CertificateExpired,
    ConfigError,
    DecodeError,
    Revoked,
    SignatureError,
)

CERT_TAG = "robeing.cert.v1"
CRL_TAG = "robeing.crl.v1"
DEFAULT_CERT_TTL = 365 * 24 * 3600.0


def key_id(verify_key: bytes) -> str:
    """Short fingerprint of a public key (16 hex chars of SHA-256)."""
    return hashlib.sha256(verify_key).hexdigest()[:16]


def _signed(signing_key: nacl.signing.SigningKey, body: dict[str, Any]) -> bytes:
    raw = pack(body)
    return signing_key.sign(raw).signature + raw


def _open_signed(data: bytes, verify_key: nacl.signing.VerifyKey, tag: str) -> dict[str, Any]:
    if len(data) <= SIGNATURE_SIZE:
        raise CertificateError("signed object too short")
    sig, raw = data[:SIGNATURE_SIZE], data[SIGNATURE_SIZE:]
    try:
        verify_key.verify(raw, sig)
    except nacl.exceptions.BadSignatureError as exc:
        raise CertificateError(f"{tag} not signed by the cluster authority") from exc
    try:
        body = unpack(raw)
    except DecodeError as exc:
        raise CertificateError(f"{tag} is not well-formed: {exc}") from exc
    if not isinstance(body, dict) or body.get("tag") != tag:
        raise CertificateError(f"not a {tag} object")
    return body


@dataclass(frozen=True, slots=True)
class Certificate:
    """An authority-signed binding of agent id, role and public key."""

    agent_id: str
    role: str
    verify_key: bytes
    serial: str
    issued_at: float
    expires_at: float
    raw: bytes = field(repr=False, compare=False, default=b"")

    @property
    def key_id(self) -> str:
        return key_id(self.verify_key)

    @staticmethod
    def parse(data: bytes, authority: nacl.signing.VerifyKey) -> Certificate:
        """Verify and parse a serialised certificate (expiry is not checked here).

        Raises:
            CertificateError: bad signature or malformed certificate.
        """
        body = _open_signed(data, authority, CERT_TAG)
        try:
            return Certificate(
                agent_id=str(body["agent_id"]),
                role=str(body["role"]),
                verify_key=bytes(body["verify_key"]),
                serial=str(body["serial"]),
                issued_at=float(body["issued_at"]),
                expires_at=float(body["expires_at"]),
                raw=bytes(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CertificateError(f"malformed certificate: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Authority-signed set of revoked agent ids and certificate serials."""

    version: int = 0
    agent_ids: frozenset[str] = frozenset()
    serials: frozenset[str] = frozenset()
    raw: bytes = field(repr=False, compare=False, default=b"")

    def revokes(self, cert: Certificate) -> bool:
        return cert.agent_id in self.agent_ids or cert.serial in self.serials

    @staticmethod
    def parse(data: bytes, authority: nacl.signing.VerifyKey) -> RevocationList:
        """Verify and parse a serialised revocation list.

        Raises:
            CertificateError: not signed by the authority or malformed.
        """
        body = _open_signed(data, authority, CRL_TAG)
        try:
            return RevocationList(
                version=int(body["version"]),
                agent_ids=frozenset(map(str, body["agent_ids"])),
                serials=frozenset(map(str, body["serials"])),
                raw=bytes(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CertificateError(f"malformed revocation list: {exc}") from exc


class Authority:
    """The cluster authority: issues certificates and revocation lists."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self.signing_key = signing_key
        self.verify_key = signing_key.verify_key

    @classmethod
    def generate(cls) -> Authority:
        return cls(nacl.signing.SigningKey.generate())

    def issue(
        self,
        agent_id: str,
        role: str,
        verify_key: bytes,
        now: float,
        ttl: float = DEFAULT_CERT_TTL,
    ) -> Certificate:
        """Sign a certificate for ``agent_id``.

        Raises:
            ConfigError: empty agent id or a key of the wrong size.
        """
        if not agent_id or len(verify_key) != 32:
            raise ConfigError("a certificate needs an agent id and a 32-byte Ed25519 key")
        body = {
            "tag": CERT_TAG,
            "agent_id": agent_id,
            "role": role,
            "verify_key": verify_key,
            "serial": os.urandom(8).hex(),
            "issued_at": now,
            "expires_at": now + ttl,
        }
        return Certificate.parse(_signed(self.signing_key, body), self.verify_key)

    def revocation_list(
        self, version: int, agent_ids: Iterable[str] = (), serials: Iterable[str] = ()
    ) -> RevocationList:
        """Sign a revocation list; ``version`` must grow with every change."""
        body = {
            "tag": CRL_TAG,
            "version": version,
            "agent_ids": sorted(set(agent_ids)),
            "serials": sorted(set(serials)),
        }
        return RevocationList.parse(_signed(self.signing_key, body), self.verify_key)


@dataclass(slots=True)
class Identity:
    """An agent's own keys and certificate."""

    signing_key: nacl.signing.SigningKey
    certificate: Certificate
    box_key: nacl.public.PrivateKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if bytes(self.signing_key.verify_key) != self.certificate.verify_key:
            raise ConfigError(f"key does not match certificate of {self.certificate.agent_id!r}")
        self.box_key = self.signing_key.to_curve25519_private_key()

    @property
    def agent_id(self) -> str:
        return self.certificate.agent_id

    @property
    def role(self) -> str:
        return self.certificate.role

    @classmethod
    def create(
        cls,
        authority: Authority,
        agent_id: str,
        role: str,
        now: float,
        ttl: float = DEFAULT_CERT_TTL,
    ) -> Identity:
        """Generate a key pair and have ``authority`` certify it."""
        key = nacl.signing.SigningKey.generate()
        cert = authority.issue(agent_id, role, bytes(key.verify_key), now, ttl)
        return cls(key, cert)


class TrustStore:
    """What an agent trusts: the authority key, the revocation list, known peers.

    Certificate checks are cached by the certificate's bytes, so a peer that
    attaches its certificate to every envelope costs one dict lookup after the
    first message; expiry and revocation are still checked every time.
    """

    def __init__(
        self,
        authority: nacl.signing.VerifyKey,
        revocations: RevocationList | None = None,
    ) -> None:
        self.authority = authority
        self.revocations = revocations or RevocationList()
        self._parsed: dict[bytes, Certificate] = {}
        self._peers: dict[str, Certificate] = {}

    def check_certificate(self, data: bytes, now: float) -> Certificate:
        """Verify a serialised certificate against authority, expiry and revocations.

        Raises:
            CertificateError: not signed by the authority or malformed.
            CertificateExpired: past ``expires_at``.
            Revoked: agent id or serial revoked.
        """
        cert = self._parsed.get(data)
        if cert is None:
            cert = Certificate.parse(data, self.authority)
            if len(self._parsed) > 100_000:  # bound memory against certificate churn
                self._parsed.clear()
            self._parsed[data] = cert
        if now > cert.expires_at:
            raise CertificateExpired(f"certificate of {cert.agent_id!r} expired")
        if self.revocations.revokes(cert):
            raise Revoked(f"agent {cert.agent_id!r} is revoked")
        return cert

    def verify(self, cert: Certificate, body: bytes, signature: bytes) -> None:
        """Check ``signature`` over ``body`` with the certificate's key.

        Raises:
            SignatureError: the signature does not verify.
        """
        self.verify_signed(cert, signature + body)

    def verify_signed(self, cert: Certificate, signed: bytes) -> None:
        """Check wire bytes (signature, then the signed body) with the certificate's key.

        Straight to libsodium (``crypto_sign_open``): ``VerifyKey.verify``
        re-joins signature and body and wraps the key on every call, and the
        wire bytes already are signature + body.

        Raises:
            SignatureError: the signature does not verify.
        """
        key = cert.verify_key
        if len(key) != 32:  # libsodium reads 32 bytes whatever it is given
            raise SignatureError(f"certificate of {cert.agent_id!r} has no Ed25519 key")
        try:
            nacl.bindings.crypto_sign_open(signed if type(signed) is bytes else bytes(signed), key)
        except nacl.exceptions.BadSignatureError as exc:
            raise SignatureError(f"bad signature from {cert.agent_id!r}") from exc

    def learn(self, cert: Certificate) -> None:
        """Remember a peer's (already checked) certificate, newest wins."""
        known = self._peers.get(cert.agent_id)
        if known is None or cert.issued_at >= known.issued_at:
            self._peers[cert.agent_id] = cert

    def peer(self, agent_id: str) -> Certificate | None:
        return self._peers.get(agent_id)

    def peers(self) -> dict[str, Certificate]:
        return dict(self._peers)

    def update_revocations(self, data: bytes) -> bool:
        """Install a newer authority-signed revocation list.

        Returns:
            True if installed; False if not newer than the current one.

        Raises:
            CertificateError: not signed by the authority or malformed.
        """
        crl = RevocationList.parse(data, self.authority)
        if crl.version <= self.revocations.version:
            return False
        self.revocations = crl
        for agent_id in list(self._peers):
            if crl.revokes(self._peers[agent_id]):
                del self._peers[agent_id]
        return True

    def require_valid(self, cert: Certificate, now: float) -> None:
        """Raise unless ``cert`` is still valid (used before encrypting to a peer).

        Raises:
            CertificateExpired: past expiry.
            Revoked: revoked.
        """
        if now > cert.expires_at:
            raise CertificateExpired(f"certificate of {cert.agent_id!r} expired")
        if self.revocations.revokes(cert):
            raise Revoked(f"agent {cert.agent_id!r} is revoked")


def verify_key_from_bytes(data: bytes) -> nacl.signing.VerifyKey:
    """Load an Ed25519 public key.

    Raises:
        ConfigError: not a 32-byte key.
    """
    if len(data) != 32:
        raise ConfigError(f"an Ed25519 public key is 32 bytes, got {len(data)}")
    return nacl.signing.VerifyKey(data)
