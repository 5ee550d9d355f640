"""Attack 6: turning the guardian against an honest agent.

The guardian alerts on a sender with 20 verified refusals within 60 s. The
attacker may publish to ``robeing.dead`` in both setups (every agent
dead-letters there) and to any agent's inbox through ``robeing.direct``, so
the broker stops none of this: the guardian's checks must. A dead letter
counts only with a report that verifies against its reporter's certificate
and matches the stored bytes, and a report blames a sender only when the
sender's signature had verified.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from robeing.agents import Client
from robeing.broker import topology as topo
from robeing.protocol.identity import Certificate

from . import forge
from .attacker import Attacker, envelope_fields
from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]

OVER_THRESHOLD = 25  # the guardian alerts at 20 refusals of one sender within 60 s


def _victim(fleet: Fleet) -> Certificate:
    raw = fleet.keys.peer_certificate(fleet.ids["w2"])
    assert raw is not None
    return Certificate.parse(raw, fleet.keys.authority_verify_key())


async def _report(alice: Client, fleet: Fleet) -> dict[str, Any]:
    return await alice.request(fleet.ids["guardian"], "guardian.report", timeout=10)


async def _until(alice: Client, fleet: Fleet, done: Any, timeout: float = 15) -> dict[str, Any]:
    """The guardian's report once ``done(report)`` holds (or the last one)."""
    deadline = time.monotonic() + timeout
    while True:
        report = await _report(alice, fleet)
        if done(report) or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.3)


def _alerts_about(broadcasts: list, victim: str) -> list[dict[str, Any]]:
    out = []
    for msg in broadcasts:
        fields = envelope_fields(msg.body) or {}
        payload = fields.get("payload")
        if fields.get("type") == "guardian.alert" and isinstance(payload, dict):
            if payload.get("sender") == victim:
                out.append(payload)
    return out


async def test_fake_dead_letters_blame_nobody(fleet: Fleet, finding) -> None:
    """Given an honest worker w2 and an attacker with a worker's login or guest,
    When it publishes 3 x 25 dead letters to robeing.dead claiming w2 refused for
    'not_allowed' — without a report, with garbage as the report, and with a report that
    blames w2 signed by an identity of an authority nobody trusts —,
    Expect the broker to let it through in both setups, and the guardian to count all 75
    as unverified, name w2 nowhere in top_senders and broadcast no alert against it."""
    victim, w1_inbox = _victim(fleet), topo.agent_queue(fleet.ids["w1"])
    outsider = forge.stranger(fleet.ids["w1"])
    async with fleet.client("alice") as alice, fleet.tap(topo.BROADCAST_EXCHANGE) as broadcasts:
        before = await _report(alice, fleet)
        outcomes = []
        async with Attacker(fleet.login("mallory")) as mallory:
            for i in range(3 * OVER_THRESHOLD):
                body = forge.claiming(victim, fleet.ids["w1"])
                headers: dict[str, Any] = {
                    topo.REASON_HEADER: "not_allowed",
                    topo.DETAIL_HEADER: f"{victim.agent_id} may not send note",
                    topo.SOURCE_HEADER: w1_inbox,
                }
                kind = i % 3
                if kind == 1:
                    headers[topo.REPORT_HEADER] = bytearray(b"\x92\xc4\x05trust\xc4\x02me")
                elif kind == 2:
                    report = forge.report(outsider, w1_inbox, body, "not_allowed", victim.agent_id)
                    headers[topo.REPORT_HEADER] = bytearray(report)
                outcomes.append(await mallory.publish(topo.DEAD_EXCHANGE, w1_inbox, body, headers))
        goal = before["unverified"] + 3 * OVER_THRESHOLD
        after = await _until(alice, fleet, lambda r: r["unverified"] >= goal)
        await asyncio.sleep(1.0)  # an alert would be broadcast at once
    alerts = _alerts_about(broadcasts, victim.agent_id)

    grown = after["unverified"] - before["unverified"]
    finding(
        "6 fake dead letters",
        "guardian (report must verify)",
        f"{sum(o.allowed for o in outcomes)}/75 published; guardian: unverified +{grown}, "
        f"top_senders {after['top_senders']}, {len(alerts)} alert(s) against the victim",
    )
    assert all(o.allowed for o in outcomes)
    assert grown >= 3 * OVER_THRESHOLD, (before, after)
    assert victim.agent_id not in after["top_senders"]
    assert alerts == []


