"""Specification of the codec: sealing, opening, and the receiver's checks in DESIGN §2 order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import nacl.public
import nacl.signing
import pytest

from robeing.protocol.codec import Codec
from robeing.protocol.envelope import (
    DEFAULT_LIMITS,
    SIGNATURE_SIZE,
    Envelope,
    Limits,
    body_fields,
    pack,
    split_wire,
    unpack,
)
from robeing.protocol.errors import (
    CertificateExpired,
    ConfigError,
    DecodeError,
    DecryptError,
    Duplicate,
    NotAllowed,
    Replay,
    Revoked,
    SignatureError,
    StaleMessage,
    TooLarge,
    UnknownPeer,
    UnknownSender,
    VersionError,
)
from robeing.protocol.identity import DEFAULT_CERT_TTL, Authority, Identity, TrustStore
from robeing.protocol.replay import ReplayWindow

NOW = 1_700_000_000.0
SECRET = "do-not-leak-7f3a"

IdentityFactory = Callable[..., Identity]
CodecFactory = Callable[..., Codec]


@pytest.fixture
def authority() -> Authority:
    return Authority.generate()


@pytest.fixture
def make_identity(authority: Authority) -> IdentityFactory:
    """Factory: an identity certified by the cluster authority (or another one)."""

    def make(
        agent_id: str,
        role: str = "worker",
        *,
        issued_at: float = NOW - 60,
        ttl: float = DEFAULT_CERT_TTL,
        by: Authority | None = None,
    ) -> Identity:
        return Identity.create(by or authority, agent_id, role, issued_at, ttl)

    return make


@pytest.fixture
def make_codec(authority: Authority) -> CodecFactory:
    """Factory: a codec for ``identity`` that trusts the cluster authority and knows ``peers``."""

    def make(
        identity: Identity,
        *,
        knows: Iterable[Identity] = (),
        cluster_key: bytes | None = None,
        limits: Limits = DEFAULT_LIMITS,
        window: ReplayWindow | None = None,
        trust_authority: Authority | None = None,
    ) -> Codec:
        trust = TrustStore((trust_authority or authority).verify_key)
        for peer in knows:
            trust.learn(peer.certificate)
        return Codec(identity, trust, window=window, limits=limits, cluster_key=cluster_key)

    return make


@pytest.fixture
def alice(make_identity: IdentityFactory) -> Identity:
    return make_identity("alice")


@pytest.fixture
def bob(make_identity: IdentityFactory) -> Identity:
    return make_identity("bob")


@pytest.fixture
def alice_codec(make_codec: CodecFactory, alice: Identity, bob: Identity) -> Codec:
    return make_codec(alice, knows=[bob])


@pytest.fixture
def bob_codec(make_codec: CodecFactory, bob: Identity) -> Codec:
    return make_codec(bob)


def forge(
    identity: Identity, env: Envelope, now: float, encryption: str = "none", **overrides: Any
) -> bytes:
    """Wire bytes signed by ``identity`` with arbitrary body fields (for hostile input)."""
    cert = identity.certificate
    fields = body_fields(env, encryption, cert.raw, cert.key_id)
    fields.update(sender=identity.agent_id, timestamp=now)
    if encryption == "none":
        fields["payload"] = env.payload
    fields.update(overrides)
    body = pack(fields)
    return identity.signing_key.sign(body).signature + body


def corrupt_signature(data: bytes) -> bytes:
    out = bytearray(data)
    out[0] ^= 0x01
    return bytes(out)


def to_bob(msg_type: str = "chat", payload: Any = None, **kw: Any) -> Envelope:
    return Envelope(msg_type, {"secret": SECRET} if payload is None else payload, "bob", **kw)


# -- round trips ----------------------------------------------------------------


def test_point_to_point_is_signed_and_encrypted_to_the_receiver(
    alice_codec: Codec, bob_codec: Codec
) -> None:
    """Given alice knows bob's certificate, When she seals a message to bob and bob opens it,
    Expect a Box-encrypted payload on the wire and every field back at bob."""
    env = to_bob(priority=8, requires_ack=True, reply_to="amq.rabbitmq.reply-to")

    data = alice_codec.seal(env, NOW)
    opened = bob_codec.open(data, NOW + 1)

    fields = split_wire(data).fields
    assert fields["encryption"] == "box"
    assert "payload" not in fields
    assert SECRET.encode() not in data
    assert opened.envelope.payload == {"secret": SECRET}
    assert opened.envelope.sender == "alice"
    assert opened.envelope.timestamp == NOW
    assert (opened.envelope.id, opened.envelope.type) == (env.id, "chat")
    assert (opened.envelope.priority, opened.envelope.requires_ack) == (8, True)
    assert opened.envelope.reply_to == "amq.rabbitmq.reply-to"
    assert opened.certificate.agent_id == "alice"
    assert opened.size == len(data)


def test_seal_sets_our_sender_id_and_clock(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given an envelope claiming another sender and timestamp, When alice seals it,
    Expect her own id and her clock on the wire."""
    env = to_bob(sender="mallory", timestamp=12.0)

    opened = bob_codec.open(alice_codec.seal(env, NOW), NOW)

    assert opened.envelope.sender == "alice"
    assert opened.envelope.timestamp == NOW


