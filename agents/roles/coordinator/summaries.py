"""The active coordinator's side of cluster leaders: summaries in, nudges out.

A named cluster's leader sends one ``cluster.summary`` a heartbeat interval
(wire contract: :mod:`robeing.protocol.clusters.summary`); the coordinator
heard its members through it instead of through their own heartbeats.

Admission, in order (a refusal dead-letters the summary with the reason and
counts it in the coordinator's counters):

1. decodes (``bad_summary`` otherwise: a DecodeError);
2. the sender is the summary's ``leader`` and a member of its cluster, by
   the directory applied to the cluster its own entry announces
   (``not_leader``);
3. its term is not older than the newest admitted for the cluster
   (``stale_epoch``: :class:`~robeing.protocol.clusters.TermBook`);
4. every sample verifies: each is a member's own signed heartbeat
   (certificate, signature, at most :data:`SAMPLE_AGE_S` old) and the entry
   of that member says what the sample says — same role, resources,
   capacity, skills, timestamp (``bad_summary``). The leader rotates
   through its members, so with two samples a summary a leader that inflates
   one member's resources in a cluster of N is caught within about N/2
   summaries, and every summary it sends after that is refused too only if
   it lies again; it cannot claim resources for a member it never heard,
   since the entry it lies in is sampled like any other.

Then each entry whose member belongs to the cluster and whose ``at`` is newer
than the last folded one is folded into the state machine as if the member's
heartbeat had been heard (:class:`~robeing.protocol.coordinator.SummaryReceived`),
with the members the leader declared lost.

Dead members. A member the leader reports lost is reassigned by the state
machine at once; if it belongs to a formed cluster and is not heard again
within :data:`~robeing.protocol.clusters.removals.GRACE_S`, a ``leave``
record removes it (the original ``remove_from_cluster``).

Leaderless clusters. A cluster whose last summary is older than
:data:`SILENCE_INTERVALS` heartbeat intervals, or whose leader's connection
closed, has no live leader: the member the score elects (the term holder
as ``sitting``, with the margin) gets a ``cluster.elect`` nudge at once and
then every :data:`NUDGE_S` until a summary of a new term arrives. Meanwhile
the coordinator hears its members directly: their beats come back
unroutable and go to ``heartbeat.*``, and the coordinator also binds its own
feed to ``member.<c>.#`` (needed when the leader is paused with its
connection, and so its queue, still open); the feed goes with the next
summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ....broker.base import Consumer
from ....protocol.clusters import DEFAULT_CLUSTER, ClusterRecord, choose_leader
from ....protocol.clusters.removals import GRACE_S, Removals
from ....protocol.clusters.summary import SUMMARY_TYPE, ClusterSummary, MemberEntry, TermBook
from ....protocol.coordinator import Event, SummaryReceived
from ....protocol.errors import DecodeError, ProtocolError
from ....protocol.heartbeat import Heartbeat
from ...context import AgentContext, Handler, Message
from ...leading import ELECT_TYPE, hear_members

if TYPE_CHECKING:
    from .clusters import ClusterHost

log = logging.getLogger(__name__)

SAMPLE_AGE_S = 30.0  # a sample older than this proves nothing about now
# Summary intervals of silence before a cluster counts as leaderless: shorter than
# the failure detector's suspicion, so the members are heard again before it.
SILENCE_INTERVALS = 2.0
TICK_S = 0.25  # how often leaderless clusters are looked for
NUDGE_S = 1.0  # how often a leaderless cluster's candidate is nudged


class BadSummary(DecodeError):
    """A summary whose sample does not match what its member signed."""

    reason = "bad_summary"


class Summaries:
    """Admits and folds leaders' summaries; nudges candidates of leaderless clusters."""

    def __init__(
        self,
        agent: AgentContext,
        clusters: ClusterHost,
        feed: Callable[[Event], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.agent = agent
        self.clusters = clusters
        self.terms: TermBook = clusters.terms
        self._feed = feed
        self._spawn = spawn
        self._nudged: dict[str, float] = {}  # cluster -> when its candidate was last nudged
        self.removals = Removals()  # dead members of formed clusters, removed after a grace
        self.hear: Handler | None = None  # the shell's heartbeat handler, for stand-in feeds
        self._standing: dict[str, Consumer | None] = {}  # cluster -> our stand-in feed
        self._next_tick = 0.0

    def handlers(self) -> dict[str, Any]:
        """What the coordinator's heartbeat queue carries besides heartbeats."""
        return {SUMMARY_TYPE: self.on_summary}

    @property
    def silence(self) -> float:
        return SILENCE_INTERVALS * self.agent.settings.heartbeat_interval

    def on_summary(self, msg: Message) -> None:
        """``cluster.summary`` on the heartbeat queue (see the module doc for the checks).

        Raises:
            ProtocolError: refused (the runtime dead-letters it with the reason).
        """
        state = self.clusters.state
        if state is None:
            return
        try:
            summary = ClusterSummary.from_data(msg.payload)
        except DecodeError as exc:
            state.counters["summaries_bad"] += 1
            raise BadSummary(f"summary from {msg.sender}: {exc}") from None
        own = summary.entry(msg.sender)
        announced = own.beat.cluster_id if own is not None else None
        sender_cluster = self.clusters.directory.cluster_of(
            msg.sender, announced or DEFAULT_CLUSTER
        )
        self.terms.counters = state.counters
        self.terms.admit(
            msg.sender, sender_cluster if own is not None else None, summary, time.time()
        )
        try:
            self._check_samples(summary)
            self._learn_certificates(summary)
        except ProtocolError:
            state.counters["summaries_bad"] += 1
            raise
        folded = []
        for entry in summary.members:
            if (
                self.clusters.directory.cluster_of(entry.agent_id, entry.beat.cluster_id)
                != summary.cluster
            ):
                self.terms.foreign()
                continue
            if self.terms.fresh(entry):
                folded.append((entry.agent_id, entry.role, entry.beat))
        self._feed(SummaryReceived(tuple(folded), summary.lost))
        defined = self.clusters.directory.clusters.get(summary.cluster)
        for member, why in summary.lost:
            if defined is not None and member in defined.members:
                log.warning("cluster %s: its leader reports %s %s", summary.cluster, member, why)
                self.removals.lost(member, summary.cluster, time.monotonic())
        for agent_id, _, beat in folded:
            self.clusters.on_heartbeat(agent_id, beat, direct=False)
        self._nudged.pop(summary.cluster, None)
        if summary.cluster in self._standing:
            self._spawn(self._stand_down(summary.cluster))

    def _learn_certificates(self, summary: ClusterSummary) -> None:
        """Learn the certificates of members this coordinator has not heard directly.

        Assignments are encrypted to the receiver's key: a member heard only
        through summaries (it joined while its leader was live, or this
        coordinator took over since) would otherwise get none. A certificate
        equal to the one known costs a comparison; another one is checked
        against the authority, expiry and revocations, and must name the
        entry's id and role.

        Raises:
            BadSummary: a certificate that does not check or names someone else.
        """
        trust, now = self.agent.trust, time.time()
        for entry in summary.members:
            if not entry.cert:
                continue
            known = trust.peer(entry.agent_id)
            if known is not None and known.raw == entry.cert:
                continue
            try:
                cert = trust.check_certificate(entry.cert, now)
            except ProtocolError as exc:
                raise BadSummary(
                    f"{summary.leader}'s certificate of {entry.agent_id}: {exc}"
                ) from None
            if (cert.agent_id, cert.role) != (entry.agent_id, entry.role):
                raise BadSummary(
                    f"{summary.leader} listed {entry.agent_id} ({entry.role}) with the "
                    f"certificate of {cert.agent_id} ({cert.role})"
                )
            trust.learn(cert)

    def _check_samples(self, summary: ClusterSummary) -> None:
        """Every sample is its member's own signed heartbeat, and its entry agrees with it.

        Raises:
            BadSummary: a sample that does not verify or does not match.
        """
        for raw in summary.samples:
            try:
                opened = self.agent.open_stored(raw)
                if opened.envelope.type != "heartbeat":
                    raise DecodeError(f"a {opened.envelope.type!r} is not a heartbeat")
                beat = Heartbeat.from_data(opened.envelope.payload)
            except ProtocolError as exc:
                raise BadSummary(f"a sample of {summary.leader}'s summary: {exc}") from None
            member = opened.envelope.sender
            entry = summary.entry(member)
            if entry is None:
                raise BadSummary(f"{summary.leader} sampled {member}, whom it does not list")
            if abs(time.time() - opened.envelope.timestamp) > SAMPLE_AGE_S:
                raise BadSummary(f"{summary.leader}'s sample of {member} is stale")
            if not _agrees(entry, opened.certificate.role, opened.envelope.timestamp, beat):
                raise BadSummary(
                    f"{summary.leader}'s entry of {member} differs from what {member} signed "
                    f"(resources {entry.beat.resources} vs {beat.resources})"
                )

    # -- leaderless clusters ----------------------------------------------------------

    def holder(self, name: str) -> tuple[int, str] | None:
        """``(term, leader)`` of a named cluster with a live leader, else None."""
        return self.terms.leader_of(name, time.time(), self.silence)

    def on_connection_closed(self, agent_id: str) -> None:
        """A leader's connection closed: its clusters are leaderless; nudge at once."""
        for cluster in self.terms.deposed(agent_id):
            log.warning("cluster %s: leader %s is gone; electing another", cluster, agent_id)
            self._nudged.pop(cluster, None)
            self._nudge(cluster, exclude=agent_id)
        self._next_tick = 0.0  # stand in for its members at the next tick

    def tick(self) -> None:
        """Nudge the candidate of every named cluster that has no live leader; remove
        members dead for longer than the grace from their formed cluster."""
        now = time.monotonic()
        if self.clusters.state is None or now < self._next_tick:
            return
        self._next_tick = now + TICK_S
        for name in self.clusters.names():
            if self.holder(name) is None:
                self._nudge(name)
                if name not in self._standing and self.hear is not None:
                    self._standing[name] = None
                    self._spawn(self._stand_in(name))
        for member, cluster in self.removals.due(time.monotonic()):
            defined = self.clusters.directory.clusters.get(cluster)
            if defined is None or member not in defined.members:
                continue  # it left, or the cluster was dissolved, meanwhile
            if member in self.clusters.live_members(cluster):
                continue
            record = ClusterRecord("leave", cluster, time.time(), self.agent.id, agent=member)
            log.warning("cluster %s: removing %s, dead for %.0f s", cluster, member, GRACE_S)
            self._spawn(self._remove(record))

    async def _stand_in(self, cluster: str) -> None:
        """Consume the cluster's member heartbeats ourselves while it has no live leader.

        Between terms a member's beat comes back unroutable and reaches us on
        ``heartbeat.*``; but a leader that is paused with its connection open
        keeps its queue, and the beats would pile up there unread. Our own
        exclusive feed, bound like a leader's, hears them in any case; it goes
        when a summary arrives again (cancelled, it is auto-deleted).
        """
        assert self.hear is not None
        try:
            consumer = await hear_members(self.agent, cluster, self.hear)
        except Exception as exc:
            log.warning("cluster %s: could not hear its members directly: %s", cluster, exc)
            self._standing.pop(cluster, None)
            return
        if cluster not in self._standing:  # a summary came meanwhile
            await self.agent.cancel(consumer)
            return
        self._standing[cluster] = consumer
        log.info("cluster %s has no live leader: the coordinator hears its members", cluster)

    async def _stand_down(self, cluster: str) -> None:
        consumer = self._standing.pop(cluster, None)
        if consumer is not None:
            try:
                await self.agent.cancel(consumer)
            except Exception as exc:
                log.debug("cancelling the stand-in feed of %s: %s", cluster, exc)

    async def _remove(self, record: ClusterRecord) -> None:
        try:
            await self.clusters.record(record)
        except Exception as exc:  # it is due again after its next reported death
            log.warning("could not remove %s from %s: %s", record.agent, record.name, exc)

    def _nudge(self, cluster: str, exclude: str | None = None) -> None:
        now = time.monotonic()
        if now - self._nudged.get(cluster, -NUDGE_S) < NUDGE_S:
            return
        scores = self.clusters.scores(cluster)
        scores.pop(exclude or "", None)
        candidate = choose_leader(scores, self.clusters.leaders.get(cluster))
        if candidate is None:
            return
        self._nudged[cluster] = now
        self._spawn(self._send(candidate, cluster))

    async def _send(self, candidate: str, cluster: str) -> None:
        try:
            await self.agent.send(
                candidate, ELECT_TYPE, {"cluster": cluster}, priority=9, persistent=False
            )
        except Exception as exc:
            log.debug("could not nudge %s to lead %s: %s", candidate, cluster, exc)


def _agrees(entry: MemberEntry, role: str, at: float, beat: Heartbeat) -> bool:
    mine = entry.beat
    return (
        entry.role == role
        and entry.at == at
        and mine.resources == beat.resources
        and mine.capacity == beat.capacity
        and mine.specializations == beat.specializations
        and mine.cluster_id == beat.cluster_id
    )
