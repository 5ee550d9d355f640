"""Threshold voting: the tally behind the ConsensusProtocol.

A :class:`Proposal` names its participants, a threshold (default 2/3) and an
absolute deadline. Participants send signed :class:`Vote` records (approve,
reject or abstain); a :class:`Tally` accepts or refuses each one and decides.

Decision rule, counted with integers only (no floating point)::

    approved  <=>  approvals * threshold.denominator >= threshold.numerator * n

where ``n = len(participants)``. The approval rate is ``approvals / n``; abstain
and reject count alike (neither approves). For the default threshold 2/3 and
``n = 3f + 1`` this requires exactly ``2f + 1`` approvals: ``3a >= 6f + 2``
holds iff ``a >= 2f + 1``.

The tally decides early as soon as the outcome cannot change: when approvals
reach the threshold, or when even all participants who have not voted yet
could no longer reach it. Otherwise it decides at the deadline
(:meth:`Tally.close`, or the first :meth:`Tally.add` after the deadline).

The wire forms of a vote (:func:`vote_to_data`) and of an announced outcome
(:class:`AnnouncedOutcome`) live here too: checking an announced outcome
recomputes this decision rule from its signed votes, so rule and check are
read side by side.

Invariants:
    * At most one decision per tally; once made it never changes, and every
      later vote is refused (``decided``, or ``late`` after the deadline).
    * At most one accepted vote per participant: the first validly signed
      one. A second identical vote is a ``duplicate``; a second different one
      is an ``equivocation`` and yields verifiable evidence
      (:mod:`robeing.protocol.evidence`).
    * Every refusal is counted under exactly one :class:`Refusal` reason.
    * Given the same set of accepted votes, ``approved`` does not depend on the
      order in which they arrived.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import ConfigError
from .evidence import (
    Equivocation,
    EvidenceLog,
    SignedStatement,
    Signer,
    ed25519_check,
    encode_statement,
)

VOTE_DOMAIN = b"robeing.vote.v1"

DEFAULT_THRESHOLD = Fraction(2, 3)


class Choice(enum.StrEnum):
    """What a participant says about a proposal."""

    APPROVE = "approve"
    REJECT = "reject"
    ABSTAIN = "abstain"


class Refusal(enum.StrEnum):
    """Why a vote was not counted (also the key of :attr:`Tally.refusals`)."""

    WRONG_PROPOSAL = "wrong_proposal"
    NOT_PARTICIPANT = "not_participant"
    BAD_SIGNATURE = "bad_signature"
    DUPLICATE = "duplicate"
    EQUIVOCATION = "equivocation"
    LATE = "late"
    DECIDED = "decided"


class DecisionReason(enum.StrEnum):
    """Why the tally decided when it did."""

    THRESHOLD_REACHED = "threshold_reached"
    THRESHOLD_UNREACHABLE = "threshold_unreachable"
    DEADLINE = "deadline"


def required_approvals(participants: int, threshold: Fraction = DEFAULT_THRESHOLD) -> int:
    """Smallest number of approvals that passes ``threshold`` among ``participants``.

    Raises:
        ConfigError: ``participants < 1`` or ``threshold`` outside ``(0, 1]``.
    """
    if participants < 1:
        raise ConfigError("a proposal needs at least one participant")
    if not 0 < threshold <= 1:
        raise ConfigError("threshold must be in (0, 1]")
    return share(participants, threshold)


def share(participants: int, threshold: Fraction) -> int:
    """``ceil(threshold * participants)``, without floats."""
    return -(-threshold.numerator * participants // threshold.denominator)


def passes(approvals: int, participants: int, threshold: Fraction) -> bool:
    """The decision rule of the module docstring, in integers."""
    return approvals * threshold.denominator >= threshold.numerator * participants


@dataclass(frozen=True)
class Proposal:
    """Something the participants vote on.

    Attributes:
        id: unique proposal id (signed into every vote).
        proposer: agent that made the proposal.
        participants: agents allowed to vote; the threshold is relative to
            all of them, not to the votes cast.
        deadline: absolute time after which votes are late.
        payload: what is proposed (opaque to the tally).
        threshold: fraction of participants that must approve.

    Raises:
        ConfigError: no participants, threshold outside ``(0, 1]`` or not a
            ``Fraction``/``int``.
    """

    id: str
    proposer: str
    participants: frozenset[str]
    deadline: float
    payload: Any = None
    threshold: Fraction = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, Fraction | int):
            raise ConfigError("threshold must be a fractions.Fraction (floats are inexact)")
        object.__setattr__(self, "threshold", Fraction(self.threshold))
        object.__setattr__(self, "participants", frozenset(self.participants))
        required_approvals(len(self.participants), self.threshold)  # validates

    @property
    def required(self) -> int:
        """Approvals needed to pass."""
        return required_approvals(len(self.participants), self.threshold)


def vote_signing_bytes(proposal_id: str, voter: str, choice: Choice | str) -> bytes:
    """Canonical bytes a voter signs: ``VOTE_DOMAIN || msgpack([voter, [proposal_id], choice])``.

    Raises:
        ValueError: ``choice`` is not one of :class:`Choice`.
    """
    return encode_statement(VOTE_DOMAIN, voter, (proposal_id,), Choice(choice).value)


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed vote.

    Attributes:
        proposal_id: the proposal voted on.
        voter: the participant voting.
        choice: approve, reject or abstain.
        signature: the voter's signature over :meth:`signing_bytes`.

    Raises:
        ValueError: ``choice`` is not one of :class:`Choice`.
    """

    proposal_id: str
    voter: str
    choice: Choice
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "choice", Choice(self.choice))

    def signing_bytes(self) -> bytes:
        """The exact bytes the signature covers.

        Raises:
            Nothing.
        """
        return vote_signing_bytes(self.proposal_id, self.voter, self.choice)

    def statement(self) -> SignedStatement:
        """The vote as a signed statement (for evidence).

        Raises:
            Nothing.
        """
        return SignedStatement(self.signing_bytes(), self.signature)


