"""An agent's consensus host: the handlers of votes, PBFT groups and evidence.

:func:`install_consensus` gives an agent every consensus handler:

==================  ===========  =============================================
message             arrives on   what happens
==================  ===========  =============================================
``vote.propose``    broadcast    participants vote (:mod:`.votes`)
``vote.cast``       reply queue  the proposer tallies the signed vote
``vote.outcome``    broadcast    the outcome is checked against its votes, recorded
``pbft.msg``        inbox        fed to the hosted replica (:mod:`.bft_host`)
``pbft.request``    inbox        a client's request, fed to the replica
``pbft.reply``      reply queue  a replica's answer to our request (:mod:`.bft_client`)
``pbft.state``      inbox        a lagging member downloads decided entries
``pbft.log``        inbox        a group's state and decided log (``robeing bft log``)
``evidence.report`` broadcast    verified equivocation evidence is recorded
``consensus.report`` inbox       counters, evidence, outcomes and groups
==================  ===========  =============================================

Agents choose their votes with a policy registered in their ``--app`` module
through :func:`vote_policy` (default: approve). Proposers call :func:`propose`
and clients of a PBFT group call :func:`bft_commit`; both accept an
agent's context or a :class:`~robeing.agents.client.Client`.

Invariants:
    * Installing is idempotent: one :class:`Consensus` per agent; later calls
      only add groups, and a group's members and ``f`` are never redefined.
    * Every signature (votes, PBFT messages, evidence) is checked against the
      signer's *certified* key (learned from its envelopes or the keys
      directory); unknown, expired and revoked signers never verify.
    * Evidence is recorded only after :meth:`Equivocation.verify` succeeds,
      whoever reported it; forged accusations are refused (dead-lettered).
      Each piece of evidence is broadcast at most once by each agent.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ...protocol.errors import ConfigError, DecodeError, Reject
from ...protocol.evidence import Equivocation, EvidenceLog, SignatureCheck
from ...protocol.pbft import GroupSpec
from ...protocol.voting import DEFAULT_THRESHOLD, Decision
from ..app import App
from ..context import AgentContext, Message
from .bft_client import PRIORITY, BftClient, BftResult
from .bft_host import BftGroup
from .votes import DEFAULT_DEADLINE, VotePolicy, Voting

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

MAX_REPORTED = 10_000


def signature_check(agent: AgentContext) -> SignatureCheck:
    """``check(signer, data, signature)`` against the signer's certified key.

    Raises:
        Nothing.
    """
    return agent.check_signature


class Consensus:
    """An agent's consensus state and handlers (use :func:`install_consensus`).

    Attributes:
        voting: proposer and participant sides of votes (policy, outcomes, refusals).
        groups: the PBFT groups this agent is a member of, by name.
        bft: the client side of PBFT for this agent.
        evidence: verified equivocations (the guardian's record).
    """

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.check = signature_check(agent)
        self.evidence = EvidenceLog()
        self.voting = Voting(agent, self.check, self.evidence, self.report_evidence)
        self.groups: dict[str, BftGroup] = {}
        self.bft = BftClient(agent)
        self._reported: set[tuple[Any, ...]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    @property
    def policy(self) -> VotePolicy:
        return self.voting.policy

    @policy.setter
    def policy(self, fn: VotePolicy) -> None:
        self.voting.policy = fn

    def add_group(self, spec: GroupSpec) -> BftGroup | None:
        """Host ``spec`` if this agent is a member (others are ignored).

        Raises:
            ConfigError: a group of that name is already hosted with other members.
        """
        if self.agent.id not in spec.members:
            return None
        known = self.groups.get(spec.name)
        if known is not None:  # defined twice (settings and an app): timings of the first win
            if (known.spec.members, known.spec.f) != (spec.members, spec.f):
                raise ConfigError(f"BFT group {spec.name!r} is already defined with other members")
            return known
        group = BftGroup(
            self.agent,
            spec,
            self.check,
            self.evidence,
            self.report_evidence,
            self.agent.peer,
        )
        self.groups[spec.name] = group
        if self._started:
            self._spawn(group.start())
        return group

    async def start(self, agent: AgentContext | None = None) -> None:
        """Start the hosted groups (idempotent; runs as an ``on_start`` hook).

        Raises:
            Nothing.
        """
        if not self._started:
            self._started = True
            for group in self.groups.values():
                await group.start()

    async def stop(self, agent: AgentContext | None = None) -> None:
        """Stop the groups and pending broadcasts (runs as an ``on_stop`` hook).

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

    # -- evidence ----------------------------------------------------------------

    def report_evidence(self, evidence: Equivocation) -> None:
        """Record evidence we found ourselves and broadcast it once (``evidence.report``).

        Raises:
            Nothing.
        """
        self.evidence.record(evidence)
        if evidence.key in self._reported or len(self._reported) >= MAX_REPORTED:
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
        if len(self._reported) < MAX_REPORTED:
            self._reported.add(evidence.key)  # already broadcast: never echo it
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
        """Counters, evidence, recent outcomes and groups (the ``consensus.report`` reply).

        Raises:
            Nothing.
        """
        v = self.voting
        return {
            "agent": self.agent.id,
            "policy": getattr(v.policy, "__name__", repr(v.policy)),
            "refused": dict(v.refused),
            "evidence": len(self.evidence),
            "offenders": sorted(self.evidence.offenders()),
            "evidence_records": [
                {
                    "offender": e.offender,
                    "domain": e.domain.decode(errors="replace"),
                    "slot": list(e.slot),
                }
                for e in list(self.evidence)[-50:]
            ],
            "outcomes": {pid: o.to_data() for pid, o in v.outcomes.items()},
            "bft": {name: g.report(entries=0) for name, g in self.groups.items()},
            "bft_client_refused": dict(self.bft.refused),
        }

    def heartbeat(self) -> dict[str, Any]:
        """The ``consensus`` heartbeat field: evidence and each group's view.

        Raises:
            Nothing.
        """
        groups = {
            name: {"view": g.replica.view, "primary": g.replica.primary,
                   "last_executed": g.replica.last_executed}
            for name, g in self.groups.items()
        }  # fmt: skip
        offenders = sorted(self.evidence.offenders())
        return {
            "consensus": {"evidence": len(self.evidence), "offenders": offenders, "bft": groups}
        }


_INSTALLED: weakref.WeakKeyDictionary[AgentContext, Consensus] = weakref.WeakKeyDictionary()


def install_consensus(agent: AgentContext, groups: Iterable[GroupSpec] = ()) -> Consensus:
    """Give ``agent`` the consensus handlers (idempotent) and host its ``groups``.

    Registers the handlers of the module table, a ``consensus`` heartbeat field
    and start/stop hooks (the groups' tasks start with the agent). Groups that
    do not list the agent are ignored, so every agent can get the same list.

    Raises:
        ConfigError: the app already handles one of these types, or a group
            name is reused with other members.
    """
    consensus = _INSTALLED.get(agent)
    if consensus is None:
        c = consensus = _INSTALLED[agent] = Consensus(agent)
        handlers: dict[str, Callable[[Message], Any]] = {
            "vote.propose": c.voting.on_propose,
            "vote.outcome": c.voting.on_outcome,
            "evidence.report": c._on_evidence,
            "consensus.report": lambda msg: c.report(),
            "pbft.msg": c._on_pbft,
            "pbft.request": c._on_pbft_request,
            "pbft.state": c._on_pbft_state,
            "pbft.log": c._on_pbft_log,
        }
        for mtype, fn in handlers.items():
            agent.handle(mtype, fn)
        agent.handle_answer("vote.cast", c.voting.on_vote)
        agent.handle_answer("pbft.reply", c.bft.on_reply)
        agent.add_heartbeat_extra(c.heartbeat)
        agent.on_start(c.start)
        agent.on_stop(c.stop)
    for spec in groups:
        consensus.add_group(spec)
    return consensus


def consensus_of(agent: AgentContext) -> Consensus | None:
    """The agent's consensus state, if installed."""
    return _INSTALLED.get(agent)


async def ensure_consensus(agent: AgentContext, groups: Iterable[GroupSpec] = ()) -> Consensus:
    """Install (if needed) and start: for ``on_start`` hooks of ``--app`` modules.

    Raises:
        ConfigError: as :func:`install_consensus`.
    """
    consensus = install_consensus(agent, groups)
    await consensus.start()
    return consensus


def vote_policy(app: App) -> Callable[[VotePolicy], VotePolicy]:
    """Register the decorated function as the vote policy of agents running ``app``.

    Usage in an ``--app`` module::

        @vote_policy(app)
        def policy(ballot):
            return ballot.payload.get("risk", 0) < 5   # True approves, False rejects

    The policy may be async and may return a :class:`~robeing.protocol.voting.Choice`,
    its name, True, False or None (abstain). One that raises or returns
    anything else abstains (and is logged).

    Raises:
        Nothing.
    """

    def register(fn: VotePolicy) -> VotePolicy:
        async def set_policy(agent: AgentContext) -> None:
            (await ensure_consensus(agent)).policy = fn

        app.on_start(set_policy)
        return fn

    return register


def _agent(who: AgentContext | Client) -> AgentContext:
    """The context of an agent, or of a :class:`~robeing.agents.Client`."""
    inner = getattr(who, "agent", None)
    return inner if inner is not None else who  # type: ignore[return-value]


async def propose(
    who: AgentContext | Client,
    payload: Any,
    participants: Iterable[str] | None = None,
    threshold: Fraction | int | str = DEFAULT_THRESHOLD,
    deadline: float = DEFAULT_DEADLINE,
    listen: float | None = None,
) -> Decision:
    """Put ``payload`` to a vote and return the decision (see :meth:`Voting.propose`).

    Raises:
        ConfigError: no participants, bad threshold or deadline.
        BrokerError: the proposal could not be published.
    """
    voting = install_consensus(_agent(who)).voting
    return await voting.propose(payload, participants, threshold, deadline, listen)


async def bft_commit(
    who: AgentContext | Client,
    group: GroupSpec,
    value: Any,
    timeout: float = 30.0,
    retry: float = 2.0,
) -> BftResult:
    """Commit ``value`` through a PBFT group (see :meth:`BftClient.commit`).

    Raises:
        ConfigError: the caller is a member of the group.
        ConsensusTimeout: fewer than ``f + 1`` matching replies within ``timeout``.
        UnknownPeer: a member has no certificate.
    """
    consensus = install_consensus(_agent(who))
    return await consensus.bft.commit(group, value, timeout, retry)
