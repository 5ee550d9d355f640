"""Specification of what coordinators store on the broker (``protocol/records.py``)."""

from __future__ import annotations

import pytest

from robeing.protocol.codec import Codec
from robeing.protocol.envelope import Envelope, pack
from robeing.protocol.errors import NotAllowed, ProtocolError, SignatureError
from robeing.protocol.identity import Authority, Identity, TrustStore
from robeing.protocol.records import (
    COORDINATORS,
    RECORD_TYPE,
    GroupKeys,
    open_for_group,
    open_for_submitter,
    seal_entries,
)

NOW = 1_000.0
AUTHORITY = Authority.generate()
GROUP = Identity.create(AUTHORITY, COORDINATORS, "coordinator", NOW)
KEYS = GroupKeys.of(GROUP)
ALICE = Identity.create(AUTHORITY, "alice", "client", NOW)
BOB = Identity.create(AUTHORITY, "bob", "client", NOW)
COORD = Identity.create(AUTHORITY, "coordinator-1", "coordinator", NOW)
WORKER = Identity.create(AUTHORITY, "worker-1", "worker", NOW)


def codec(identity: Identity, group: Identity | None = None) -> Codec:
    trust = TrustStore(AUTHORITY.verify_key)
    for known in (GROUP, ALICE, BOB, COORD, WORKER):
        trust.learn(known.certificate)
    return Codec(identity, trust, group=group)


def entries() -> list[dict]:
    finals = {"alice": [{"task_id": "a1"}], "bob": [{"task_id": "b1"}, {"task_id": "b2"}]}
    keys = {"alice": ALICE.certificate.verify_key, "bob": BOB.certificate.verify_key}
    return seal_entries(finals, keys, KEYS)


def test_each_submitter_reads_its_own_finals_and_the_coordinators_read_all() -> None:
    """Given a record with alice's and bob's finals, Expect alice to read hers only, bob his
    only, the coordinators (group keys) all of them - and nothing in clear in the entries."""
    sealed = entries()
    group_vk = GROUP.certificate.verify_key
    assert open_for_submitter(sealed, "alice", ALICE.box_key, group_vk) == [{"task_id": "a1"}]
    assert [f["task_id"] for f in open_for_submitter(sealed, "bob", BOB.box_key, group_vk)] == [
        "b1",
        "b2",
    ]
    assert sorted(f["task_id"] for f in open_for_group(sealed, KEYS)) == ["a1", "b1", "b2"]
    assert b"task_id" not in pack(sealed)  # the finals travel encrypted


def test_a_reader_gets_nothing_from_an_entry_not_for_it_or_altered() -> None:
    """Given bob claiming alice's entry as his, or a flipped byte, Expect nothing out."""
    sealed = entries()
    group_vk = GROUP.certificate.verify_key
    stolen = [dict(sealed[0], s="bob")]
    assert open_for_submitter(stolen, "bob", BOB.box_key, group_vk) == []
    altered = [dict(e, d=e["d"][:-1] + bytes([e["d"][-1] ^ 1])) for e in sealed]
    assert open_for_group(altered, KEYS) == []
    assert open_for_submitter(altered, "alice", ALICE.box_key, group_vk) == []


def test_a_submission_to_the_coordinators_opens_only_where_the_group_key_is() -> None:
    """Given alice's submission sealed to the coordinators' group, Expect a coordinator
    holding the group key to read it and an agent without it to refuse it (not for it)."""
    body = codec(ALICE).seal(Envelope("task.submit", {"x": 1}, receiver=COORDINATORS), NOW)
    assert b'"x"' not in body
    opened = codec(COORD, group=GROUP).open(body, NOW)
    assert opened.envelope.payload == {"x": 1}
    with pytest.raises(NotAllowed):
        codec(WORKER).open(body, NOW)


def test_a_stored_record_is_authentic_only_when_a_coordinator_signed_it() -> None:
    """Given records read back long after they were written, Expect a coordinator's signed
    record accepted (no time window), a worker's refused by role, a tampered one refused."""
    record = Envelope(RECORD_TYPE, entries())
    body = codec(COORD).seal(record, NOW, encrypt=False)
    later = NOW + 30 * 86400
    assert codec(ALICE).open_stored(body, later).envelope.type == RECORD_TYPE
    forged = codec(WORKER).seal(record, NOW, encrypt=False)
    with pytest.raises(NotAllowed):
        codec(ALICE).open_stored(forged, later)
    tampered = body[:-5] + bytes([body[-5] ^ 1]) + body[-4:]
    with pytest.raises(ProtocolError) as exc:
        codec(ALICE).open_stored(tampered, later)
    assert isinstance(exc.value, SignatureError) or exc.value.reason in ("decode", "signature")