def sign_vote(proposal_id: str, voter: str, choice: Choice | str, sign: Signer) -> Vote:
    """Create a vote signed with ``sign`` (the voter's own key).

    Raises:
        ValueError: ``choice`` is not one of :class:`Choice`.
    """
    choice = Choice(choice)
    return Vote(proposal_id, voter, choice, sign(vote_signing_bytes(proposal_id, voter, choice)))


def ed25519_verifier(keys: Mapping[str, bytes]) -> Callable[[Vote], bool]:
    """Build a vote verifier from a directory of raw Ed25519 public keys.

    Returns:
        ``verify(vote)``: True iff the voter's key signed the vote's bytes.

    Raises:
        ConfigError: a public key is not 32 bytes.
    """
    check = ed25519_check(keys)

    def verify(vote: Vote) -> bool:
        return check(vote.voter, vote.signing_bytes(), vote.signature)

    return verify


@dataclass(frozen=True)
class Decision:
    """The immutable result of a tally.

    Attributes:
        proposal_id: the proposal decided.
        approved: whether the threshold was met.
        approval_rate: ``approvals / len(participants)``.
        votes: the accepted signed votes, sorted by voter.
        refusals: refusal counters at the moment of the decision.
        decided_at: the time passed to the call that decided.
        reason: why the tally decided then.
    """

    proposal_id: str
    approved: bool
    approval_rate: Fraction
    votes: tuple[Vote, ...]
    refusals: Mapping[Refusal, int]
    decided_at: float
    reason: DecisionReason


@dataclass(frozen=True)
class VoteOutcome:
    """What :meth:`Tally.add` did with one vote.

    Attributes:
        accepted: the vote was counted.
        refusal: why it was not counted (None when accepted).
        decision: the tally's decision if it is decided (by this or an
            earlier call), else None.
        evidence: equivocation evidence, when the vote conflicted with the
            voter's earlier vote.
    """

    accepted: bool
    refusal: Refusal | None = None
    decision: Decision | None = None
    evidence: Equivocation | None = None


@dataclass
class _Counts:
    approve: int = 0
    reject: int = 0
    abstain: int = 0
    refusals: Counter[Refusal] = field(default_factory=Counter)


