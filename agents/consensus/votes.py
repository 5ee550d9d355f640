"""Threshold votes over the broker: proposals, signed votes, announced outcomes.

The tally itself is the pure :class:`~robeing.protocol.voting.Tally`; this
module carries it::

    proposer  --broadcast vote.propose (reply_to: its reply queue)-->  agents
    participant: policy(Ballot) -> choice, signed with its Ed25519 key
    participant  --vote.cast to the proposer's reply queue-->  proposer
    proposer: checks each vote against the voter's certificate, feeds the
              Tally, decides early or at the deadline
    proposer  --broadcast vote.outcome (with the signed votes)-->  agents

Votes travel on the proposer's reply queue, so a proposer that takes no work
(a :class:`~robeing.agents.client.Client`) collects them as well as an agent.

Invariants:
    * A vote counts only if the voter's certified key signed it for this
      proposal id, the voter is a participant, and it is its first vote
      (the Tally's invariants). Every refused vote is counted in
      :attr:`Voting.refused` under its reason, including votes arriving after
      the decision and votes for proposals we do not know.
    * A participant sends one vote per proposal: the choice is remembered and
      re-sent on redelivery, so an honest agent never equivocates even with a
      policy that is not deterministic.
    * An agent records an outcome as ``verified`` only if every vote in it
      verifies and the decision rule recomputes to the announced result. An
      approved, verified outcome is self-certifying (approvals cannot be
      forged); a rejection only shows the votes the proposer chose to include.
    * Bounded memory: proposals, remembered votes and recorded outcomes keep
      at most :data:`KEEP` entries each.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ...protocol.ballots import AnnouncedOutcome, vote_from_data, vote_to_data
from ...protocol.envelope import Envelope, new_id
from ...protocol.errors import ConfigError, DecodeError, Reject
from ...protocol.evidence import Equivocation, EvidenceLog, SignatureCheck, ed25519_signer
from ...protocol.voting import DEFAULT_THRESHOLD, Choice, Decision, Proposal, Tally, Vote, sign_vote
from ..context import AgentContext, Message
from ..heartbeats import listen_heartbeats
from .bft_client import PRIORITY

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 30.0
KEEP = 256
POLICY_GRACE = 10.0  # a policy may overrun the deadline this long; its vote then counts as late


@dataclass(frozen=True)
class Ballot:
    """What a vote policy sees.

    Attributes:
        proposal_id: the proposal's id.
        proposer: who proposed it.
        payload: what is proposed.
        participants: who votes.
        threshold: fraction of participants that must approve.
        deadline: absolute time (proposer's clock) after which votes are late.
        agent: the voting agent.
    """

    proposal_id: str
    proposer: str
    payload: Any
    participants: frozenset[str]
    threshold: Fraction
    deadline: float
    agent: AgentContext


VotePolicy = Callable[[Ballot], Any]
"""Returns (or awaits to) a :class:`Choice`, its name, True/False, or None (abstain)."""


def approve_all(ballot: Ballot) -> Choice:
    """The default policy: approve everything."""
    return Choice.APPROVE


def as_choice(result: Any) -> Choice:
    """Read a policy's answer: a Choice or its name, True, False or None.

    Raises:
        ValueError: anything else.
    """
    if result is True or result is False or result is None:
        return {True: Choice.APPROVE, False: Choice.REJECT, None: Choice.ABSTAIN}[result]
    return Choice(result)


def parse_threshold(value: Fraction | int | str) -> Fraction:
    """``Fraction``, int, or text like ``"2/3"`` or ``"0.75"`` (exact, never a float).

    Raises:
        ConfigError: a float, or text that is not a fraction in ``(0, 1]``.
    """
    if isinstance(value, float | bool):
        raise ConfigError("threshold must be exact: give a Fraction or text like '2/3'")
    try:
        threshold = Fraction(value)
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"invalid threshold {value!r}: {exc}") from None
    if not 0 < threshold <= 1:
        raise ConfigError(f"threshold {value!r} is not in (0, 1]")
    return threshold


async def send_vote(agent: AgentContext, proposer: str, reply_to: str, vote: Vote) -> None:
    """Send ``vote`` to the proposer's reply queue (signed envelope, encrypted).

    Raises:
        UnknownPeer: the proposer's certificate is unknown.
    """
    env = Envelope("vote.cast", vote_to_data(vote), receiver=proposer, priority=PRIORITY)
    await agent.send_to_queue(env, reply_to, persistent=False, confirm=False, mandatory=False)


async def live_agent_ids(agent: AgentContext, listen: float) -> list[str]:
    """Agents of our cluster that heartbeat within ``listen`` seconds (not leaving).

    Raises:
        BrokerError: the broker is unreachable.
    """

    live = await listen_heartbeats(agent, listen)
    return sorted(a for a, st in live.items() if st.cluster_id == agent.cluster_id)


def _trim(d: OrderedDict[Any, Any]) -> None:
    while len(d) > KEEP:
        d.popitem(last=False)


@dataclass
class _Open:
    proposal: Proposal
    tally: Tally
    fut: asyncio.Future[Decision]


class Voting:
    """One agent's side of voting: as proposer and as participant.

    Args:
        agent: the agent.
        check: signature check against certified keys.
        evidence: log that receives equivocations found in votes.
        report_evidence: called with each equivocation (to tell the guardians).

    Attributes:
        policy: decides this agent's votes.
        refused: refused votes by reason, across all our proposals.
        outcomes: outcomes announced to (or decided by) this agent, newest last.
    """

    def __init__(
        self,
        agent: AgentContext,
        check: SignatureCheck,
        evidence: EvidenceLog,
        report_evidence: Callable[[Equivocation], None],
    ) -> None:
        self.agent = agent
        self.check = check
        self.policy: VotePolicy = approve_all
        self.refused: Counter[str] = Counter()
        self.outcomes: OrderedDict[str, AnnouncedOutcome] = OrderedDict()
        self._evidence = evidence
        self._report_evidence = report_evidence
        self._sign = ed25519_signer(agent.identity.signing_key)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._votes: OrderedDict[tuple[str, str], asyncio.Future[Vote]] = OrderedDict()

    # -- proposing -----------------------------------------------------------

    async def propose(
        self,
        payload: Any,
        participants: Iterable[str] | None = None,
        threshold: Fraction | int | str = DEFAULT_THRESHOLD,
        deadline: float = DEFAULT_DEADLINE,
        listen: float | None = None,
    ) -> Decision:
        """Broadcast a proposal, tally the signed votes, announce and return the decision.

        Args:
            payload: what is proposed (any msgpack-serialisable value).
            participants: who votes; default the live agents of our cluster.
            threshold: fraction of participants that must approve.
            deadline: seconds to wait for votes.
            listen: seconds to listen for live agents (default 2.5 heartbeats).

        Returns:
            The decision with the accepted signed votes (:meth:`proposal` has
            the proposal, :attr:`outcomes` the announced outcome).

        Raises:
            ConfigError: no participants, bad threshold or deadline.
            BrokerError: the proposal could not be published.
        """
        agent = self.agent
        threshold = parse_threshold(threshold)
        if deadline <= 0:
            raise ConfigError("the voting deadline must be positive")
        if participants is None:
            hb = agent.settings.heartbeat_interval
            participants = await live_agent_ids(agent, listen or max(2.5 * hb, 1.5))
            if not participants:
                raise ConfigError("no live agents to vote: none heartbeated while listening")
        proposal = Proposal(
            new_id(),
            agent.id,
            frozenset(participants),
            agent.clock() + deadline,
            payload,
            threshold,
        )
        tally = Tally(proposal, self._verify, self._evidence)
        entry = self._open[proposal.id] = _Open(proposal, tally, asyncio.Future())
        _trim(self._open)
        data = {
            "id": proposal.id,
            "participants": sorted(proposal.participants),
            "threshold": [threshold.numerator, threshold.denominator],
            "deadline": proposal.deadline,
            "payload": payload,
        }
        await agent.broadcast("vote.propose", data, priority=PRIORITY, answers=True)
        if agent.id in proposal.participants:
            self._count(entry, await self._vote_for(self._ballot(proposal)))
        try:
            decision = await asyncio.wait_for(
                asyncio.shield(entry.fut), max(0.0, proposal.deadline - agent.clock())
            )
        except TimeoutError:
            decision = tally.close(max(agent.clock(), proposal.deadline))
        outcome = AnnouncedOutcome.of(proposal, decision)
        self._record(outcome)
        try:
            await agent.broadcast("vote.outcome", outcome.to_data(), priority=PRIORITY)
        except Exception as exc:
            log.warning("decision on %s made but not announced: %s", proposal.id, exc)
        return decision

    def proposal(self, proposal_id: str) -> Proposal | None:
        """One of our recent proposals, or None."""
        entry = self._open.get(proposal_id)
        return entry.proposal if entry else None

    def on_vote(self, msg: Message) -> None:
        """Answer handler for ``vote.cast`` arriving on our reply queue.

        Raises:
            Nothing: bad votes are refused and counted.
        """
        try:
            vote = vote_from_data(msg.payload)
        except DecodeError:
            self.refused["malformed"] += 1
            return
        entry = self._open.get(vote.proposal_id)
        if entry is None:
            self.refused["unknown_proposal"] += 1
            return
        self._count(entry, vote)

    def _verify(self, vote: Vote) -> bool:
        return self.check(vote.voter, vote.signing_bytes(), vote.signature)

    def _count(self, entry: _Open, vote: Vote) -> None:
        result = entry.tally.add(vote, self.agent.clock())
        if result.refusal is not None:
            self.refused[result.refusal.value] += 1
            log.info("refused vote of %s on %s: %s", vote.voter, vote.proposal_id, result.refusal)
        if result.evidence is not None:
            self._report_evidence(result.evidence)
        if result.decision is not None and not entry.fut.done():
            entry.fut.set_result(result.decision)

    # -- participating ---------------------------------------------------------

    async def on_propose(self, msg: Message) -> None:
        """Handler for ``vote.propose`` broadcasts: vote if we are a participant.

        Raises:
            Reject: malformed proposal, or no reply queue of the proposer.
        """
        env, p = msg.envelope, msg.payload
        try:
            proposal = Proposal(
                str(p["id"]), env.sender, frozenset(map(str, p["participants"])),
                float(p["deadline"]), p.get("payload"), Fraction(*p["threshold"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, ZeroDivisionError, ConfigError) as exc:
            raise Reject(f"malformed proposal: {exc}") from None
        if self.agent.id not in proposal.participants:
            return
        reply_to = env.reply_to or ""
        if not reply_to.startswith(f"robeing.reply.{env.sender}."):
            raise Reject("a proposal must name its proposer's reply queue")
        vote = await self._vote_for(self._ballot(proposal))
        await send_vote(self.agent, env.sender, reply_to, vote)

    def on_outcome(self, msg: Message) -> dict[str, Any]:
        """Handler for ``vote.outcome`` broadcasts: check and record.

        Raises:
            Reject: malformed outcome.
        """
        try:
            outcome = AnnouncedOutcome.from_data(msg.payload, msg.sender, self.check)
        except DecodeError as exc:
            raise Reject(str(exc)) from None
        if not outcome.verified:
            log.warning(
                "outcome %s of %s does not match its votes", outcome.proposal_id, msg.sender
            )
        self._record(outcome)
        return {"verified": outcome.verified}

    def _ballot(self, p: Proposal) -> Ballot:
        return Ballot(
            p.id, p.proposer, p.payload, p.participants, p.threshold, p.deadline, self.agent
        )

    async def _vote_for(self, ballot: Ballot) -> Vote:
        slot = (ballot.proposer, ballot.proposal_id)
        fut = self._votes.get(slot)
        if fut is None:  # the first delivery decides; redeliveries re-send the same vote
            fut = self._votes[slot] = asyncio.get_running_loop().create_future()
            _trim(self._votes)
            try:
                fut.set_result(await self._decide(ballot))
            except BaseException:
                self._votes.pop(slot, None)  # cancelled on shutdown: decide afresh next time
                fut.cancel()
                raise
        return await asyncio.shield(fut)

    async def _decide(self, ballot: Ballot) -> Vote:
        wait = max(0.0, ballot.deadline - self.agent.clock()) + POLICY_GRACE
        try:
            result = self.policy(ballot)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, wait)
            choice = as_choice(result)
        except Exception:
            log.exception("vote policy failed on %s; abstaining", ballot.proposal_id)
            choice = Choice.ABSTAIN
        return sign_vote(ballot.proposal_id, self.agent.id, choice, self._sign)

    def _record(self, outcome: AnnouncedOutcome) -> None:
        self.outcomes[outcome.proposal_id] = outcome
        _trim(self.outcomes)
