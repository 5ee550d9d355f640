"""Specification of the threshold vote tally and of equivocation evidence."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import ConfigError, DecodeError
from robeing.protocol.evidence import (
    Equivocation,
    EvidenceLog,
    SignedStatement,
    decode_statement,
    ed25519_check,
    ed25519_signer,
    encode_statement,
)
from robeing.protocol.voting import (
    VOTE_DOMAIN,
    Choice,
    DecisionReason,
    Proposal,
    Refusal,
    Tally,
    Vote,
    ed25519_verifier,
    required_approvals,
    sign_vote,
    vote_signing_bytes,
)

APPROVE, REJECT, ABSTAIN = Choice.APPROVE, Choice.REJECT, Choice.ABSTAIN


class Voters:
    """Ed25519 keys for a set of agents, and a tally factory over them."""

    def __init__(self, names: list[str]) -> None:
        self.keys = {
            name: nacl.signing.SigningKey(bytes([i + 1]) * 32) for i, name in enumerate(names)
        }
        self.public = {name: bytes(key.verify_key) for name, key in self.keys.items()}
        self.verify = ed25519_verifier(self.public)

    def vote(self, voter: str, choice: Choice, proposal: str = "p1") -> Vote:
        return sign_vote(proposal, voter, choice, ed25519_signer(self.keys[voter]))

    def tally(
        self, participants: list[str], threshold: Fraction = Fraction(2, 3), deadline: float = 10.0
    ) -> Tally:
        proposal = Proposal(
            "p1", participants[0], frozenset(participants), deadline, None, threshold
        )
        return Tally(proposal, self.verify)


@pytest.fixture
def make_voters() -> Callable[[int], tuple[Voters, list[str]]]:
    def make(n: int) -> tuple[Voters, list[str]]:
        names = [f"a{i}" for i in range(n)]
        return Voters([*names, "outsider"]), names

    return make


# --- the decision rule -----------------------------------------------------------


@pytest.mark.parametrize("f", range(1, 11))
def test_two_thirds_of_3f_plus_1_needs_exactly_2f_plus_1(make_voters, f: int) -> None:
    """Given n = 3f + 1 participants and the default 2/3 threshold,
    When 2f approve and the rest reject, or 2f + 1 approve,
    Expect rejection in the first case and approval in the second."""
    voters, names = make_voters(3 * f + 1)
    assert required_approvals(3 * f + 1) == 2 * f + 1

    short = voters.tally(names)
    for i, name in enumerate(names):
        short.add(voters.vote(name, APPROVE if i < 2 * f else REJECT), now=1.0)
    assert short.decision is not None and not short.decision.approved

    enough = voters.tally(names)
    for name in names[: 2 * f + 1]:
        enough.add(voters.vote(name, APPROVE), now=1.0)
    assert enough.decision is not None and enough.decision.approved
    assert enough.decision.approval_rate == Fraction(2 * f + 1, 3 * f + 1)


@given(n=st.integers(1, 60), num=st.integers(1, 20), den=st.integers(1, 20))
def test_required_approvals_is_the_smallest_count_meeting_the_rule(
    n: int, num: int, den: int
) -> None:
    """Given any participant count and threshold in (0, 1],
    Expect required_approvals to be the least a with a * den >= num * n."""
    if num > den:
        num, den = den, num
    threshold = Fraction(num, den)
    a = required_approvals(n, threshold)
    assert a * threshold.denominator >= threshold.numerator * n
    assert (a - 1) * threshold.denominator < threshold.numerator * n


def test_abstain_counts_as_not_approving(make_voters) -> None:
    """Given 3 participants, When two approve and one abstains, Expect approval
    (2/3 met); When one approves and two abstain, Expect rejection."""
    voters, names = make_voters(3)
    tally = voters.tally(names)
    tally.add(voters.vote("a0", APPROVE), 1.0)
    tally.add(voters.vote("a1", ABSTAIN), 1.0)
    assert tally.decision is None
    tally.add(voters.vote("a2", APPROVE), 1.0)
    assert tally.decision is not None and tally.decision.approved

    other = voters.tally(names)
    for name, choice in zip(names, (APPROVE, ABSTAIN, ABSTAIN), strict=True):
        other.add(voters.vote(name, choice), 1.0)
    assert other.decision is not None and not other.decision.approved


# --- early and deadline decisions --------------------------------------------------


def test_decides_early_when_threshold_is_reached_and_refuses_later_votes(make_voters) -> None:
    """Given 4 participants, When 3 approve before the deadline, Expect an
    immediate approval, and the 4th vote refused as 'decided'."""
    voters, names = make_voters(4)
    tally = voters.tally(names)
    outcomes = [tally.add(voters.vote(name, APPROVE), now=2.0) for name in names[:3]]
    assert [o.decision is None for o in outcomes] == [True, True, False]
    decision = outcomes[-1].decision
    assert decision is not None
    assert decision.approved and decision.reason is DecisionReason.THRESHOLD_REACHED
    assert decision.decided_at == 2.0
    assert [v.voter for v in decision.votes] == names[:3]

    late = tally.add(voters.vote("a3", REJECT), now=3.0)
    assert not late.accepted and late.refusal is Refusal.DECIDED
    assert late.decision is decision and tally.refusals == {Refusal.DECIDED: 1}


def test_decides_early_when_threshold_becomes_unreachable(make_voters) -> None:
    """Given 4 participants needing 3 approvals, When 2 reject, Expect an
    immediate rejection (at most 2 approvals remain possible)."""
    voters, names = make_voters(4)
    tally = voters.tally(names)
    tally.add(voters.vote("a0", REJECT), 1.0)
    assert tally.decision is None
    outcome = tally.add(voters.vote("a1", REJECT), 1.0)
    assert outcome.decision is not None and not outcome.decision.approved
    assert outcome.decision.reason is DecisionReason.THRESHOLD_UNREACHABLE


def test_undecided_tally_decides_at_the_deadline(make_voters) -> None:
    """Given 4 participants and 2 approvals, When the deadline passes, Expect
    close() to reject with rate 1/2, and close() to be idempotent."""
    voters, names = make_voters(4)
    tally = voters.tally(names, deadline=10.0)
    tally.add(voters.vote("a0", APPROVE), 1.0)
    tally.add(voters.vote("a1", APPROVE), 1.0)
    with pytest.raises(ValueError):
        tally.close(9.9)
    decision = tally.close(10.0)
    assert not decision.approved and decision.approval_rate == Fraction(1, 2)
    assert decision.reason is DecisionReason.DEADLINE
    assert tally.close(50.0) is decision


def test_a_vote_at_the_deadline_counts_and_a_later_one_is_late(make_voters) -> None:
    """Given a deadline of 10, When a vote arrives at exactly 10 it is counted;
    When one arrives at 10.5, Expect it refused as 'late' and the tally closed."""
    voters, names = make_voters(4)
    tally = voters.tally(names, deadline=10.0)
    assert tally.add(voters.vote("a0", APPROVE), now=10.0).accepted
    outcome = tally.add(voters.vote("a1", APPROVE), now=10.5)
    assert not outcome.accepted and outcome.refusal is Refusal.LATE
    assert outcome.decision is not None and outcome.decision.reason is DecisionReason.DEADLINE
    assert outcome.decision.approval_rate == Fraction(1, 4)


# --- refusals ----------------------------------------------------------------------


def test_each_kind_of_bad_vote_is_refused_and_counted_separately(make_voters) -> None:
    """Given a tally, When votes arrive from a non-participant, with a forged
    signature, for another proposal, twice from one voter, and after the deadline,
    Expect each refused under its own reason and none of them counted."""
    voters, names = make_voters(7)
    tally = voters.tally(names, deadline=10.0)
    forged = Vote("p1", "a1", APPROVE, voters.vote("a2", APPROVE).signature)
    bad = [
        (voters.vote("outsider", APPROVE), 1.0, Refusal.NOT_PARTICIPANT),
        (forged, 1.0, Refusal.BAD_SIGNATURE),
        (voters.vote("a3", APPROVE, proposal="p2"), 1.0, Refusal.WRONG_PROPOSAL),
    ]
    assert tally.add(voters.vote("a0", APPROVE), 1.0).accepted
    bad.append((voters.vote("a0", APPROVE), 2.0, Refusal.DUPLICATE))
    for vote, now, reason in bad:
        outcome = tally.add(vote, now)
        assert (outcome.accepted, outcome.refusal) == (False, reason)
    assert tally.approvals == 1
    late = tally.add(voters.vote("a4", APPROVE), 11.0)
    assert late.refusal is Refusal.LATE
    assert tally.refusals == {
        Refusal.NOT_PARTICIPANT: 1,
        Refusal.BAD_SIGNATURE: 1,
        Refusal.WRONG_PROPOSAL: 1,
        Refusal.DUPLICATE: 1,
        Refusal.LATE: 1,
    }
    assert not tally.evidence.offenders()


def test_conflicting_second_vote_yields_verifiable_evidence(make_voters) -> None:
    """Given a participant who approved, When it sends a validly signed reject,
    Expect the reject refused as 'equivocation', the first vote still counted,
    and evidence that a third party holding only public keys can verify."""
    voters, names = make_voters(4)
    tally = voters.tally(names)
    first = voters.vote("a1", APPROVE)
    tally.add(first, 1.0)
    outcome = tally.add(voters.vote("a1", REJECT), 2.0)
    assert outcome.refusal is Refusal.EQUIVOCATION
    assert tally.approvals == 1
    evidence = outcome.evidence
    assert evidence is not None
    assert (evidence.offender, evidence.slot) == ("a1", ("p1",))
    assert evidence.first == first.statement()
    third_party = ed25519_check(voters.public)
    assert evidence.verify(third_party)
    assert Equivocation.from_data(evidence.to_data()).verify(third_party)
    assert list(tally.evidence) == [evidence]
    # repeated equivocation on the same slot is recorded once
    tally.add(voters.vote("a1", ABSTAIN), 3.0)
    assert len(tally.evidence) == 1 and tally.refusals[Refusal.EQUIVOCATION] == 2


def test_evidence_does_not_verify_when_tampered_or_misattributed(make_voters) -> None:
    """Given valid vote evidence, When a signature is swapped, the offender is
    changed, or both statements are the same, Expect verification to fail."""
    voters, _ = make_voters(3)
    a = voters.vote("a0", APPROVE).statement()
    b = voters.vote("a0", REJECT).statement()
    check = ed25519_check(voters.public)
    evidence = Equivocation.from_pair(VOTE_DOMAIN, a, b)
    assert evidence.verify(check)
    swapped = SignedStatement(b.data, a.signature)
    assert not Equivocation("a0", VOTE_DOMAIN, ("p1",), a, swapped).verify(check)
    assert not Equivocation("a1", VOTE_DOMAIN, ("p1",), a, b).verify(check)
    assert not Equivocation("a0", VOTE_DOMAIN, ("p1",), a, a).verify(check)
    assert not Equivocation("a0", b"robeing.pbft.v1", ("p1",), a, b).verify(check)
    with pytest.raises(ValueError):
        Equivocation.from_pair(VOTE_DOMAIN, a, a)
    other_voter = voters.vote("a1", REJECT).statement()
    with pytest.raises(ValueError):
        Equivocation.from_pair(VOTE_DOMAIN, a, other_voter)
    with pytest.raises(DecodeError):
        Equivocation.from_data({"offender": "a0"})


def test_evidence_log_deduplicates_bounds_and_drains(make_voters) -> None:
    """Given an evidence log of capacity 2, When three different slots and one
    repeat are recorded, Expect two kept, one dropped and counted, the repeat
    ignored, and drain() to hand over and clear the records."""
    voters, _ = make_voters(3)
    log = EvidenceLog(capacity=2)

    def evidence(voter: str, proposal: str) -> Equivocation:
        a = voters.vote(voter, APPROVE, proposal).statement()
        b = voters.vote(voter, REJECT, proposal).statement()
        return Equivocation.from_pair(VOTE_DOMAIN, a, b)

    assert log.record(evidence("a0", "p1"))
    assert not log.record(evidence("a0", "p1"))
    assert log.record(evidence("a1", "p1"))
    assert not log.record(evidence("a2", "p1"))
    assert (len(log), log.dropped, log.offenders()) == (2, 1, frozenset({"a0", "a1"}))
    drained = log.drain()
    assert [e.offender for e in drained] == ["a0", "a1"] and len(log) == 0


# --- signing and configuration ------------------------------------------------------


def test_vote_signing_bytes_are_canonical_and_domain_separated() -> None:
    """Given a vote's fields, Expect the signed bytes to start with the vote
    domain, be deterministic, change with every field, and decode back."""
    data = vote_signing_bytes("p1", "a0", APPROVE)
    assert data.startswith(b"robeing.vote.v1")
    assert data == vote_signing_bytes("p1", "a0", "approve")
    assert data == VOTE_DOMAIN + msgpack.packb(["a0", ["p1"], "approve"], use_bin_type=True)
    variants = {
        vote_signing_bytes("p2", "a0", APPROVE),
        vote_signing_bytes("p1", "a1", APPROVE),
        vote_signing_bytes("p1", "a0", REJECT),
    }
    assert data not in variants and len(variants) == 3
    statement = decode_statement(data, VOTE_DOMAIN)
    assert (statement.signer, statement.slot, statement.content) == ("a0", ("p1",), "approve")
    with pytest.raises(ValueError):
        vote_signing_bytes("p1", "a0", "maybe")
    with pytest.raises(DecodeError):
        decode_statement(data, b"robeing.pbft.v1")
    with pytest.raises(DecodeError):
        decode_statement(VOTE_DOMAIN + b"\xc1", VOTE_DOMAIN)
    with pytest.raises(DecodeError):
        decode_statement(VOTE_DOMAIN + msgpack.packb(["a0", "not-a-slot", "x"]), VOTE_DOMAIN)
    assert encode_statement(VOTE_DOMAIN, "a0", ("p1",), "approve") == data


def test_ed25519_verifier_rejects_unknown_voters_and_foreign_keys(make_voters) -> None:
    """Given a verifier over known keys, Expect it to accept a voter's own
    signature and reject an unknown voter or a signature by another key."""
    voters, _ = make_voters(2)
    verify = ed25519_verifier({"a0": voters.public["a0"]})
    assert verify(voters.vote("a0", APPROVE))
    assert not verify(voters.vote("a1", APPROVE))
    impostor = Vote("p1", "a0", APPROVE, voters.vote("a1", APPROVE).signature)
    assert not verify(impostor)
    with pytest.raises(ConfigError):
        ed25519_verifier({"a0": b"short"})
    with pytest.raises(ConfigError):
        ed25519_signer(b"short")


@pytest.mark.parametrize(
    "participants, threshold",
    [
        (frozenset(), Fraction(2, 3)),
        (frozenset({"a"}), Fraction(0)),
        (frozenset({"a"}), Fraction(4, 3)),
        (frozenset({"a"}), 0.66),
        (frozenset({"a"}), True),
    ],
)
def test_invalid_proposals_are_refused(participants: frozenset[str], threshold: Any) -> None:
    """Given no participants, a threshold outside (0, 1], or an inexact float,
    Expect ConfigError when building the proposal."""
    with pytest.raises(ConfigError):
        Proposal("p", "a", participants, 1.0, None, threshold)


# --- properties --------------------------------------------------------------------

VOTER_NAMES = [f"a{i}" for i in range(10)]
VOTERS = Voters([*VOTER_NAMES, "outsider"])
SIGNED = {(name, c): VOTERS.vote(name, c) for name in VOTER_NAMES for c in Choice}

ballots = st.lists(st.sampled_from(list(Choice)), min_size=1, max_size=10)
thresholds = st.fractions(min_value=Fraction(1, 10), max_value=1).map(
    lambda x: x.limit_denominator(12)
)


@settings(max_examples=200, deadline=None)
@given(choices=ballots, threshold=thresholds, silent=st.integers(0, 3))
def test_property_decision_iff_threshold_met(
    choices: list[Choice], threshold: Fraction, silent: int
) -> None:
    """Given n participants of whom some never vote, When the others vote and
    the deadline passes, Expect approval iff approvals * den >= num * n."""
    names = VOTER_NAMES[: len(choices)]
    participants = names + [f"silent{i}" for i in range(silent)]
    tally = Tally(
        Proposal("p1", "a0", frozenset(participants), 10.0, None, threshold), VOTERS.verify
    )
    for name, choice in zip(names, choices, strict=True):
        tally.add(SIGNED[(name, choice)], 1.0)
    decision = tally.close(10.0)
    approvals = choices.count(APPROVE)
    expected = approvals * threshold.denominator >= threshold.numerator * len(participants)
    assert decision.approved is expected
    if decision.reason is DecisionReason.DEADLINE:
        assert decision.approval_rate == Fraction(approvals, len(participants))


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([*VOTER_NAMES[:6], "outsider"]),
            st.sampled_from(list(Choice)),
            st.floats(0.0, 12.0),
            st.booleans(),
        ),
        max_size=25,
    )
)
def test_property_never_two_decisions(events: list[tuple[str, Choice, float, bool]]) -> None:
    """Given any stream of votes (valid, forged, repeated, conflicting, late),
    Expect that once a decision exists every later outcome reports the very
    same decision, and close() returns it too."""
    tally = Tally(Proposal("p1", "a0", frozenset(VOTER_NAMES[:6]), 10.0, None), VOTERS.verify)
    first = None
    now = 0.0
    for voter, choice, at, forge in sorted(events, key=lambda e: e[2]):
        now = at
        vote = VOTERS.vote(voter, choice)
        if forge:
            vote = Vote(vote.proposal_id, vote.voter, vote.choice, bytes(64))
        outcome = tally.add(vote, now)
        if first is None:
            first = outcome.decision
        else:
            assert outcome.decision is first
    final = tally.close(max(now, 10.0))
    assert first is None or final is first
    assert sum(tally.refusals.values()) + len(final.votes) == len(events)


@settings(max_examples=200, deadline=None)
@given(
    choices=st.lists(st.sampled_from(list(Choice)), min_size=4, max_size=10),
    data=st.data(),
)
def test_property_vote_order_does_not_change_the_outcome(
    choices: list[Choice], data: st.DataObject
) -> None:
    """Given one signed vote per participant, When they arrive in any order,
    Expect the same approved/rejected outcome."""
    names = VOTER_NAMES[: len(choices)]
    votes = [SIGNED[(name, c)] for name, c in zip(names, choices, strict=True)]
    shuffled = data.draw(st.permutations(votes))

    def outcome(order: list[Vote]) -> bool:
        tally = Tally(Proposal("p1", "a0", frozenset(names), 10.0, None), VOTERS.verify)
        for vote in order:
            tally.add(vote, 1.0)
        return tally.close(10.0).approved

    assert outcome(votes) == outcome(shuffled)