class Tally:
    """The vote-counting state machine of one proposal.

    Args:
        proposal: what is voted on.
        verify: signature check for a vote (inject :func:`ed25519_verifier`
            or a check backed by the key directory).
        evidence: log that receives equivocation evidence (a private one is
            created when omitted).
    """

    def __init__(
        self,
        proposal: Proposal,
        verify: Callable[[Vote], bool],
        evidence: EvidenceLog | None = None,
    ) -> None:
        self.proposal = proposal
        self.evidence = evidence if evidence is not None else EvidenceLog()
        self._verify = verify
        self._votes: dict[str, Vote] = {}
        self._counts = _Counts()
        self._decision: Decision | None = None

    @property
    def decision(self) -> Decision | None:
        """The decision, once made."""
        return self._decision

    @property
    def refusals(self) -> Mapping[Refusal, int]:
        """Live refusal counters."""
        return dict(self._counts.refusals)

    @property
    def approvals(self) -> int:
        """Accepted approve votes so far."""
        return self._counts.approve

    def add(self, vote: Vote, now: float) -> VoteOutcome:
        """Count ``vote`` received at ``now``, or refuse it.

        Checks run in this order: proposal id, participant, signature, earlier
        vote by the same voter (duplicate or equivocation), deadline, already
        decided. A vote at ``now == deadline`` is on time. The first call after
        the deadline also closes the tally.

        Args:
            vote: the signed vote.
            now: current time, same clock as the proposal deadline.

        Returns:
            What happened to the vote, and the decision if there is one.

        Raises:
            Nothing: every bad vote is refused and counted, never raised.
        """
        refusal, evidence = self._check(vote, now)
        if now > self.proposal.deadline and self._decision is None:
            self._decide(now, DecisionReason.DEADLINE)
        if refusal is not None:
            self._counts.refusals[refusal] += 1
            return VoteOutcome(False, refusal, self._decision, evidence)
        self._votes[vote.voter] = vote
        counts = self._counts
        if vote.choice is Choice.APPROVE:
            counts.approve += 1
        elif vote.choice is Choice.REJECT:
            counts.reject += 1
        else:
            counts.abstain += 1
        self._decide_early(now)
        return VoteOutcome(True, None, self._decision)

    def close(self, now: float) -> Decision:
        """Decide at the deadline with the votes counted so far.

        Idempotent: returns the existing decision if the tally already decided.

        Args:
            now: current time; must be at or after the deadline unless the
                tally has already decided.

        Returns:
            The decision.

        Raises:
            ValueError: the tally is undecided and ``now`` is before the deadline.
        """
        if self._decision is not None:
            return self._decision
        if now < self.proposal.deadline:
            raise ValueError("cannot close an undecided tally before its deadline")
        return self._decide(now, DecisionReason.DEADLINE)

    # --- internals ----------------------------------------------------------

    def _check(self, vote: Vote, now: float) -> tuple[Refusal | None, Equivocation | None]:
        if vote.proposal_id != self.proposal.id:
            return Refusal.WRONG_PROPOSAL, None
        if vote.voter not in self.proposal.participants:
            return Refusal.NOT_PARTICIPANT, None
        if not self._verify(vote):
            return Refusal.BAD_SIGNATURE, None
        earlier = self._votes.get(vote.voter)
        if earlier is not None:
            if earlier.choice == vote.choice:
                return Refusal.DUPLICATE, None
            evidence = Equivocation.from_pair(VOTE_DOMAIN, earlier.statement(), vote.statement())
            self.evidence.record(evidence)
            return Refusal.EQUIVOCATION, evidence
        if now > self.proposal.deadline:
            return Refusal.LATE, None
        if self._decision is not None:
            return Refusal.DECIDED, None
        return None, None

    def _passes(self, approvals: int) -> bool:
        return passes(approvals, len(self.proposal.participants), self.proposal.threshold)

    def _decide_early(self, now: float) -> None:
        if self._decision is not None:
            return
        remaining = len(self.proposal.participants) - len(self._votes)
        if self._passes(self._counts.approve):
            self._decide(now, DecisionReason.THRESHOLD_REACHED)
        elif not self._passes(self._counts.approve + remaining):
            self._decide(now, DecisionReason.THRESHOLD_UNREACHABLE)

    def _decide(self, now: float, reason: DecisionReason) -> Decision:
        approvals = self._counts.approve
        self._decision = Decision(
            proposal_id=self.proposal.id,
            approved=self._passes(approvals),
            approval_rate=Fraction(approvals, len(self.proposal.participants)),
            votes=tuple(self._votes[voter] for voter in sorted(self._votes)),
            refusals=dict(self._counts.refusals),
            decided_at=now,
            reason=reason,
        )
        return self._decision
