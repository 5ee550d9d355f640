"""Sealing and opening envelopes: signatures, encryption and the receiver's checks.

``Codec.seal`` signs every envelope with the sender's Ed25519 key and, for
point-to-point messages, encrypts the payload to the receiver with NaCl
``Box`` (X25519 keys derived from both parties' Ed25519 keys). Broadcasts are
signed; their payload is encrypted with ``SecretBox`` under the cluster key
when one is configured.

``Codec.open`` runs the receiver's checks in DESIGN §2's order, cheapest first:

    size → strict decode → version → known sender with valid certificate →
    signature → timestamp window → not seen before → role allowed to send
    this type → addressed to us → decrypt

and raises the matching :class:`~robeing.protocol.errors.ProtocolError` on
the first failure. Nothing is re-encoded before the signature is checked.

This module does no I/O; ``now`` is always passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing

from .envelope import (
    DEFAULT_LIMITS,
    ENC_BOX,
    ENC_NONE,
    ENC_SECRETBOX,
    SIGNATURE_SIZE,
    Envelope,
    Limits,
    body_fields,
    envelope_from_fields,
    pack,
    split_wire,
    unpack,
)
from .errors import (
    CertificateError,
    ConfigError,
    DecodeError,
    DecryptError,
    Duplicate,
    NotAllowed,
    Replay,
    TooLarge,
    UnknownPeer,
    UnknownSender,
)
from .identity import Certificate, Identity, TrustStore
from .records import COORDINATORS
from .replay import ReplayWindow, SeenIds
from .roles import check_allowed

# Types whose replays are harmless because the application deduplicates them
# by their own ids (submissions by task id; assignments and results by the
# (epoch, attempt) fencing token), and which may legitimately wait in a
# durable queue longer than the replay window.
AGE_EXEMPT_TYPES = frozenset({"task.submit", "task.assign", "task.result"})


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified, decrypted envelope and the sender's certificate."""

    envelope: Envelope
    certificate: Certificate
    size: int


