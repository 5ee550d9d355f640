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

Leaderless clusters. A cluster whose last summary is older than
:data:`SILENCE_INTERVALS` heartbeat intervals, or whose leader's connection
closed, has no live leader: the member the score elects (the term holder
as ``sitting``, with the margin) gets a ``cluster.elect`` nudge at once and
then every :data:`NUDGE_S` until a summary of a new term arrives. Meanwhile
its members' beats are returned unroutable and reach us directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ....protocol.clusters import DEFAULT_CLUSTER, choose_leader
from ....protocol.clusters.summary import SUMMARY_TYPE, ClusterSummary, MemberEntry, TermBook
from ....protocol.coordinator import Event, SummaryReceived
from ....protocol.errors import DecodeError, ProtocolError
from ....protocol.heartbeat import Heartbeat
from ...context import AgentContext, Message
from ...leading import ELECT_TYPE

if TYPE_CHECKING:
    from .clusters import ClusterHost

log = logging.getLogger(__name__)

SAMPLE_AGE_S = 30.0  # a sample older than this proves nothing about now
SILENCE_INTERVALS = 2.5  # summaries missed before a cluster counts as leaderless
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

    def handlers(self) -> dict[str, Any]:
        """What the coordinator's heartbeat queue carries besides heartbeats."""
        return {SUMMARY_TYPE: self.on_summary}

    @property
    def silence(self) -> float:
        return SILENCE_INTERVALS * self.agent.settings.heartbeat_interval + 0.5

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
        for agent_id, _, beat in folded:
            self.clusters.on_heartbeat(agent_id, beat, direct=False)
        self._nudged.pop(summary.cluster, None)

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

    def tick(self) -> None:
        """Nudge the candidate of every named cluster that has no live leader."""
        if self.clusters.state is None:
            return
        for name in self.clusters.names():
            if self.holder(name) is None:
                self._nudge(name)

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
