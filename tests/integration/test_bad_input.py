"""Bad input published straight into an agent's queue with a raw AMQP client.

Expect, for each kind: rejected without requeue into the dead-letter queue
with a reason header, counted in the agent's heartbeat, and the agent still
serving valid traffic.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aio_pika
import msgpack
import pytest

from robeing.agents import Client, Settings
from robeing.agents.keystore import Keystore
from robeing.broker import topology as topo
from robeing.protocol.codec import Codec
from robeing.protocol.envelope import Envelope, body_fields, pack
from robeing.protocol.identity import Authority, Identity, TrustStore

pytestmark = pytest.mark.broker

TARGET = "w-target"


def _codec_for(identity: Identity, authority_vk) -> Codec:
    trust = TrustStore(authority_vk)
    return Codec(identity, trust)


def _plain(codec: Codec, msg_type: str, payload: object, now: float) -> bytes:
    return codec.seal(Envelope(msg_type, payload, receiver=TARGET), now, encrypt=False)


def craft_bad_messages(keys_dir: Path) -> dict[str, list[bytes]]:
    """Reason code → wire messages that must be rejected with it."""
    store = Keystore(keys_dir)
    authority = store.authority()
    now = time.time()
    good = store.issue("bad-input-client", "client")
    codec = _codec_for(good, authority.verify_key)

    stranger_auth = Authority.generate()
    stranger = Identity.create(stranger_auth, "stranger", "worker", now)
    expired = Identity.create(authority, "old-timer", "worker", now - 10_000, ttl=60)
    worker = store.issue("rogue-worker", "worker")

    valid = _plain(codec, "ping", {"x": 1}, now)
    bad_sig = bytearray(_plain(codec, "ping", {"x": 2}, now))
    bad_sig[-1] ^= 0x01  # the payload value 2 becomes 3: valid msgpack, wrong signature

    fields = body_fields(
        Envelope("ping", None, receiver=TARGET, sender=good.agent_id),
        "none",
        good.certificate.raw,
        good.certificate.key_id,
    )
    fields.update(protocol_version="2.0", timestamp=now, payload=None)
    body = pack(fields)
    future_version = good.signing_key.sign(body).signature + body

    return {
        "decode": [
            os.urandom(200),
            b"\x00" * 64 + b"\xde\xad\xbe\xef",
            valid[:-10],  # truncated msgpack
            b"short",
        ],
        "too_large": [b"\x00" * 64 + msgpack.packb(b"x" * (1 << 20 | 1))],
        "version": [future_version],
        "unknown_sender": [
            _codec_for(stranger, stranger_auth.verify_key).seal(
                Envelope("ping", None, receiver=TARGET), now, encrypt=False
            )
        ],
        "certificate_expired": [
            _codec_for(expired, authority.verify_key).seal(
                Envelope("ping", None, receiver=TARGET), now, encrypt=False
            )
        ],
        "signature": [bytes(bad_sig)],
        "replay": [valid, valid],  # the first is accepted, the second refused
        "not_allowed": [
            _codec_for(worker, authority.verify_key).seal(
                Envelope("task.assign", {"task": 1}, receiver=TARGET), now, encrypt=False
            )
        ],
        "timestamp": [_plain(codec, "ping", None, now - 3600)],
    }


async def test_bad_input_is_dead_lettered_with_reasons_and_the_agent_keeps_serving(
    spawn, amqp_url: str, keys_dir: Path, watcher
) -> None:
    await spawn("worker", TARGET)
    batches = craft_bad_messages(keys_dir)
    expected = {reason: len(msgs) for reason, msgs in batches.items()}
    expected["replay"] = 1

    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        dlq = await ch.declare_queue(topo.DEAD_LETTER_QUEUE, durable=True, passive=True)
        await dlq.purge()
        for msgs in batches.values():
            for body in msgs:
                await ch.default_exchange.publish(
                    aio_pika.Message(body), routing_key=topo.agent_queue(TARGET)
                )

        # Given garbage, when it is all processed, expect each reason in the DLQ.
        reasons: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while sum(reasons.values()) < sum(expected.values()) and time.monotonic() < deadline:
            msg = await dlq.get(no_ack=False, fail=False)
            if msg is None:
                await asyncio.sleep(0.1)
                continue
            reason = msg.headers[topo.REASON_HEADER]
            assert msg.headers[topo.SOURCE_HEADER] == topo.agent_queue(TARGET)
            assert msg.headers[topo.DETAIL_HEADER]
            reasons[str(reason)] = reasons.get(str(reason), 0) + 1
            await msg.ack()
        assert reasons == expected

    # Expect the counts in the agent's heartbeats.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rejected = watcher.latest[TARGET].stats.get("rejected", {})
        if rejected == expected:
            break
        await asyncio.sleep(0.2)
    assert rejected == expected

    # Expect the agent to keep serving valid traffic.
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as client:
        opened = await client.send(TARGET, "ping", None, requires_ack=True, timeout=10)
        assert opened is not None and opened.envelope.sender == TARGET


async def test_revoked_agent_is_refused_after_the_crl_broadcast(
    spawn, amqp_url: str, keys_dir: Path
) -> None:
    """Given a live agent, when the authority revokes a client and broadcasts the
    new revocation list, expect that client's messages to be refused."""
    await spawn("worker", "w-crl")
    store = Keystore(keys_dir)
    settings = Settings(
        role="client", agent_id="soon-revoked", amqp_url=amqp_url, keys_dir=keys_dir
    )
    async with Client(settings) as client:
        assert await client.send("w-crl", "ping", None, requires_ack=True, timeout=10)
        crl = store.revoke("soon-revoked")
        async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as admin:
            await admin.broadcast("crl.update", crl.raw, priority=9)
        await asyncio.sleep(0.5)
        with pytest.raises(Exception) as info:
            await client.send("w-crl", "ping", None, requires_ack=True, timeout=1.5)
        assert "no answer" in str(info.value) or "revoked" in str(info.value)