def test_receiver_learns_the_sender_and_can_answer_encrypted(
    alice_codec: Codec, bob_codec: Codec
) -> None:
    """Given bob never heard of alice, When he opens her message and answers with an ACK
    carrying a result, Expect the ACK encrypted to alice, and alice to open it with
    in_reply_to pointing at her message."""
    request = to_bob(requires_ack=True)
    bob_codec.open(alice_codec.seal(request, NOW), NOW)

    ack = Envelope("ack", {"ok": True, "result": SECRET}, "alice", in_reply_to=request.id)
    data = bob_codec.seal(ack, NOW + 0.5)
    opened = alice_codec.open(data, NOW + 0.6)

    assert split_wire(data).fields["encryption"] == "box"
    assert opened.envelope.type == "ack"
    assert opened.envelope.in_reply_to == request.id
    assert opened.envelope.payload == {"ok": True, "result": SECRET}


def test_plain_ack_travels_signed_in_clear(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given bob answers with a bare ACK sealed with encrypt=False, When alice opens it,
    Expect the payload in clear on the wire and the ACK accepted."""
    request = to_bob(requires_ack=True)
    bob_codec.open(alice_codec.seal(request, NOW), NOW)

    ack = Envelope("ack", {"ok": True}, "alice", in_reply_to=request.id)
    data = bob_codec.seal(ack, NOW, encrypt=False)
    opened = alice_codec.open(data, NOW)

    assert split_wire(data).fields["payload"] == {"ok": True}
    assert opened.envelope.in_reply_to == request.id


def test_broadcast_without_cluster_key_is_signed_in_clear(
    make_identity: IdentityFactory, make_codec: CodecFactory, alice_codec: Codec
) -> None:
    """Given no cluster key, When alice broadcasts, Expect encryption 'none', the payload
    readable on the wire, and every receiver (even strangers to alice) opening it."""
    data = alice_codec.seal(Envelope("note", {"text": "hi"}), NOW)

    fields = split_wire(data).fields
    assert fields["encryption"] == "none"
    assert fields["receiver"] == "*"
    for name in ("bob", "carol"):
        opened = make_codec(make_identity(name)).open(data, NOW)
        assert opened.envelope.payload == {"text": "hi"}
        assert opened.envelope.is_broadcast


def test_broadcast_with_cluster_key_uses_secretbox(
    make_identity: IdentityFactory, make_codec: CodecFactory, alice: Identity
) -> None:
    """Given a shared cluster key, When alice broadcasts, Expect a SecretBox ciphertext
    on the wire that cluster members open; without the key or with another key,
    Expect DecryptError."""
    key = os.urandom(32)
    data = make_codec(alice, cluster_key=key).seal(Envelope("note", {"secret": SECRET}), NOW)

    fields = split_wire(data).fields
    assert fields["encryption"] == "secretbox"
    assert SECRET.encode() not in data
    member = make_codec(make_identity("bob"), cluster_key=key)
    assert member.open(data, NOW).envelope.payload == {"secret": SECRET}
    for outsider_key in (None, os.urandom(32)):
        outsider = make_codec(make_identity("carol"), cluster_key=outsider_key)
        with pytest.raises(DecryptError):
            outsider.open(data, NOW)


def test_broadcast_can_opt_out_of_cluster_encryption(
    make_codec: CodecFactory, alice: Identity, bob: Identity
) -> None:
    """Given a cluster key, When alice seals a broadcast with encrypt=False, Expect clear text."""
    data = make_codec(alice, cluster_key=os.urandom(32)).seal(Envelope("note", 1), NOW, False)

    assert split_wire(data).fields["encryption"] == "none"
    assert make_codec(bob).open(data, NOW).envelope.payload == 1


def test_encrypting_a_broadcast_needs_a_cluster_key(alice_codec: Codec) -> None:
    """Given no cluster key, When alice forces encryption of a broadcast, Expect ConfigError."""
    with pytest.raises(ConfigError, match="cluster key"):
        alice_codec.seal(Envelope("note", 1), NOW, encrypt=True)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_cluster_key_must_be_32_bytes(make_codec: CodecFactory, alice: Identity, size: int) -> None:
    """Given a cluster key that is not 32 bytes, When building a codec,
    Expect ConfigError (a clear configuration error, not a crypto library exception)."""
    with pytest.raises(ConfigError, match="32 bytes"):
        make_codec(alice, cluster_key=b"k" * size if size else b"")


def test_point_to_point_may_be_sent_in_clear(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given encrypt=False, When alice seals to bob, Expect the payload in clear and accepted."""
    data = alice_codec.seal(to_bob(), NOW, encrypt=False)

    assert split_wire(data).fields["payload"] == {"secret": SECRET}
    assert bob_codec.open(data, NOW).envelope.payload == {"secret": SECRET}


# -- sealing to unknown receivers ---------------------------------------------------


def test_sealing_to_an_unknown_receiver_raises_unknown_peer(alice_codec: Codec) -> None:
    """Given alice has no certificate for 'zed', When she seals to zed, Expect UnknownPeer
    (a ConfigError); in clear, Expect it sealed anyway."""
    with pytest.raises(UnknownPeer, match="zed"):
        alice_codec.seal(Envelope("chat", 1, "zed"), NOW)
    assert isinstance(UnknownPeer("x"), ConfigError)
    assert alice_codec.seal(Envelope("chat", 1, "zed"), NOW, encrypt=False)


def test_sealing_to_an_expired_or_revoked_peer_raises_unknown_peer(
    authority: Authority,
    make_identity: IdentityFactory,
    make_codec: CodecFactory,
    alice: Identity,
) -> None:
    """Given alice knows an expired peer and a revoked peer, When she seals to either,
    Expect UnknownPeer: nothing is encrypted to a key the cluster no longer trusts."""
    expired = make_identity("old", issued_at=NOW - 1000, ttl=10)
    revoked = make_identity("gone")
    codec = make_codec(alice, knows=[expired, revoked])
    codec.trust.update_revocations(authority.revocation_list(1, ["gone"]).raw)
    codec.trust.learn(revoked.certificate)  # even if it slipped into the peer table

    for receiver in ("old", "gone"):
        with pytest.raises(UnknownPeer):
            codec.seal(Envelope("chat", 1, receiver), NOW)


# -- each rejection ---------------------------------------------------------------


def test_sender_certified_by_another_authority_is_unknown(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob_codec: Codec
) -> None:
    """Given a sender whose certificate another authority signed, When bob opens its message,
    Expect UnknownSender (reason unknown_sender)."""
    rogue_authority = Authority.generate()
    stranger = make_identity("stranger", by=rogue_authority)
    codec = make_codec(stranger, trust_authority=rogue_authority)
    data = codec.seal(to_bob(), NOW, encrypt=False)

    with pytest.raises(UnknownSender) as exc:
        bob_codec.open(data, NOW)
    assert exc.value.reason == "unknown_sender"


def test_certificate_used_by_another_sender_id(alice: Identity, bob_codec: Codec) -> None:
    """Given alice's valid certificate and signature but a body claiming sender 'mallory',
    When bob opens it, Expect UnknownSender."""
    data = forge(alice, to_bob(), NOW, sender="mallory")

    with pytest.raises(UnknownSender, match="mallory"):
        bob_codec.open(data, NOW)


def test_certificate_of_another_agent_with_own_signature(
    make_identity: IdentityFactory, alice: Identity, bob_codec: Codec
) -> None:
    """Given mallory attaches alice's certificate, claims to be alice and signs with her own
    key, When bob opens it, Expect SignatureError."""
    mallory = make_identity("mallory")
    fields = body_fields(to_bob(), "none", alice.certificate.raw, alice.certificate.key_id)
    fields.update(sender="alice", timestamp=NOW, payload=1)
    body = pack(fields)
    data = mallory.signing_key.sign(body).signature + body

    with pytest.raises(SignatureError):
        bob_codec.open(data, NOW)


def test_expired_certificate(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob: Identity, bob_codec: Codec
) -> None:
    """Given a sender whose certificate expired, When bob opens its message,
    Expect CertificateExpired (reason certificate_expired)."""
    old = make_identity("old", issued_at=NOW - 10_000, ttl=60)
    data = make_codec(old, knows=[bob]).seal(to_bob(), NOW)

    with pytest.raises(CertificateExpired) as exc:
        bob_codec.open(data, NOW)
    assert exc.value.reason == "certificate_expired"


@pytest.mark.parametrize("by", ["agent_id", "serial"])
def test_revoked_sender(
    authority: Authority, alice: Identity, alice_codec: Codec, bob_codec: Codec, by: str
) -> None:
    """Given bob installed a revocation list naming alice (by id, or by certificate serial),
    When he opens her message, Expect Revoked (reason revoked)."""
    crl = (
        authority.revocation_list(1, agent_ids=["alice"])
        if by == "agent_id"
        else authority.revocation_list(1, serials=[alice.certificate.serial])
    )
    assert bob_codec.trust.update_revocations(crl.raw)

    with pytest.raises(Revoked) as exc:
        bob_codec.open(alice_codec.seal(to_bob(), NOW), NOW)
    assert exc.value.reason == "revoked"


def test_bad_signature(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given one flipped bit in the signature, When bob opens it, Expect SignatureError."""
    data = corrupt_signature(alice_codec.seal(to_bob(), NOW))

    with pytest.raises(SignatureError) as exc:
        bob_codec.open(data, NOW)
    assert exc.value.reason == "signature"


def test_tampered_body_fails_the_signature(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given a clear payload changed on the wire (still valid msgpack), When bob opens it,
    Expect SignatureError."""
    data = alice_codec.seal(to_bob(payload={"amount": 1}), NOW, encrypt=False)
    tampered = data.replace(pack("amount") + pack(1), pack("amount") + pack(9))
    assert tampered != data

    with pytest.raises(SignatureError):
        bob_codec.open(tampered, NOW)


def test_signature_covers_the_exact_bytes_not_the_decoded_fields(
    alice_codec: Codec, bob_codec: Codec
) -> None:
    """Given the body decoded and re-encoded with the same fields in another order,
    When bob opens it with the original signature, Expect SignatureError."""
    data = alice_codec.seal(to_bob(), NOW, encrypt=False)
    fields = unpack(data[SIGNATURE_SIZE:])
    reencoded = data[:SIGNATURE_SIZE] + pack(dict(reversed(list(fields.items()))))
    assert reencoded != data

    with pytest.raises(SignatureError):
        bob_codec.open(reencoded, NOW)


@pytest.mark.parametrize(
    ("sent_at", "accepted"),
    [
        (NOW - 300, True),
        (NOW - 301, False),
        (NOW + 30, True),
        (NOW + 31, False),
    ],
    ids=["oldest-accepted", "too-old", "furthest-future", "too-far-future"],
)
def test_timestamp_window(
    alice_codec: Codec, bob_codec: Codec, sent_at: float, accepted: bool
) -> None:
    """Given the default window (300 s old, 30 s ahead), When bob opens messages sent at
    its edges, Expect those inside accepted and those outside StaleMessage (reason timestamp)."""
    data = alice_codec.seal(to_bob(), sent_at)

    if accepted:
        assert bob_codec.open(data, NOW).envelope.timestamp == sent_at
    else:
        with pytest.raises(StaleMessage) as exc:
            bob_codec.open(data, NOW)
        assert exc.value.reason == "timestamp"


def test_task_submit_is_exempt_from_the_age_bound(
    make_identity: IdentityFactory, make_codec: CodecFactory
) -> None:
    """Given a task.submit that waited an hour in a durable queue, When the coordinator opens
    it, Expect it accepted; a ping of the same age, or a task.submit from the future,
    Expect StaleMessage."""
    client = make_identity("cli", "client")
    coordinator = make_identity("coord", "coordinator")
    sender = make_codec(client, knows=[coordinator])
    receiver = make_codec(coordinator)
    hour_ago = NOW - 3600

    opened = receiver.open(sender.seal(Envelope("task.submit", 1, "coord"), hour_ago), NOW)

    assert opened.envelope.type == "task.submit"
    with pytest.raises(StaleMessage):
        receiver.open(sender.seal(Envelope("ping", 1, "coord"), hour_ago), NOW)
    with pytest.raises(StaleMessage):
        receiver.open(sender.seal(Envelope("task.submit", 1, "coord"), NOW + 60), NOW)


def test_replay_of_the_same_bytes(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given bob accepted a message, When the same bytes arrive again as a fresh publish,
    Expect Replay (reason replay)."""
    data = alice_codec.seal(to_bob(), NOW)
    bob_codec.open(data, NOW)

    with pytest.raises(Replay) as exc:
        bob_codec.open(data, NOW + 1)
    assert exc.value.reason == "replay"


def test_broker_redelivery_of_an_accepted_message_is_a_duplicate(
    alice_codec: Codec, bob_codec: Codec
) -> None:
    """Given bob accepted a message, When the broker redelivers it (redelivered=True),
    Expect Duplicate (reason duplicate), to be acknowledged and dropped."""
    data = alice_codec.seal(to_bob(), NOW)
    bob_codec.open(data, NOW)

    with pytest.raises(Duplicate) as exc:
        bob_codec.open(data, NOW + 1, redelivered=True)
    assert exc.value.reason == "duplicate"


def test_first_delivery_flagged_redelivered_is_accepted(
    alice_codec: Codec, bob_codec: Codec
) -> None:
    """Given bob never accepted a message (he crashed before opening it), When the broker
    redelivers it, Expect it accepted."""
    data = alice_codec.seal(to_bob(), NOW)

    assert bob_codec.open(data, NOW, redelivered=True).envelope.sender == "alice"


@pytest.mark.parametrize(
    ("role", "msg_type", "allowed"),
    [
        ("worker", "task.assign", False),
        ("worker", "guardian.quarantine", False),
        ("client", "task.result", False),
        ("client", "heartbeat", False),
        ("coordinator", "task.assign", True),
        ("guardian", "guardian.alert", True),
        ("client", "task.submit", True),
    ],
)
def test_role_must_be_allowed_to_send_the_type(
    make_identity: IdentityFactory,
    make_codec: CodecFactory,
    bob: Identity,
    bob_codec: Codec,
    role: str,
    msg_type: str,
    allowed: bool,
) -> None:
    """Given senders of various certified roles, When bob opens their messages, Expect
    the types their role lacks the capability for refused with NotAllowed (not_allowed)."""
    sender = make_codec(make_identity(f"{role}-1", role), knows=[bob])
    data = sender.seal(to_bob(msg_type), NOW)

    if allowed:
        assert bob_codec.open(data, NOW).envelope.type == msg_type
    else:
        with pytest.raises(NotAllowed) as exc:
            bob_codec.open(data, NOW)
        assert exc.value.reason == "not_allowed"


def test_message_addressed_to_another_agent(
    make_identity: IdentityFactory, make_codec: CodecFactory, alice: Identity, bob_codec: Codec
) -> None:
    """Given alice sealed a message to carol, When it is delivered to bob,
    Expect NotAllowed naming both agents."""
    carol = make_identity("carol")
    data = make_codec(alice, knows=[carol]).seal(Envelope("chat", 1, "carol"), NOW)

    with pytest.raises(NotAllowed, match="carol"):
        bob_codec.open(data, NOW)


def test_ciphertext_that_does_not_decrypt(alice: Identity, bob_codec: Codec) -> None:
    """Given a correctly signed message to bob whose Box ciphertext is random bytes,
    When bob opens it, Expect DecryptError (reason decrypt)."""
    data = forge(alice, to_bob(), NOW, encryption="box", ciphertext=os.urandom(64))

    with pytest.raises(DecryptError) as exc:
        bob_codec.open(data, NOW)
    assert exc.value.reason == "decrypt"


def test_ciphertext_that_decrypts_to_garbage(
    alice: Identity, bob: Identity, bob_codec: Codec
) -> None:
    """Given a correctly signed and Box-encrypted payload that is not msgpack,
    When bob opens it, Expect DecryptError ("does not decrypt or decode")."""
    bob_public = nacl.signing.VerifyKey(bob.certificate.verify_key).to_curve25519_public_key()
    ciphertext = bytes(nacl.public.Box(alice.box_key, bob_public).encrypt(b"\xc1\xc1"))
    data = forge(alice, to_bob(), NOW, encryption="box", ciphertext=ciphertext)

    with pytest.raises(DecryptError):
        bob_codec.open(data, NOW)


# -- cheapest check first ---------------------------------------------------------


def test_oversized_and_badly_signed_reports_too_large(
    make_codec: CodecFactory, alice_codec: Codec, bob: Identity
) -> None:
    """Given a message over bob's size limit that is also badly signed, When bob opens it,
    Expect TooLarge: size is checked before anything is decoded or verified."""
    data = corrupt_signature(alice_codec.seal(to_bob(payload="x" * 5000), NOW))
    small = make_codec(bob, limits=Limits(max_message_bytes=4096))

    with pytest.raises(TooLarge):
        small.open(data, NOW)


def test_truncated_message_reports_decode_before_the_certificate(
    alice_codec: Codec, bob_codec: Codec
) -> None:
    """Given a truncated message, When bob opens it, Expect DecodeError before any
    certificate is looked at."""
    with pytest.raises(DecodeError):
        bob_codec.open(alice_codec.seal(to_bob(), NOW)[:-3], NOW)


def test_unknown_version_and_bad_signature_reports_version(
    alice: Identity, bob_codec: Codec
) -> None:
    """Given protocol_version '2.0' and a bad signature, When bob opens it, Expect VersionError."""
    data = corrupt_signature(forge(alice, to_bob(), NOW, protocol_version="2.0"))

    with pytest.raises(VersionError):
        bob_codec.open(data, NOW)


def test_expired_certificate_and_bad_signature_reports_the_certificate(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob: Identity, bob_codec: Codec
) -> None:
    """Given an expired certificate and a bad signature, When bob opens it,
    Expect CertificateExpired, not SignatureError."""
    old = make_identity("old", issued_at=NOW - 10_000, ttl=60)
    data = corrupt_signature(make_codec(old, knows=[bob]).seal(to_bob(), NOW))

    with pytest.raises(CertificateExpired):
        bob_codec.open(data, NOW)


def test_unknown_sender_and_bad_signature_reports_unknown_sender(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob_codec: Codec
) -> None:
    """Given a foreign certificate and a bad signature, When bob opens it,
    Expect UnknownSender."""
    rogue = Authority.generate()
    codec = make_codec(make_identity("stranger", by=rogue), trust_authority=rogue)
    data = corrupt_signature(codec.seal(to_bob(), NOW, encrypt=False))

    with pytest.raises(UnknownSender):
        bob_codec.open(data, NOW)


def test_bad_signature_and_stale_and_forbidden_reports_signature(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob: Identity, bob_codec: Codec
) -> None:
    """Given a worker's task.assign from an hour ago with a bad signature, When bob opens it,
    Expect SignatureError: no later check runs on unauthenticated data."""
    worker = make_codec(make_identity("w"), knows=[bob])
    data = corrupt_signature(worker.seal(to_bob("task.assign"), NOW - 3600))

    with pytest.raises(SignatureError):
        bob_codec.open(data, NOW)


def test_stale_replay_reports_the_timestamp(alice_codec: Codec, bob_codec: Codec) -> None:
    """Given bob accepted a message, When the same bytes come back after the window,
    Expect StaleMessage rather than Replay."""
    data = alice_codec.seal(to_bob(), NOW)
    bob_codec.open(data, NOW)

    with pytest.raises(StaleMessage):
        bob_codec.open(data, NOW + 400)


def test_replayed_forbidden_message_reports_replay(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob: Identity, bob_codec: Codec
) -> None:
    """Given a worker's task.assign bob already refused, When the same bytes arrive again,
    Expect Replay: the replay cache is consulted before the role table."""
    worker = make_codec(make_identity("w"), knows=[bob])
    data = worker.seal(to_bob("task.assign"), NOW)
    with pytest.raises(NotAllowed):
        bob_codec.open(data, NOW)

    with pytest.raises(Replay):
        bob_codec.open(data, NOW)


def test_wrong_receiver_and_bad_ciphertext_reports_wrong_receiver(
    alice: Identity, bob_codec: Codec
) -> None:
    """Given a message for carol whose ciphertext is garbage, When bob opens it,
    Expect NotAllowed: nothing is decrypted for someone else."""
    env = Envelope("chat", None, "carol")
    data = forge(alice, env, NOW, encryption="box", ciphertext=os.urandom(64))

    with pytest.raises(NotAllowed):
        bob_codec.open(data, NOW)


def test_refused_message_does_not_teach_its_certificate(
    make_identity: IdentityFactory, make_codec: CodecFactory, bob: Identity, bob_codec: Codec
) -> None:
    """Given a worker's forbidden task.assign, When bob refuses it, Expect bob not to have
    learned the worker as a peer; an accepted message teaches it."""
    worker_id = make_identity("w")
    worker = make_codec(worker_id, knows=[bob])
    with pytest.raises(NotAllowed):
        bob_codec.open(worker.seal(to_bob("task.assign"), NOW), NOW)
    assert bob_codec.trust.peer("w") is None

    bob_codec.open(worker.seal(to_bob("chat"), NOW), NOW)
    assert bob_codec.trust.peer("w") == worker_id.certificate
