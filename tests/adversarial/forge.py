"""Bytes the attacker crafts with robeing's protocol classes (no client, no runtime).

Envelopes that *claim* a victim as their sender without its key, envelopes
signed with a bad field, and rejection reports — what an attacker can build
from public material (certificates travel in every envelope) and, where a
test says so, from the keys of the one agent it compromised.
"""

from __future__ import annotations

import time

import nacl.signing

from robeing.protocol.envelope import ENC_NONE, Envelope, body_fields, pack
from robeing.protocol.evidence import ed25519_signer
from robeing.protocol.identity import Authority, Certificate, Identity
from robeing.protocol.rejections import RejectionReport


def _wire(fields: dict, key: nacl.signing.SigningKey) -> bytes:
    body = pack(fields)
    return key.sign(body).signature + body


def _fields(sender: str, cert: Certificate, receiver: str, msg_type: str, payload: object) -> dict:
    fields = body_fields(
        Envelope(msg_type, None, receiver=receiver), ENC_NONE, cert.raw, cert.key_id
    )
    fields.update(sender=sender, timestamp=time.time(), payload=payload)
    return fields


def claiming(victim: Certificate, receiver: str, msg_type: str = "note") -> bytes:
    """An envelope with the victim's id and certificate, signed by some other key."""
    fields = _fields(victim.agent_id, victim, receiver, msg_type, "from the victim, honest")
    return _wire(fields, nacl.signing.SigningKey.generate())


def borrowed(own: Identity, victim: str, receiver: str, msg_type: str = "note") -> bytes:
    """An envelope signed with the attacker's own key and certificate, claiming ``victim``."""
    return _wire(_fields(victim, own.certificate, receiver, msg_type, None), own.signing_key)


def with_timestamp(own: Identity, receiver: str, timestamp: float) -> bytes:
    """A correctly signed envelope of ``own`` whose timestamp is ``timestamp``."""
    fields = _fields(own.agent_id, own.certificate, receiver, "note", None)
    fields["timestamp"] = timestamp
    return _wire(fields, own.signing_key)


def report(signer: Identity, queue: str, body: bytes, reason: str, blamed: str | None) -> bytes:
    """A rejection report over ``body`` signed by ``signer``, blaming ``blamed``.

    ``RejectionReport.of`` drops the blame for reasons decided before the
    signature check; the attacker is free to choose an attributable one.
    """
    rep = RejectionReport.of(signer.agent_id, queue, body, body, reason, blamed, time.time())
    return rep.sign(ed25519_signer(signer.signing_key))


def stranger(agent_id: str, role: str = "worker") -> Identity:
    """An identity certified by an authority nobody trusts."""
    return Identity.create(Authority.generate(), agent_id, role, time.time())