async def test_forged_envelopes_claiming_an_honest_sender_blame_nobody(
    fleet: Fleet, finding
) -> None:
    """Given an honest worker w2 and an attacker with a worker's login (and the keys of
    that compromised worker, mallory) or guest,
    When it sends w1 and the coordinator 2 x 15 envelopes claiming to come from w2 — with
    w2's certificate and a bad signature, and with mallory's own certificate —,
    Expect each refused by its receiver before the signature is trusted ('signature',
    'unknown_sender'), dead-lettered with a verified report that blames nobody, and the
    guardian to name w2 nowhere and broadcast no alert against it."""
    victim = _victim(fleet)
    own = fleet.keys.load_identity(fleet.ids["mallory"], "worker")
    receivers = [fleet.ids["w1"], fleet.ids["coordinator"]]
    async with fleet.client("alice") as alice, fleet.tap(topo.BROADCAST_EXCHANGE) as broadcasts:
        before = await _report(alice, fleet)
        async with Attacker(fleet.login("mallory")) as mallory:
            for i in range(30):
                to = receivers[i % 2]
                body = (
                    forge.claiming(victim, to)
                    if i < 15
                    else forge.borrowed(own, victim.agent_id, to)
                )
                await mallory.publish(topo.DIRECT_EXCHANGE, to, body)

        def counted(r: dict[str, Any]) -> int:
            return r["by_reason"].get("signature", 0) + r["by_reason"].get("unknown_sender", 0)

        after = await _until(alice, fleet, lambda r: counted(r) >= counted(before) + 30)
        await asyncio.sleep(1.0)
    alerts = _alerts_about(broadcasts, victim.agent_id)

    refused = counted(after) - counted(before)
    finding(
        "6 forged envelopes to honest agents",
        "receivers (signature, certificate) + guardian (blames nobody)",
        f"guardian: {refused} verified refusals (signature/unknown_sender), top_senders "
        f"{after['top_senders']}, {len(alerts)} alert(s) against the victim",
    )
    assert refused >= 30, (before, after)
    assert victim.agent_id not in after["top_senders"]
    assert alerts == []


async def test_a_compromised_agent_cannot_sign_blame_onto_an_honest_one(
    fleet: Fleet, finding
) -> None:
    """Given an honest worker w2, and an attacker holding the keys of the worker it
    compromised (mallory, a certified identity) besides its login,
    When it publishes 25 dead letters of bodies that claim w2 but carry no signature of
    w2's, each with a report signed by mallory that blames w2 for 'not_allowed',
    Expect the guardian not to alert against w2 on mallory's word alone: the bodies it
    holds do not verify as w2's, so nothing proves w2 sent them."""
    victim = _victim(fleet)
    own = fleet.keys.load_identity(fleet.ids["mallory"], "worker")
    queue = topo.agent_queue(own.agent_id)
    async with fleet.client("alice") as alice, fleet.tap(topo.BROADCAST_EXCHANGE) as broadcasts:
        before = await _report(alice, fleet)
        async with Attacker(fleet.login("mallory")) as mallory:
            for _ in range(OVER_THRESHOLD):
                body = forge.claiming(victim, own.agent_id)
                headers = {
                    topo.REASON_HEADER: "not_allowed",
                    topo.SOURCE_HEADER: queue,
                    topo.REPORT_HEADER: bytearray(
                        forge.report(own, queue, body, "not_allowed", victim.agent_id)
                    ),
                }
                await mallory.publish(topo.DEAD_EXCHANGE, queue, body, headers)
        goal = before["dead_letters"] + before["unverified"] + OVER_THRESHOLD
        after = await _until(alice, fleet, lambda r: r["dead_letters"] + r["unverified"] >= goal)
        await asyncio.sleep(1.0)
    alerts = _alerts_about(broadcasts, victim.agent_id)

    blamed = after["top_senders"].get(victim.agent_id, 0)
    finding(
        "6 compromised reporter",
        "nobody" if alerts else "guardian",
        f"guardian counted {blamed} refusals against the victim, "
        f"{len(alerts)} alert(s) against it (reporters {[a.get('reporters') for a in alerts]})",
    )
    assert alerts == [], f"the guardian alerted against {victim.agent_id}: {alerts}"
