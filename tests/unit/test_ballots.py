"""Specification of votes and announced outcomes on the wire (``protocol/ballots.py``)."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_values import JUNK

from robeing.protocol.ballots import AnnouncedOutcome, vote_from_data, vote_to_data
from robeing.protocol.errors import DecodeError
from robeing.protocol.evidence import ed25519_check, ed25519_signer
from robeing.protocol.voting import Choice, Proposal, Tally, ed25519_verifier, sign_vote

APPROVE, REJECT, ABSTAIN = Choice.APPROVE, Choice.REJECT, Choice.ABSTAIN
VOTER_NAMES = [f"a{i}" for i in range(10)]
KEYS = {name: nacl.signing.SigningKey(bytes([i + 1]) * 32) for i, name in enumerate(VOTER_NAMES)}
PUBLIC = {name: bytes(key.verify_key) for name, key in KEYS.items()}
SIGNED = {
    (name, c): sign_vote("p1", name, c, ed25519_signer(KEYS[name]))
    for name in VOTER_NAMES
    for c in Choice
}
VERIFY = ed25519_verifier(PUBLIC)
OUTSIDER = nacl.signing.SigningKey(bytes([99]) * 32)

CHECK = ed25519_check(PUBLIC)


def announced(choices: list[Choice]) -> AnnouncedOutcome:
    """The outcome a0 announces after the first len(choices) voters voted so."""
    names = VOTER_NAMES[: len(choices)]
    proposal = Proposal("p1", "a0", frozenset(names), 10.0, None)
    tally = Tally(proposal, VERIFY)
    for name, choice in zip(names, choices, strict=True):
        tally.add(SIGNED[(name, choice)], 1.0)
    return AnnouncedOutcome.of(proposal, tally.close(10.0))


def over_the_wire(data: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False)


def test_a_vote_round_trips_through_its_wire_form() -> None:
    vote = SIGNED[("a1", REJECT)]
    assert vote_from_data(over_the_wire(vote_to_data(vote))) == vote


@pytest.mark.parametrize(
    "change",
    [
        {"choice": "maybe"},
        {"choice": True},
        {"voter": 7},
        {"proposal_id": None},
        {"signature": "not bytes"},
    ],
)
def test_a_malformed_vote_is_a_decode_error(change: dict[str, Any]) -> None:
    """Given a vote's wire form with an unknown choice or a missing or mistyped
    field, Expect DecodeError (not a vote built from coerced values)."""
    with pytest.raises(DecodeError):
        vote_from_data({**vote_to_data(SIGNED[("a1", APPROVE)]), **change})
    with pytest.raises(DecodeError):
        vote_from_data([vote_to_data(SIGNED[("a1", APPROVE)])])


def test_an_announced_outcome_round_trips_and_verifies() -> None:
    """Given the outcome a proposer announces, When a receiver decodes its wire
    form, Expect the same outcome, verified."""
    outcome = announced([APPROVE, APPROVE, APPROVE, REJECT])

    back = AnnouncedOutcome.from_data(over_the_wire(outcome.to_data()), "a0", CHECK)

    assert back == outcome
    assert back.verified and back.approved and back.required == 3


def _forge(data: dict[str, Any], how: str) -> None:
    votes = data["votes"]
    if how == "flip approved":
        data["approved"] = not data["approved"]
    elif how == "inflate the rate":
        data["approval_rate"] = [1, 1]
    elif how == "zero a signature":
        votes[0][2] = bytes(64)
    elif how == "change a vote's choice":
        votes[-1][1] = "approve"
    elif how == "repeat a vote":
        votes.append(list(votes[0]))
    elif how == "add an outsider's vote":
        outsider = sign_vote("p1", "outsider", APPROVE, ed25519_signer(OUTSIDER))
        votes.append(["outsider", "approve", outsider.signature])
    elif how == "no participants":
        data["participants"] = []
    elif how == "another proposal id":
        data["id"] = "p2"


@pytest.mark.parametrize(
    "how",
    [
        "flip approved",
        "inflate the rate",
        "zero a signature",
        "change a vote's choice",
        "repeat a vote",
        "add an outsider's vote",
        "no participants",
        "another proposal id",
    ],
)
def test_a_forged_outcome_comes_back_unverified(how: str) -> None:
    """Given an announced outcome altered after its votes were signed, When
    decoded, Expect it recorded as not verified (no exception)."""
    data = over_the_wire(announced([APPROVE, APPROVE, REJECT, REJECT]).to_data())
    _forge(data, how)

    assert not AnnouncedOutcome.from_data(data, "a0", CHECK).verified


@pytest.mark.parametrize(
    "change",
    [
        {"threshold": [2, 0]},
        {"threshold": "2/3"},
        {"approval_rate": [-1, 2]},
        {"votes": [["a0", "approve"]]},
        {"votes": [["a0", "maybe", b""]]},
        {"refusals": {"late": -1}},
        {"refusals": {"late": "1"}},
        {"participants": ["a0", 1]},
        {"approved": "yes"},
        {"id": None},
    ],
)
def test_a_malformed_outcome_is_a_decode_error(change: dict[str, Any]) -> None:
    data = {**announced([APPROVE, APPROVE, APPROVE]).to_data(), **change}
    with pytest.raises(DecodeError):
        AnnouncedOutcome.from_data(data, "a0", CHECK)


OUTCOME_KEYS = st.sampled_from(
    ["id", "participants", "threshold", "approved", "approval_rate", "reason", "votes",
     "refusals", "proposal_id", "voter", "choice", "signature"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(JUNK, st.dictionaries(OUTCOME_KEYS, JUNK, max_size=12)))
def test_junk_vote_or_outcome_raises_only_decode_error(data: Any) -> None:
    """Given any decoded msgpack, including maps with the right keys and wrong
    values, Expect a vote/outcome or DecodeError, never another exception."""
    for decode in (vote_from_data, lambda d: AnnouncedOutcome.from_data(d, "a0", CHECK)):
        with contextlib.suppress(DecodeError):
            decode(data)
