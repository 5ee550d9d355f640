"""Identities on disk: ``robeing keys init | issue | revoke``.

Layout of a keys directory::

    authority.pub         authority public key (hex) — every agent needs it
    authority.key         authority signing key (hex) — only where certificates
                          are issued; keep it off production agents
    revoked.crl           authority-signed revocation list
    cluster.key           optional 32-byte key (hex) that encrypts broadcasts
    agents/<id>.key       an agent's signing key (hex), mode 0600
    agents/<id>.cert      its certificate (binary, authority-signed)
    broker/<user>.password  the broker password of an agent (or pool) user,
                          mode 0600, made by ``robeing broker users``

Certificates in ``agents/`` double as a directory of peers: a sender finds
the receiver's public key there when it has not yet heard from it.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

import nacl.signing

from ..broker.management import has_credentials, with_credentials
from ..protocol.errors import CertificateError, ConfigError
from ..protocol.identity import (
    DEFAULT_CERT_TTL,
    Authority,
    Certificate,
    Identity,
    RevocationList,
    TrustStore,
    verify_key_from_bytes,
)
from ..protocol.records import COORDINATORS
from .settings import Settings, check_agent_id


def _write_secret(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode argument only applies when the file is created
    with os.fdopen(fd, "w") as fh:
        fh.write(data)


def _create_secret(path: Path, data: str) -> None:
    """Write a new secret file; FileExistsError if there is one (never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


class Keystore:
    """A keys directory.

    Raises:
        ConfigError: from every method, with a message saying what to run.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------
    @property
    def authority_pub(self) -> Path:
        return self.root / "authority.pub"

    @property
    def authority_key(self) -> Path:
        return self.root / "authority.key"

    @property
    def crl_path(self) -> Path:
        return self.root / "revoked.crl"

    @property
    def cluster_key_path(self) -> Path:
        return self.root / "cluster.key"

    @property
    def group_key(self) -> Path:
        """The coordinators' group key: coordinators only (see protocol/records.py)."""
        return self.root / "coordinators.key"

    @property
    def group_cert(self) -> Path:
        """Its certificate: everyone, to encrypt submissions to the coordinators."""
        return self.root / "coordinators.cert"

    def _agent(self, agent_id: str, suffix: str) -> Path:
        return self.root / "agents" / f"{check_agent_id(agent_id)}.{suffix}"

    # -- authority -----------------------------------------------------------
    def init(self, force: bool = False, cluster_key: bool = False) -> bytes:
        """Create the cluster authority (and optionally a broadcast key).

        Returns:
            The authority public key.

        Raises:
            ConfigError: an authority exists and ``force`` is not set.
        """
        if self.authority_pub.exists() and not force:
            raise ConfigError(
                f"an authority already exists in {self.root} (use --force to replace)"
            )
        authority = Authority.generate()
        _write_secret(self.authority_key, authority.signing_key.encode().hex())
        _atomic_write(self.authority_pub, bytes(authority.verify_key).hex().encode())
        _atomic_write(self.crl_path, authority.revocation_list(0).raw)
        if cluster_key:
            _write_secret(self.cluster_key_path, os.urandom(32).hex())
        if force:
            self.group_key.unlink(missing_ok=True)
        self.issue_group()
        return bytes(authority.verify_key)

    # -- the coordinators' group identity ------------------------------------------
    def issue_group(self, ttl: float = DEFAULT_CERT_TTL) -> Identity:
        """Create the coordinators' group identity (shared by every coordinator)."""
        identity = Identity.create(self.authority(), COORDINATORS, "coordinator", time.time(), ttl)
        _write_secret(self.group_key, identity.signing_key.encode().hex())
        _atomic_write(self.group_cert, identity.certificate.raw)
        return identity

    def group_identity(self, issue: bool = True) -> Identity | None:
        """The coordinators' group identity, if this keys dir holds its key.

        Created when missing and the authority key is at hand (development);
        a keys dir without it (a worker's, a client's) gives None.

        Raises:
            ConfigError: the files are there but invalid.
        """
        if not self.group_key.exists() or not self.group_cert.exists():
            if issue and self.has_authority_key():
                return self.issue_group()
            return None
        try:
            key = nacl.signing.SigningKey(bytes.fromhex(self.group_key.read_text().strip()))
            cert = Certificate.parse(self.group_cert.read_bytes(), self.authority_verify_key())
            return Identity(key, cert)
        except (ValueError, CertificateError, ConfigError) as exc:
            raise ConfigError(f"the coordinators' group key in {self.root}: {exc}") from exc

    def has_authority_key(self) -> bool:
        return self.authority_key.exists()

    def authority(self) -> Authority:
        try:
            seed = bytes.fromhex(self.authority_key.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(
                f"no authority key in {self.root}: run `robeing keys init` "
                "(or issue certificates where the authority key lives)"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{self.authority_key} is not a hex key") from exc
        return Authority(nacl.signing.SigningKey(seed))

    def authority_verify_key(self) -> nacl.signing.VerifyKey:
        try:
            return verify_key_from_bytes(bytes.fromhex(self.authority_pub.read_text().strip()))
        except FileNotFoundError:
            raise ConfigError(
                f"no authority in {self.root}: run `robeing keys init` or set ROBEING_KEYS"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{self.authority_pub} is not a hex public key") from exc

    def cluster_key(self) -> bytes | None:
        try:
            key = bytes.fromhex(self.cluster_key_path.read_text().strip())
        except FileNotFoundError:
            return None
        if len(key) != 32:
            raise ConfigError(f"{self.cluster_key_path} must hold 32 bytes")
        return key

    # -- agents --------------------------------------------------------------
    def issue(self, agent_id: str, role: str, ttl: float = DEFAULT_CERT_TTL) -> Identity:
        """Create a key pair for ``agent_id`` and certify it with the authority."""
        identity = Identity.create(self.authority(), agent_id, role, time.time(), ttl)
        _write_secret(self._agent(agent_id, "key"), identity.signing_key.encode().hex())
        _atomic_write(self._agent(agent_id, "cert"), identity.certificate.raw)
        return identity

    def load_identity(self, agent_id: str, role: str, auto_issue: bool = True) -> Identity:
        """Load ``agent_id``'s identity, issuing one if allowed and possible.

        Raises:
            ConfigError: missing identity (says which command creates it),
                role mismatch, or files that do not belong together.
        """
        key_path, cert_path = self._agent(agent_id, "key"), self._agent(agent_id, "cert")
        if not key_path.exists() or not cert_path.exists():
            if auto_issue and self.has_authority_key():
                return self.issue(agent_id, role)
            raise ConfigError(
                f"no identity for {agent_id!r} in {self.root}: "
                f"run `robeing keys issue --id {agent_id} --role {role}`"
            )
        try:
            key = nacl.signing.SigningKey(bytes.fromhex(key_path.read_text().strip()))
            cert = Certificate.parse(cert_path.read_bytes(), self.authority_verify_key())
        except (ValueError, CertificateError) as exc:
            raise ConfigError(f"identity files of {agent_id!r} are invalid: {exc}") from exc
        if cert.role != role:
            if auto_issue and self.has_authority_key():
                return self.issue(agent_id, role)
            raise ConfigError(f"{agent_id!r} is certified as {cert.role!r}, not {role!r}")
        if cert.expires_at < time.time():
            if auto_issue and self.has_authority_key():
                return self.issue(agent_id, role)
            raise ConfigError(f"the certificate of {agent_id!r} expired; issue a new one")
        return Identity(key, cert)

    def peer_certificate(self, agent_id: str) -> bytes | None:
        if agent_id == COORDINATORS:
            if not self.group_cert.exists() and self.has_authority_key():
                self.issue_group()  # development: the first use creates it
            try:
                return self.group_cert.read_bytes()
            except FileNotFoundError:
                return None
        try:
            return self._agent(agent_id, "cert").read_bytes()
        except (FileNotFoundError, ConfigError):
            return None

    def revocations(self) -> RevocationList:
        try:
            return RevocationList.parse(self.crl_path.read_bytes(), self.authority_verify_key())
        except FileNotFoundError:
            return RevocationList()
        except CertificateError as exc:
            raise ConfigError(f"{self.crl_path} is invalid: {exc}") from exc

    def revoke(self, agent_id: str) -> RevocationList:
        """Add ``agent_id`` to the revocation list (version + 1)."""
        current = self.revocations()
        crl = self.authority().revocation_list(
            current.version + 1, current.agent_ids | {check_agent_id(agent_id)}, current.serials
        )
        _atomic_write(self.crl_path, crl.raw)
        return crl

    def trust_store(self) -> TrustStore:
        """The authority key and revocation list, ready to check peers."""
        return TrustStore(self.authority_verify_key(), self.revocations())

    def list_agents(self) -> list[Certificate]:
        vk = self.authority_verify_key()
        certs = []
        for path in sorted((self.root / "agents").glob("*.cert")):
            try:
                certs.append(Certificate.parse(path.read_bytes(), vk))
            except CertificateError:
                continue
        return certs

    # -- broker passwords ------------------------------------------------------
    def broker_password_path(self, user: str) -> Path:
        return self.root / "broker" / f"{check_agent_id(user)}.password"

    def broker_password(self, user: str) -> str | None:
        """The broker password of ``user`` (an agent id, or a pool's user), if there is one.

        Raises:
            ConfigError: the file exists but is empty.
        """
        path = self.broker_password_path(user)
        try:
            password = path.read_text().strip()
        except FileNotFoundError:
            return None
        if not password:
            raise ConfigError(f"{path} is empty: delete it and run `robeing broker users`")
        return password

    def ensure_broker_password(self, user: str) -> tuple[str, bool]:
        """``user``'s broker password, made (random, mode 0600) if it has none.

        An existing password is never replaced: the broker user and the agent
        holding the file must keep agreeing.

        Returns:
            The password, and whether it was made now.
        """
        existing = self.broker_password(user)
        if existing is not None:
            return existing, False
        password = secrets.token_urlsafe(32)
        try:
            _create_secret(self.broker_password_path(user), password)
        except FileExistsError:  # made meanwhile by another process: theirs wins
            return self.broker_password(user) or password, False
        return password, True

    def broker_url(self, amqp_url: str, agent_id: str) -> str:
        """The URL ``agent_id`` connects with.

        A URL that names a user is used as given. Otherwise, if this keys
        directory holds the agent's broker password, the agent logs in as
        itself: ``<agent id>:<password>``. Otherwise the URL is used as given
        (and the client library's default login applies).
        """
        if has_credentials(amqp_url):
            return amqp_url
        password = self.broker_password(agent_id)
        return amqp_url if password is None else with_credentials(amqp_url, agent_id, password)

    def with_broker_login(self, settings: Settings) -> Settings:
        """``settings`` with the AMQP URL its agent connects with (:meth:`broker_url`)."""
        url = self.broker_url(settings.amqp_url, settings.agent_id)
        return settings if url == settings.amqp_url else replace(settings, amqp_url=url)
