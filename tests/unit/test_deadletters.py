"""Specification of dead letters as an operator sees them (protocol/deadletters)."""

from __future__ import annotations

import datetime as dt

from robeing.protocol.codec import Codec
from robeing.protocol.deadletters import Headers, describe, letter_id, replay_problem
from robeing.protocol.envelope import Envelope, pack
from robeing.protocol.evidence import ed25519_signer
from robeing.protocol.identity import Authority, Identity, TrustStore
from robeing.protocol.rejections import RejectionReport, stored_copy
from robeing.protocol.replay import ReplayWindow

NOW = 1_800_000_000.0
NAMES = Headers("tasks", "reason", "detail", "queue", "size", "report", "at")
AUTHORITY = Authority.generate()
ALICE = Identity.create(AUTHORITY, "alice", "client", NOW - 3600)
WORKER = Identity.create(AUTHORITY, "w1", "worker", NOW - 3600)
TRUST = TrustStore(AUTHORITY.verify_key)
WINDOW = ReplayWindow(300.0, 30.0)


def sealed(at: float = NOW - 10, message_type: str = "note") -> bytes:
    env = Envelope(message_type, {"n": 1}, receiver="*")
    return Codec(ALICE, TRUST).seal(env, at)


def headers(body: bytes, reason: str = "no_handler", **more: object) -> dict[str, object]:
    report = RejectionReport.of(
        "w1", "robeing.agent.w1", body, stored_copy(body), reason, "alice", NOW
    ).sign(ed25519_signer(WORKER.signing_key))
    return {"reason": reason, "queue": "robeing.agent.w1", "report": report, "at": NOW, **more}


def check(signer: str, data: bytes, signature: bytes) -> bool:
    cert = {"w1": WORKER, "alice": ALICE}[signer].certificate
    try:
        TRUST.verify(cert, data, signature)
    except Exception:
        return False
    return True


def test_a_letter_says_what_its_envelope_and_headers_claim_and_who_verifiably_refused_it() -> None:
    """Given a refused envelope with a signed report, Expect its type, sender, source and time
    read, the reporter named only because the report verifies, and an id that is stable."""
    body = sealed()
    letter = describe(body, headers(body), NAMES, check)
    assert (letter.type, letter.sender, letter.reason) == ("note", "alice", "no_handler")
    assert letter.source == "robeing.agent.w1" and letter.at == NOW and letter.reporter == "w1"
    assert (
        letter.id
        == letter_id(body, "robeing.agent.w1", NOW)
        == describe(body, headers(body), NAMES).id
    )
    forged = headers(body, report=headers(b"other bytes")["report"])
    assert describe(body, forged, NAMES, check).reporter is None  # about other bytes


def test_copies_of_one_broadcast_refused_by_two_agents_have_two_ids() -> None:
    body = sealed()
    first = describe(body, headers(body), NAMES)
    second = describe(body, {**headers(body), "queue": "robeing.broadcast.w2"}, NAMES)
    assert first.id != second.id


def test_the_brokers_own_dead_letters_read_their_x_death() -> None:
    """Given a letter the broker dead-lettered itself (a poison submission), Expect its reason,
    queue and time from x-death."""
    when = dt.datetime.fromtimestamp(NOW, tz=dt.UTC)
    death = {"reason": "delivery_limit", "queue": "tasks", "time": when}
    letter = describe(sealed(), {"x-death": [death]}, NAMES)
    assert (letter.reason, letter.source, letter.at) == ("delivery_limit", "tasks", NOW)


def test_a_replay_is_refused_when_the_receiver_would_refuse_it_again_whatever_is_fixed() -> None:
    """Expect a fresh, authentic letter replayable; a truncated one, garbage, a forged
    signature, one older than the receivers' window and a task out of attempts refused, each
    saying why."""
    body = sealed()
    ok = describe(body, headers(body), NAMES)
    assert replay_problem(ok, body, TRUST, WINDOW, NOW) is None
    truncated = describe(body[:100], headers(body[:100], size=len(body)), NAMES)
    assert "stored truncated (100 of" in (replay_problem(truncated, body, TRUST, WINDOW, NOW) or "")
    garbage = b"\x00" * 80
    why = replay_problem(describe(garbage, {}, NAMES), garbage, TRUST, WINDOW, NOW) or ""
    assert why.startswith("receivers would refuse it again (decode)")
    forged = body[:10] + bytes([body[10] ^ 1]) + body[11:]
    why = replay_problem(describe(forged, {}, NAMES), forged, TRUST, WINDOW, NOW) or ""
    assert "(signature)" in why
    old = sealed(at=NOW - 600)
    why = replay_problem(describe(old, {}, NAMES), old, TRUST, WINDOW, NOW) or ""
    assert "(timestamp)" in why and "600" in why
    task = pack({"task_id": "t1", "type": "sort", "payload": [1], "attempts": 3})
    letter = describe(task, {"queue": "tasks", "reason": "max_attempts"}, NAMES)
    assert letter.task == {"task_id": "t1", "type": "sort", "attempts": 3}
    assert "submit it again" in (replay_problem(letter, task, TRUST, WINDOW, NOW) or "")