class Codec:
    """Seals outgoing envelopes and opens incoming ones for one identity.

    Args:
        identity: our keys and certificate.
        trust: authority key, revocation list and known peers.
        window: the accepted timestamp window.
        limits: decoding limits for untrusted bytes.
        cluster_key: optional 32-byte key; broadcasts are then encrypted.
        age_exempt_types: message types exempt from the age bound.
        group: the coordinators' group identity, held by coordinators only:
            envelopes addressed to :data:`~robeing.protocol.records.COORDINATORS`
            are accepted and decrypted with it.
    """

    def __init__(
        self,
        identity: Identity,
        trust: TrustStore,
        window: ReplayWindow | None = None,
        limits: Limits = DEFAULT_LIMITS,
        cluster_key: bytes | None = None,
        age_exempt_types: Iterable[str] = AGE_EXEMPT_TYPES,
        group: Identity | None = None,
    ) -> None:
        self.identity = identity
        self.trust = trust
        self.window = window or ReplayWindow()
        self.limits = limits
        self.seen = SeenIds(self.window.max_age + self.window.max_skew)
        self._age_exempt = frozenset(age_exempt_types)
        self._cert_raw = identity.certificate.raw
        self._key_id = identity.certificate.key_id
        # libsodium's secret key (seed + public key) for crypto_sign, whose
        # output (signature + body) is exactly the wire form: no wrapper object.
        self._secret_key = nacl.bindings.crypto_sign_seed_keypair(bytes(identity.signing_key))[1]
        self._boxes: dict[str, tuple[bytes, nacl.public.Box]] = {}
        self.group = group
        self._group_boxes: dict[str, tuple[bytes, nacl.public.Box]] = {}
        if cluster_key is not None and len(cluster_key) != 32:
            raise ConfigError("the cluster key must be 32 bytes")
        self._secret = nacl.secret.SecretBox(cluster_key) if cluster_key else None

    # -- sending -------------------------------------------------------------

    def seal(self, env: Envelope, now: float, encrypt: bool | None = None) -> bytes:
        """Sign (and encrypt) ``env`` as sent by us at ``now``.

        Args:
            env: the message; its ``sender`` and ``timestamp`` are set by us.
            now: our clock.
            encrypt: ``None`` encrypts point-to-point payloads always and
                broadcasts when a cluster key is set; ``False`` sends the
                payload signed but in clear.

        Returns:
            The exact bytes to publish.

        Raises:
            UnknownPeer: point-to-point encryption to a receiver whose
                certificate is unknown, expired or revoked.
            TypeError: the payload cannot be msgpack-encoded.
        """
        fields = body_fields(env, ENC_NONE, self._cert_raw, self._key_id)
        fields["sender"] = self.identity.agent_id
        fields["timestamp"] = now
        if encrypt is None:
            encrypt = not env.is_broadcast or self._secret is not None
        if not encrypt:
            fields["payload"] = env.payload
        elif env.is_broadcast:
            if self._secret is None:
                raise ConfigError("broadcast encryption needs a cluster key")
            fields["encryption"] = ENC_SECRETBOX
            fields["ciphertext"] = bytes(self._secret.encrypt(pack(env.payload)))
        else:
            fields["encryption"] = ENC_BOX
            fields["ciphertext"] = bytes(self._box(env.receiver, now).encrypt(pack(env.payload)))
        body = pack(fields)
        if len(body) + SIGNATURE_SIZE > self.limits.max_message_bytes:
            # Every receiver would refuse it (too_large): fail here, where the
            # sender can still tell whoever waits for it why.
            raise TooLarge(
                f"{env.type!r} message of {len(body) + SIGNATURE_SIZE} bytes exceeds the "
                f"{self.limits.max_message_bytes} bytes a receiver accepts"
            )
        return nacl.bindings.crypto_sign(body, self._secret_key)

    def _box(self, peer_id: str, now: float) -> nacl.public.Box:
        cert = self.trust.peer(peer_id)
        if cert is None:
            raise UnknownPeer(f"no certificate known for agent {peer_id!r}")
        try:
            self.trust.require_valid(cert, now)
        except CertificateError as exc:
            raise UnknownPeer(str(exc)) from exc
        cached = self._boxes.get(peer_id)
        if cached is not None and cached[0] == cert.verify_key:
            return cached[1]
        peer_vk = nacl.signing.VerifyKey(cert.verify_key)
        box = nacl.public.Box(self.identity.box_key, peer_vk.to_curve25519_public_key())
        self._boxes[peer_id] = (cert.verify_key, box)
        return box

    def _group_box(self, peer_id: str, now: float) -> nacl.public.Box:
        """The Box between the coordinators' group key and a peer (a submitter)."""
        assert self.group is not None
        cert = self.trust.peer(peer_id)
        if cert is None:
            raise UnknownPeer(f"no certificate known for agent {peer_id!r}")
        cached = self._group_boxes.get(peer_id)
        if cached is not None and cached[0] == cert.verify_key:
            return cached[1]
        peer_vk = nacl.signing.VerifyKey(cert.verify_key)
        box = nacl.public.Box(self.group.box_key, peer_vk.to_curve25519_public_key())
        self._group_boxes[peer_id] = (cert.verify_key, box)
        return box

    # -- receiving -----------------------------------------------------------

    def open(
        self, data: bytes, now: float, redelivered: bool = False, held: bool = False
    ) -> Opened:
        """Verify and decrypt wire bytes (DESIGN §2 order, cheapest first).

        Args:
            data: the message body exactly as received.
            now: our clock.
            redelivered: the broker's redelivered flag for this delivery.
            held: it was held on the way by a relay, which the sender asked to
                (``robeing send --via``): no age bound, like the durable types.

        Returns:
            The verified envelope with its sender's certificate.

        Raises:
            TooLarge, DecodeError, VersionError: not a valid envelope.
            UnknownSender, CertificateError, CertificateExpired, Revoked:
                the sender is not trusted.
            SignatureError: the signature does not match.
            StaleMessage: timestamp outside the window.
            Replay: the id was seen before (fresh publish).
            Duplicate: the id was seen before and the broker redelivered it.
            NotAllowed: the sender's role may not send this type, or the
                message is addressed to another agent.
            DecryptError: the payload does not decrypt or decode.
        """
        raw = split_wire(data, self.limits)
        fields = raw.fields
        sender = fields["sender"]
        try:
            cert = self.trust.check_certificate(fields["cert"], now)
        except CertificateError as exc:
            if type(exc) is CertificateError:
                raise UnknownSender(f"sender {sender!r}: {exc}") from exc
            raise
        if cert.agent_id != sender:
            raise UnknownSender(f"certificate of {cert.agent_id!r} used by {sender!r}")
        self.trust.verify_signed(cert, data)
        msg_type = fields["type"]
        self.window.check(fields["timestamp"], now, age_exempt=held or msg_type in self._age_exempt)
        try:
            self.seen.add(fields["id"], now)
        except Replay:
            if redelivered:
                raise Duplicate(
                    f"message {fields['id']} redelivered after acceptance", fields["id"]
                ) from None
            raise
        check_allowed(cert.role, msg_type)
        receiver = fields["receiver"]
        me = self.identity.agent_id
        to_group = receiver == COORDINATORS and self.group is not None
        if receiver != me and receiver != "*" and not to_group:
            raise NotAllowed(f"message for {receiver!r} delivered to {me!r}")
        self.trust.learn(cert)
        payload = self._payload(fields, sender, now, to_group)
        return Opened(envelope_from_fields(fields, payload), cert, len(data))

    def open_stored(self, data: bytes, now: float) -> Opened:
        """Verify a record a process stored on the broker (not a message in transit).

        The checks of :meth:`open` that make sense for something read back
        much later: size, decoding, a valid certificate, the signature, the
        role allowed to write this type. No time window and no replay cache
        (a record is read again on every reload); its payload is not
        encrypted to anyone (records carry their own encryption).

        Raises:
            ProtocolError: the record is not an authentic, well-formed envelope.
        """
        raw = split_wire(data, self.limits)
        fields = raw.fields
        try:
            cert = self.trust.check_certificate(fields["cert"], now)
        except CertificateError as exc:
            if type(exc) is CertificateError:
                raise UnknownSender(f"writer {fields['sender']!r}: {exc}") from exc
            raise
        if cert.agent_id != fields["sender"]:
            raise UnknownSender(f"certificate of {cert.agent_id!r} used by {fields['sender']!r}")
        self.trust.verify(cert, raw.body, raw.signature)
        check_allowed(cert.role, fields["type"])
        if fields["encryption"] != ENC_NONE:
            raise DecodeError("a stored record's envelope is not encrypted to anyone")
        return Opened(envelope_from_fields(fields, fields["payload"]), cert, len(data))

    def _payload(self, fields: dict[str, Any], sender: str, now: float, to_group: bool) -> Any:
        encryption = fields["encryption"]
        if encryption == ENC_NONE:
            return fields["payload"]
        try:
            if encryption == ENC_BOX and to_group:
                plain = self._group_box(sender, now).decrypt(fields["ciphertext"])
            elif encryption == ENC_BOX:
                plain = self._box(sender, now).decrypt(fields["ciphertext"])
            elif self._secret is None:
                raise DecryptError("broadcast encrypted with a cluster key we do not have")
            else:
                plain = self._secret.decrypt(fields["ciphertext"])
        except (nacl.exceptions.CryptoError, UnknownPeer) as exc:
            raise DecryptError(f"payload from {sender!r} does not decrypt: {exc}") from exc
        try:
            return unpack(plain, self.limits)
        except DecodeError as exc:
            raise DecryptError(f"payload from {sender!r} decrypts to garbage: {exc}") from exc
