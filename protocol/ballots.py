"""Votes and outcomes on the wire: the ``vote.cast`` and ``vote.outcome`` payloads.

A vote travels as a map (:func:`vote_to_data`); an announced outcome
(:class:`AnnouncedOutcome`) carries the signed votes behind the decision, so
every receiver can check it against the voters' certified keys and recompute
the decision rule of :mod:`robeing.protocol.voting`. Decoding never trusts
the payload's claims: an outcome that does not verify comes back with
``verified`` False.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .errors import DecodeError
from .evidence import SignatureCheck
from .fields import blob, count, items, mapping, need, strings, text
from .voting import Choice, Decision, Proposal, Vote, passes, share

__all__ = ["AnnouncedOutcome", "vote_from_data", "vote_to_data"]


def vote_to_data(vote: Vote) -> dict[str, Any]:
    """The ``vote.cast`` payload.

    Raises:
        Nothing.
    """
    return {
        "proposal_id": vote.proposal_id,
        "voter": vote.voter,
        "choice": vote.choice.value,
        "signature": vote.signature,
    }


def vote_from_data(data: Any) -> Vote:
    """Rebuild a vote from :func:`vote_to_data` output (its signature is not checked).

    Raises:
        DecodeError: a field is missing or malformed.
    """
    return Vote(
        need(data, "proposal_id", str),
        need(data, "voter", str),
        _choice(need(data, "choice", str), "choice"),
        need(data, "signature", bytes),
    )


def _choice(value: Any, what: str) -> Choice:
    try:
        return Choice(text(value, what))
    except ValueError:
        raise DecodeError(f"field {what!r} must be one of {', '.join(Choice)}") from None


def _outcome_vote(proposal_id: str, value: Any) -> Vote:
    voter, choice, signature = items(value, "votes[]", 3)
    return Vote(
        proposal_id,
        text(voter, "votes[].voter"),
        _choice(choice, "votes[].choice"),
        blob(signature, "votes[].signature"),
    )


def _fraction(value: Any, what: str) -> Fraction:
    numerator, denominator = items(value, what, 2)
    return Fraction(count(numerator, f"{what}[0]"), count(denominator, f"{what}[1]", low=1))


@dataclass(frozen=True)
class AnnouncedOutcome:
    """A decided proposal as its proposer announces it in ``vote.outcome``.

    Not to be confused with :class:`VoteOutcome`, what a tally did with one
    vote: this is the whole decision, with the signed votes behind it, so
    every receiver can check it.

    Attributes:
        verified: every vote verified and the rule recomputes to ``approved``
            (always True for an outcome built by :meth:`of`).
    """

    proposal_id: str
    proposer: str
    participants: frozenset[str]
    threshold: Fraction
    approved: bool
    approval_rate: Fraction
    reason: str
    votes: tuple[Vote, ...]
    refusals: Mapping[str, int]
    verified: bool = True

    @classmethod
    def of(cls, proposal: Proposal, decision: Decision) -> AnnouncedOutcome:
        """The outcome a proposer announces for its own tally's decision.

        Raises:
            Nothing.
        """
        refusals = {str(k): v for k, v in decision.refusals.items()}
        return cls(
            proposal.id, proposal.proposer, proposal.participants, proposal.threshold,
            decision.approved, decision.approval_rate, decision.reason.value, decision.votes,
            refusals,
        )  # fmt: skip

    @property
    def required(self) -> int:
        """Approvals needed: ``ceil(threshold * n)``."""
        return share(len(self.participants), self.threshold)

    def to_data(self) -> dict[str, Any]:
        """The ``vote.outcome`` payload.

        Raises:
            Nothing.
        """
        return {
            "id": self.proposal_id,
            "proposer": self.proposer,
            "participants": sorted(self.participants),
            "threshold": [self.threshold.numerator, self.threshold.denominator],
            "approved": self.approved,
            "approval_rate": [self.approval_rate.numerator, self.approval_rate.denominator],
            "reason": self.reason,
            "votes": [[v.voter, v.choice.value, v.signature] for v in self.votes],
            "refusals": dict(self.refusals),
            "verified": self.verified,
        }

    @classmethod
    def from_data(cls, data: Any, proposer: str, check: SignatureCheck) -> AnnouncedOutcome:
        """Rebuild an announced outcome and check it against its signed votes.

        Args:
            data: the ``vote.outcome`` payload.
            proposer: the envelope's (verified) sender; the payload's claim is ignored.
            check: signature check against the voters' certified keys.

        Returns:
            The outcome; ``verified`` is False unless every vote is a distinct
            participant's valid signature and they recompute to the announced
            decision and rate.

        Raises:
            DecodeError: a field is missing or malformed.
        """
        pid = need(data, "id", str)
        votes = tuple(_outcome_vote(pid, v) for v in need(data, "votes", list))
        refusals = mapping(need(data, "refusals", dict, {}), "refusals")
        out = cls(
            pid,
            proposer,
            frozenset(strings(need(data, "participants", list), "participants")),
            _fraction(need(data, "threshold", list), "threshold"),
            need(data, "approved", bool),
            _fraction(need(data, "approval_rate", list), "approval_rate"),
            need(data, "reason", str),
            votes,
            {text(k, "refusals{}"): count(n, "refusals[]") for k, n in refusals.items()},
            verified=False,
        )
        voters = {v.voter for v in votes}
        approvals = sum(v.choice is Choice.APPROVE for v in votes)
        n = len(out.participants)
        ok = (
            n > 0
            and len(voters) == len(votes)
            and voters <= out.participants
            and all(check(v.voter, v.signing_bytes(), v.signature) for v in votes)
            and out.approved == passes(approvals, n, out.threshold)
            and out.approval_rate == Fraction(approvals, n)
        )
        return dataclasses.replace(out, verified=ok)
