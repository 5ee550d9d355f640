"""Consensus on the broker: 2/3-majority votes, PBFT groups, equivocation evidence.

Voting (the pure tally is :mod:`robeing.protocol.voting`)::

    proposer  --broadcast vote.propose (reply_to: its reply queue)-->  agents
    participant: policy(Ballot) -> choice, signed with its Ed25519 key
    participant  --vote.cast to the proposer's reply queue-->  proposer
    proposer: checks each vote against the voter's certificate, feeds the
              Tally, decides early or at the deadline
    proposer  --broadcast vote.outcome (with the signed votes)-->  agents

Agents choose their vote through a policy registered in their ``--app`` module
with :func:`vote_policy` (default: approve). Proposers use :func:`propose`
(an agent or a :class:`~robeing.agents.client.Client` works); PBFT groups are
hosted and used through :mod:`robeing.agents.bft` and :func:`bft_commit`.

Invariants:
    * A vote counts only if the voter's certified key signed it for this
      proposal id, the voter is a participant, and it is its first vote
      (the :class:`~robeing.protocol.voting.Tally` invariants). Every refusal
      is counted in :attr:`Consensus.refused` under its reason, including
      votes arriving after the decision and votes for unknown proposals.
    * A participant sends one vote per proposal: the choice is remembered and
      re-sent on redelivery, so an honest agent never equivocates even with a
      policy that is not deterministic.
    * An agent records an outcome as ``verified`` only if every vote in it
      verifies and the decision rule recomputes to the announced result. An
      approved, verified outcome is self-certifying (approvals cannot be
      forged); a rejection only shows the votes the proposer chose to include.
    * Evidence is recorded only after :meth:`Equivocation.verify` succeeds,
      whoever reported it; forged accusations are refused.
    * Bounded memory: open and finished proposals, remembered votes and
      recorded outcomes keep at most :data:`KEEP` entries each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..broker import topology as topo
from ..protocol.envelope import BROADCAST, Envelope, new_id
from ..protocol.errors import CertificateError, ConfigError, DecodeError, Reject
from ..protocol.evidence import Equivocation, EvidenceLog, SignatureCheck, ed25519_signer
from ..protocol.voting import DEFAULT_THRESHOLD, Choice, Decision, Proposal, Tally, Vote, sign_vote
from .app import App
from .bft import PRIORITY, BftClient, BftGroup, BftResult, GroupSpec

if TYPE_CHECKING:
    from ..protocol.codec import Opened
    from ..protocol.identity import Certificate
    from .app import Message
    from .client import Client
    from .runtime import Agent

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 30.0
KEEP = 256
POLICY_GRACE = 10.0  # a policy may overrun the deadline this long; its vote is then counted late


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
    agent: Agent


VotePolicy = Callable[[Ballot], Any]
"""Returns (or awaits to) a :class:`Choice`, its name, True/False, or None (abstain)."""


def approve_all(ballot: Ballot) -> Choice:
    """The default policy: approve everything."""
    return Choice.APPROVE


def vote_policy(app: App) -> Callable[[VotePolicy], VotePolicy]:
    """Register the decorated function as the vote policy of agents running ``app``.

    Usage in an ``--app`` module::

        @vote_policy(app)
        def policy(ballot):
            return ballot.payload.get("risk", 0) < 5   # approve / reject

    A policy that raises or returns something else abstains (and is logged).

    Raises:
        Nothing.
    """

    def register(fn: VotePolicy) -> VotePolicy:
        async def set_policy(agent: Agent) -> None:
            (await ensure_consensus(agent)).policy = fn

        app.on_start(set_policy)
        return fn

    return register


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


def vote_to_data(vote: Vote) -> dict[str, Any]:
    return {
        "proposal_id": vote.proposal_id,
        "voter": vote.voter,
        "choice": vote.choice.value,
        "signature": vote.signature,
    }


def vote_from_data(data: Any) -> Vote:
    """Rebuild a vote from the wire.

    Raises:
        DecodeError: not shaped like :func:`vote_to_data` output.
    """
    try:
        return Vote(
            str(data["proposal_id"]),
            str(data["voter"]),
            Choice(data["choice"]),
            bytes(data["signature"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"malformed vote: {exc}") from None


@dataclass(frozen=True)
class Outcome:
    """A decided proposal as announced in ``vote.outcome`` (and returned to the CLI).

    Attributes:
        verified: every vote verified and the rule recomputes to ``approved``.
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
    def of(cls, proposal: Proposal, decision: Decision) -> Outcome:
        return cls(
            proposal.id,
            proposal.proposer,
            proposal.participants,
            proposal.threshold,
            decision.approved,
            decision.approval_rate,
            decision.reason.value,
            decision.votes,
            {str(k): v for k, v in decision.refusals.items()},
        )

    @property
    def required(self) -> int:
        """Approvals needed: ``ceil(threshold * n)``."""
        t, n = self.threshold, len(self.participants)
        return -(-t.numerator * n // t.denominator)

    def to_data(self) -> dict[str, Any]:
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
    def from_data(cls, data: Any, proposer: str, check: SignatureCheck) -> Outcome:
        """Rebuild an announced outcome and check it against its signed votes.

        Raises:
            DecodeError: malformed.
        """
        try:
            pid = str(data["id"])
            votes = tuple(Vote(pid, str(v), Choice(c), bytes(s)) for v, c, s in data["votes"])
            out = cls(
                pid,
                proposer,
                frozenset(map(str, data["participants"])),
                Fraction(*data["threshold"]),
                bool(data["approved"]),
                Fraction(*data["approval_rate"]),
                str(data["reason"]),
                votes,
                {str(k): int(n) for k, n in dict(data.get("refusals", {})).items()},
                False,
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise DecodeError(f"malformed vote outcome: {exc}") from None
        voters = {v.voter for v in votes}
        approvals = sum(v.choice is Choice.APPROVE for v in votes)
        n, t = len(out.participants), out.threshold
        ok = (
            n > 0
            and len(voters) == len(votes)
            and voters <= out.participants
            and all(check(v.voter, v.signing_bytes(), v.signature) for v in votes)
            and out.approved == (approvals * t.denominator >= t.numerator * n)
            and out.approval_rate == Fraction(approvals, n)
        )
        return dataclasses.replace(out, verified=ok)


def peer_certificate(agent: Agent, agent_id: str) -> Certificate | None:
    """A valid certificate for ``agent_id``: learned from its messages, or the keys dir.

    Raises:
        Nothing: unknown, expired or revoked agents give None.
    """
    trust, now = agent.codec.trust, agent.clock()
    cert = trust.peer(agent_id)
    lookup = agent.outbox.lookup_peer
    try:
        if cert is None and lookup is not None and (raw := lookup(agent_id)) is not None:
            cert = trust.check_certificate(raw, now)
            if cert.agent_id != agent_id:
                return None
            trust.learn(cert)
        if cert is not None:
            trust.require_valid(cert, now)
    except CertificateError:
        return None
    return cert


def signature_check(agent: Agent) -> SignatureCheck:
    """``check(signer, data, signature)`` against the signer's certified key.

    Raises:
        Nothing.
    """

    def check(signer: str, data: bytes, signature: bytes) -> bool:
        cert = peer_certificate(agent, signer)
        if cert is None or len(signature) != 64:
            return False
        try:
            agent.codec.trust.verify(cert, data, signature)
        except Exception:
            return False
        return True

    return check


async def send_vote(agent: Agent, proposer: str, reply_to: str, vote: Vote) -> None:
    """Send ``vote`` to the proposer's reply queue (signed envelope, encrypted).

    Raises:
        UnknownPeer: the proposer's certificate is unknown.
    """
    env = Envelope("vote.cast", vote_to_data(vote), receiver=proposer, priority=PRIORITY)
    await agent.outbox.publish_to_queue(
        env, reply_to, persistent=False, confirm=False, mandatory=False
    )


async def live_agent_ids(agent: Agent, listen: float) -> list[str]:
    """Agents of our cluster that heartbeat within ``listen`` seconds (not leaving).

    Raises:
        BrokerError: the broker is unreachable.
    """
    from .client import status_from_heartbeat  # the client module imports the runtime

    seen: dict[str, str] = {}
    spec = topo.QueueSpec(
        f"robeing.consensus.{agent.id}.{os.urandom(3).hex()}",
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": 100_000},
    )

    async def on_heartbeat(delivery: Any) -> None:
        await delivery.ack()
        try:
            st = status_from_heartbeat(agent.codec.open(delivery.body, agent.clock()), 0.0)
        except Exception:
            return
        if st.cluster_id == agent.settings.cluster_id:
            seen[st.id] = st.state

    consumer = await agent.transport.consume(
        spec, on_heartbeat, prefetch=1000, bindings=[(topo.EVENTS_EXCHANGE, "heartbeat.#")]
    )
    try:
        await asyncio.sleep(listen)
    finally:
        await agent.transport.cancel(consumer)
    return sorted(a for a, state in seen.items() if state != "leaving")


@dataclass
class _Open:
    proposal: Proposal
    tally: Tally
    fut: asyncio.Future[Decision]


def _trim(d: OrderedDict[Any, Any]) -> None:
    while len(d) > KEEP:
        d.popitem(last=False)


class Consensus:
    """An agent's consensus state and handlers (use :func:`install_consensus`).

    Attributes:
        policy: decides this agent's votes.
        evidence: verified equivocations (the guardian's record).
        refused: refused votes by reason, across all our proposals.
        outcomes: outcomes announced to (or decided by) this agent, newest last.
        groups: the PBFT groups this agent is a member of.
        bft: the client side of PBFT for this agent.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.policy: VotePolicy = approve_all
        self.evidence = EvidenceLog()
        self.refused: Counter[str] = Counter()
        self.outcomes: OrderedDict[str, Outcome] = OrderedDict()
        self.groups: dict[str, BftGroup] = {}
        self.bft = BftClient(agent)
        self.check = signature_check(agent)
        self._sign = ed25519_signer(agent.identity.signing_key)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._votes: OrderedDict[tuple[str, str], asyncio.Future[Vote]] = OrderedDict()
        self._reported: set[tuple[Any, ...]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # -- lifecycle -----------------------------------------------------------

    def add_group(self, spec: GroupSpec) -> BftGroup | None:
        """Host ``spec`` if this agent is a member (others are ignored).

        Raises:
            ConfigError: another group with that name is already hosted.
        """
        if self.agent.id not in spec.members:
            return None
        if spec.name in self.groups:
            if self.groups[spec.name].spec != spec:
                raise ConfigError(f"BFT group {spec.name!r} is already defined differently")
            return self.groups[spec.name]
        group = BftGroup(
            self.agent,
            spec,
            self.check,
            self.evidence,
            self._tell_guardians,
            lambda a: peer_certificate(self.agent, a),
        )
        self.groups[spec.name] = group
        if self._started:
            self._spawn(group.start())
        return group

    async def start(self, agent: Agent | None = None) -> None:
        """Start the hosted groups (idempotent; an ``on_start`` hook).

        Raises:
            Nothing.
        """
        if not self._started:
            self._started = True
            for group in self.groups.values():
                await group.start()

    async def stop(self, agent: Agent | None = None) -> None:
        """Stop the groups and pending work (an ``on_stop`` hook).

        Raises:
            Nothing.
        """
        self._started = False
        for group in self.groups.values():
            await group.stop()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            The decision with the accepted signed votes; the proposal stays
            available through :meth:`proposal`.

        Raises:
            ConfigError: no participants, bad threshold or deadline.
            BrokerError: the proposal could not be published.
        """
        agent = self.agent
        threshold = parse_threshold(threshold)
        if deadline <= 0:
            raise ConfigError("the voting deadline must be positive")
        if participants is None:
            wait = (
                listen if listen is not None else max(2.5 * agent.settings.heartbeat_interval, 1.5)
            )
            participants = await live_agent_ids(agent, wait)
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
        entry = _Open(
            proposal,
            Tally(proposal, self._verify, self.evidence),
            asyncio.get_running_loop().create_future(),
        )
        self._open[proposal.id] = entry
        _trim(self._open)
        data = {
            "id": proposal.id,
            "participants": sorted(proposal.participants),
            "threshold": [threshold.numerator, threshold.denominator],
            "deadline": proposal.deadline,
            "payload": payload,
        }
        env = Envelope(
            "vote.propose", data, receiver=BROADCAST, priority=PRIORITY, reply_to=agent.reply_queue
        )
        await agent.transport.publish(
            topo.BROADCAST_EXCHANGE,
            "",
            agent.codec.seal(env, agent.clock()),
            priority=PRIORITY,
            mandatory=False,
        )
        if agent.id in proposal.participants:
            self._count(entry, await self._vote_for(proposal.id, self._ballot(proposal)))
        try:
            decision = await asyncio.wait_for(
                asyncio.shield(entry.fut), max(0.0, proposal.deadline - agent.clock())
            )
        except TimeoutError:
            decision = entry.tally.close(max(agent.clock(), proposal.deadline))
        outcome = Outcome.of(proposal, decision)
        self._record(outcome)
        try:
            await agent.broadcast("vote.outcome", outcome.to_data(), priority=PRIORITY)
        except Exception as exc:
            log.warning("decision on %s made but not announced: %s", proposal.id, exc)
        return decision

    def proposal(self, proposal_id: str) -> Proposal | None:
        """One of our recent proposals."""
        entry = self._open.get(proposal_id)
        return entry.proposal if entry else None

    def _verify(self, vote: Vote) -> bool:
        return self.check(vote.voter, vote.signing_bytes(), vote.signature)

    def _on_vote(self, opened: Opened) -> None:
        try:
            vote = vote_from_data(opened.envelope.payload)
        except DecodeError:
            self.refused["malformed"] += 1
            return
        entry = self._open.get(vote.proposal_id)
        if entry is None:
            self.refused["unknown_proposal"] += 1
            return
        self._count(entry, vote)

    def _count(self, entry: _Open, vote: Vote) -> None:
        result = entry.tally.add(vote, self.agent.clock())
        if result.refusal is not None:
            self.refused[result.refusal.value] += 1
            log.info("refused vote of %s on %s: %s", vote.voter, vote.proposal_id, result.refusal)
        if result.evidence is not None:
            self._tell_guardians(result.evidence)
        if result.decision is not None and not entry.fut.done():
            entry.fut.set_result(result.decision)

    # -- voting ----------------------------------------------------------------

    def _ballot(self, p: Proposal) -> Ballot:
        return Ballot(
            p.id, p.proposer, p.payload, p.participants, p.threshold, p.deadline, self.agent
        )

    async def _vote_for(self, key: str, ballot: Ballot) -> Vote:
        slot = (ballot.proposer, key)
        fut = self._votes.get(slot)
        if fut is None:  # first delivery decides; redeliveries wait for and re-send the same
            fut = self._votes[slot] = asyncio.get_running_loop().create_future()
            _trim(self._votes)
            try:
                fut.set_result(await self._decide(ballot))
            except BaseException:
                del self._votes[slot]  # cancelled (shutdown): a later delivery decides afresh
                fut.cancel()
                raise
        return await asyncio.shield(fut)

    async def _decide(self, ballot: Ballot) -> Vote:
        wait = max(0.0, ballot.deadline - self.agent.clock()) + POLICY_GRACE
        try:
            result = self.policy(ballot)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, wait)
            choice = (
                Choice.APPROVE
                if result is True
                else Choice.REJECT
                if result is False
                else Choice.ABSTAIN
                if result is None
                else Choice(result)
            )
        except Exception:
            log.exception("vote policy failed on %s; abstaining", ballot.proposal_id)
            choice = Choice.ABSTAIN
        return sign_vote(ballot.proposal_id, self.agent.id, choice, self._sign)

    async def _on_propose(self, msg: Message) -> None:
        env, p = msg.envelope, msg.payload
        try:
            proposal = Proposal(
                str(p["id"]),
                env.sender,
                frozenset(map(str, p["participants"])),
                float(p["deadline"]),
                p.get("payload"),
                Fraction(*p["threshold"]),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError, ConfigError) as exc:
            raise Reject(f"malformed proposal: {exc}") from None
        if self.agent.id not in proposal.participants:
            return
        reply_to = env.reply_to or ""
        if not reply_to.startswith(f"robeing.reply.{env.sender}."):
            raise Reject("a proposal must name its proposer's reply queue")
        vote = await self._vote_for(proposal.id, self._ballot(proposal))
        await send_vote(self.agent, env.sender, reply_to, vote)

    def _on_outcome(self, msg: Message) -> dict[str, Any]:
        try:
            outcome = Outcome.from_data(msg.payload, msg.sender, self.check)
        except DecodeError as exc:
            raise Reject(str(exc)) from None
        if not outcome.verified:
            log.warning(
                "outcome of %s from %s does not match its votes", outcome.proposal_id, msg.sender
            )
        self._record(outcome)
        return {"verified": outcome.verified}

    def _record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.proposal_id] = outcome
        _trim(self.outcomes)

    # -- evidence ----------------------------------------------------------------

    def _tell_guardians(self, evidence: Equivocation) -> None:
        self.evidence.record(evidence)
        if evidence.key in self._reported or len(self._reported) > 10 * KEEP:
            return
        self._reported.add(evidence.key)
        self._spawn(self.agent.broadcast("evidence.report", evidence.to_data(), priority=PRIORITY))

    def _on_evidence(self, msg: Message) -> dict[str, Any]:
        try:
            evidence = Equivocation.from_data(msg.payload)
        except DecodeError as exc:
            raise Reject(str(exc)) from None
        if not evidence.verify(self.check):
            raise Reject(f"evidence against {evidence.offender!r} does not verify")
        new = self.evidence.record(evidence)
        self._reported.add(evidence.key)  # it is already broadcast: do not echo it
        if new and self.agent.settings.role == "guardian":
            log.warning(
                "evidence from %s: %s equivocated in %r",
                msg.sender,
                evidence.offender,
                evidence.slot,
            )
        return {"recorded": new}

    # -- PBFT --------------------------------------------------------------------

    def _group(self, payload: Any) -> BftGroup:
        name = payload.get("g") if isinstance(payload, dict) else None
        group = self.groups.get(name) if isinstance(name, str) else None
        if group is None:
            raise Reject(f"{self.agent.id!r} is not a member of BFT group {name!r}")
        return group

    def _on_pbft(self, msg: Message) -> None:
        self._group(msg.payload).receive(msg.payload.get("m"))

    def _on_pbft_request(self, msg: Message) -> None:
        self._group(msg.payload).receive(msg.payload.get("m"), request=True)

    def _on_pbft_state(self, msg: Message) -> list[Any]:
        p = msg.payload
        try:
            return self._group(p).state_entries(int(p["after"]), int(p["upto"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise Reject(f"malformed state request: {exc}") from None

    def _on_pbft_log(self, msg: Message) -> dict[str, Any]:
        p = msg.payload
        return self._group(p).report(entries=int(p.get("entries", 1000)))

    # -- reports -----------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Counters, evidence, recent outcomes and groups (``consensus.report``).

        Raises:
            Nothing.
        """
        return {
            "agent": self.agent.id,
            "policy": getattr(self.policy, "__name__", repr(self.policy)),
            "refused": dict(self.refused),
            "evidence": len(self.evidence),
            "offenders": sorted(self.evidence.offenders()),
            "outcomes": {pid: o.to_data() for pid, o in self.outcomes.items()},
            "bft": {name: g.report(entries=0) for name, g in self.groups.items()},
            "bft_client_refused": dict(self.bft.refused),
        }

    def _heartbeat(self) -> dict[str, Any]:
        groups = {
            n: {
                "view": g.replica.view,
                "primary": g.replica.primary,
                "last_executed": g.replica.last_executed,
            }
            for n, g in self.groups.items()
        }
        summary = {"evidence": len(self.evidence), "offenders": sorted(self.evidence.offenders())}
        return {"consensus": {**summary, "bft": groups}}


_INSTALLED: weakref.WeakKeyDictionary[Agent, Consensus] = weakref.WeakKeyDictionary()


def install_consensus(agent: Agent, groups: Iterable[GroupSpec] = ()) -> Consensus:
    """Give ``agent`` the consensus handlers (idempotent) and host its ``groups``.

    Registers ``vote.propose``, ``vote.outcome``, ``evidence.report``,
    ``consensus.report`` and ``pbft.msg|request|state|log`` handlers, the
    ``vote.cast`` and ``pbft.reply`` answer handlers, a heartbeat field and
    start/stop hooks. Groups that do not list the agent are ignored.

    Raises:
        ConfigError: the app already handles one of these types, or a group
            name is reused with different members.
    """
    consensus = _INSTALLED.get(agent)
    if consensus is None:
        consensus = _INSTALLED[agent] = Consensus(agent)
        c, app = consensus, agent.app
        for mtype, fn in (
            ("vote.propose", c._on_propose),
            ("vote.outcome", c._on_outcome),
            ("evidence.report", c._on_evidence),
            ("consensus.report", lambda msg: c.report()),
            ("pbft.msg", c._on_pbft),
            ("pbft.request", c._on_pbft_request),
            ("pbft.state", c._on_pbft_state),
            ("pbft.log", c._on_pbft_log),
        ):
            app.handler(mtype)(fn)
        agent.answer_handlers["vote.cast"] = c._on_vote
        agent.answer_handlers["pbft.reply"] = c.bft.on_reply
        agent.heartbeat_extras.append(c._heartbeat)
        app.on_start(c.start)
        app.on_stop(c.stop)
    for spec in groups:
        consensus.add_group(spec)
    return consensus


def consensus_of(agent: Agent) -> Consensus | None:
    """The agent's consensus state, if installed."""
    return _INSTALLED.get(agent)


async def ensure_consensus(agent: Agent, groups: Iterable[GroupSpec] = ()) -> Consensus:
    """Install (if needed) and start; use from ``on_start`` hooks.

    Raises:
        ConfigError: as :func:`install_consensus`.
    """
    consensus = install_consensus(agent, groups)
    await consensus.start()
    return consensus


def _agent(who: Agent | Client) -> Agent:
    inner = getattr(who, "agent", None)
    return inner if inner is not None else who  # type: ignore[return-value]


async def propose(
    who: Agent | Client,
    payload: Any,
    participants: Iterable[str] | None = None,
    threshold: Fraction | int | str = DEFAULT_THRESHOLD,
    deadline: float = DEFAULT_DEADLINE,
    listen: float | None = None,
) -> Decision:
    """Put ``payload`` to a vote (see :meth:`Consensus.propose`).

    Raises:
        ConfigError: no participants, bad threshold or deadline.
        BrokerError: the proposal could not be published.
    """
    consensus = install_consensus(_agent(who))
    return await consensus.propose(payload, participants, threshold, deadline, listen)


async def bft_commit(
    who: Agent | Client, group: GroupSpec, value: Any, timeout: float = 30.0, retry: float = 2.0
) -> BftResult:
    """Commit ``value`` through a PBFT group (see :meth:`BftClient.commit`).

    Raises:
        ConfigError: the caller is a member of the group.
        ConsensusTimeout: fewer than ``f + 1`` matching replies within ``timeout``.
        UnknownPeer: a member has no certificate.
    """
    consensus = install_consensus(_agent(who))
    return await consensus.bft.commit(group, value, timeout, retry)


__all__ = [
    "Ballot",
    "BftResult",
    "Consensus",
    "GroupSpec",
    "Outcome",
    "bft_commit",
    "consensus_of",
    "ensure_consensus",
    "install_consensus",
    "propose",
    "vote_policy",
]
