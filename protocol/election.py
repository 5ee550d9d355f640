"""Leader election per cluster, and epoch fencing for coordinators.

Clusters group agents by purpose. :class:`ClusterMembership` is a pure state
machine fed with join, leave and health events; it answers with
:class:`LeaderChanged` actions. Epochs fence coordinators: a standby that takes
over picks :func:`next_epoch`, stamps every assignment with it, and receivers
refuse anything stamped older than the newest epoch they have seen
(:class:`EpochFence`).

Invariants:
    * A cluster's leader is a function of the current view alone: the member
      with the smallest ``(priority, agent_id)`` among those whose health is
      eligible (ALIVE by default), or None. Every observer with the same view
      computes the same leader.
    * A cluster's term grows by exactly one on every leadership change
      (including to and from "no leader") and never decreases, also across
      the cluster emptying and refilling; so ``(cluster, term)`` names at most
      one leader.
    * An :class:`EpochFence`'s highest epoch never decreases, and ``admit(e)``
      is true iff ``e`` is at least that highest epoch. Hence once a receiver
      has seen epoch ``e``, it accepts nothing stamped with an epoch below
      ``e``: a coordinator that has been superseded cannot issue assignments
      that this receiver accepts. Fencing is per receiver, so a new
      coordinator announces its epoch before its first assignment, and
      receivers observe the epoch of every coordinator message they see.
    * With distinct ``rank`` values and a common ``stride``, concurrent
      contenders calling :func:`next_epoch` never pick the same epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from robeing.protocol.errors import ProtocolError
from robeing.protocol.failure_detector import Health, Transition

__all__ = [
    "DEFAULT_PRIORITY",
    "ROLE_PRIORITY",
    "ClusterMembership",
    "EpochFence",
    "LeaderChanged",
    "StaleEpoch",
    "next_epoch",
]

# Lower number = preferred leader. Roles that coordinate come before roles that
# only execute; unknown roles go last.
ROLE_PRIORITY: Mapping[str, int] = {
    "coordinator": 0,
    "guardian": 10,
    "specialist": 20,
    "worker": 30,
    "messenger": 40,
}
DEFAULT_PRIORITY = 100


class StaleEpoch(ProtocolError):
    """A message was stamped with an epoch older than the newest one seen.

    Attributes:
        epoch: the refused epoch.
        highest: the newest epoch the receiver had seen.
    """

    reason = "stale_epoch"

    def __init__(self, epoch: int, highest: int) -> None:
        super().__init__(f"epoch {epoch} is older than the current epoch {highest}")
        self.epoch = epoch
        self.highest = highest


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """The leader of ``cluster`` is now ``leader`` (None: no eligible member)."""

    cluster: str
    leader: str | None
    term: int
    previous: str | None = None


def _check_epoch(epoch: int) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"an epoch is a non-negative int, got {epoch!r}")


def next_epoch(observed: Iterable[int], *, rank: int = 0, stride: int = 1) -> int:
    """The epoch a contender takes over with: newer than every observed one.

    Args:
        observed: epochs seen so far (any order; empty means none yet, as 0).
        rank: this contender's index among ``stride`` contenders.
        stride: number of contenders that may pick concurrently; epochs are
            partitioned by residue, so distinct ranks never collide.

    Returns:
        The smallest epoch greater than ``max(observed)`` that is congruent to
        ``rank`` modulo ``stride``.

    Raises:
        ValueError: if an observed epoch is not a non-negative int, or if not
            ``0 <= rank < stride``.
    """
    if not 0 <= rank < stride:
        raise ValueError(f"need 0 <= rank < stride, got rank={rank} stride={stride}")
    highest = 0
    for epoch in observed:
        _check_epoch(epoch)
        highest = max(highest, epoch)
    candidate = highest + 1
    return candidate + (rank - candidate) % stride


class EpochFence:
    """Refuses messages from coordinators older than the newest one seen.

    Epochs are monotonic: :meth:`observe` and :meth:`admit` only ever raise
    the highest epoch. Equal epochs are admitted (the current coordinator keeps
    talking); newer ones are admitted and become the highest.
    """

    __slots__ = ("_highest",)

    def __init__(self, highest: int = 0) -> None:
        """Start fenced at ``highest`` (for example restored from durable state).

        Raises:
            ValueError: if ``highest`` is not a non-negative int.
        """
        _check_epoch(highest)
        self._highest = highest

    @property
    def highest(self) -> int:
        """The newest epoch seen."""
        return self._highest

    def observe(self, epoch: int) -> bool:
        """Learn of ``epoch`` (an announcement, or any stamped message).

        Returns:
            True if it advanced the highest epoch.

        Raises:
            ValueError: if ``epoch`` is not a non-negative int.
        """
        _check_epoch(epoch)
        if epoch > self._highest:
            self._highest = epoch
            return True
        return False

    def admit(self, epoch: int) -> bool:
        """Decide on a message stamped with ``epoch``, observing it.

        Returns:
            False if ``epoch`` is older than the highest epoch seen, else True.

        Raises:
            ValueError: if ``epoch`` is not a non-negative int.
        """
        _check_epoch(epoch)
        if epoch < self._highest:
            return False
        self._highest = epoch
        return True

    def check(self, epoch: int) -> None:
        """Like :meth:`admit`, but raise instead of returning False.

        Raises:
            StaleEpoch: if ``epoch`` is older than the highest epoch seen.
            ValueError: if ``epoch`` is not a non-negative int.
        """
        if not self.admit(epoch):
            raise StaleEpoch(epoch, self._highest)


class ClusterMembership:
    """Members, health, leaders and terms of every cluster.

    An agent may belong to several clusters with a priority in each; its health
    is global. Every mutator returns the leadership changes it caused, in
    cluster order of the affected clusters. Cost is O(members of the affected
    clusters) per event.
    """

    def __init__(self, eligible: Iterable[Health] = (Health.ALIVE,)) -> None:
        """Create an empty view.

        Args:
            eligible: health states in which a member may lead.
        """
        self._eligible = frozenset(eligible)
        self._members: dict[str, dict[str, int]] = {}  # cluster -> agent -> priority
        self._clusters_of: dict[str, set[str]] = {}  # agent -> clusters
        self._health: dict[str, Health] = {}
        self._leaders: dict[str, str | None] = {}
        self._terms: dict[str, int] = {}

    def join(
        self,
        cluster: str,
        agent_id: str,
        *,
        priority: int = DEFAULT_PRIORITY,
        health: Health | None = None,
    ) -> list[LeaderChanged]:
        """Add ``agent_id`` to ``cluster``, or update its priority there.

        Args:
            cluster: the cluster id (the agents' purpose).
            agent_id: the member.
            priority: lower leads first (see :data:`ROLE_PRIORITY`).
            health: its health; None keeps the known health, or ALIVE if unknown.

        Returns:
            The leadership changes caused: in ``cluster``, or in every cluster of
            the agent when ``health`` is given (health is global).
        """
        self._members.setdefault(cluster, {})[agent_id] = priority
        self._clusters_of.setdefault(agent_id, set()).add(cluster)
        if health is not None or agent_id not in self._health:
            self._health[agent_id] = health if health is not None else Health.ALIVE
        return self._elect(self._clusters_of[agent_id] if health is not None else {cluster})

    def leave(self, agent_id: str, cluster: str | None = None) -> list[LeaderChanged]:
        """Remove ``agent_id`` from ``cluster``, or from every cluster if None.

        Returns:
            The leadership changes, if it was leading somewhere it left.
        """
        clusters = self._clusters_of.get(agent_id, set())
        left = set(clusters) if cluster is None else clusters & {cluster}
        for c in left:
            del self._members[c][agent_id]
            if not self._members[c]:
                del self._members[c]
        clusters -= left
        if not clusters:
            self._clusters_of.pop(agent_id, None)
            self._health.pop(agent_id, None)
        return self._elect(left)

    def set_health(self, agent_id: str, health: Health) -> list[LeaderChanged]:
        """Record the agent's health (from the failure detector).

        Returns:
            The leadership changes in the agent's clusters.
        """
        self._health[agent_id] = health
        return self._elect(self._clusters_of.get(agent_id, ()))

    def on_transition(self, transition: Transition) -> list[LeaderChanged]:
        """Apply a :class:`~robeing.protocol.failure_detector.Transition`.

        Returns:
            The leadership changes in the agent's clusters.
        """
        return self.set_health(transition.agent_id, transition.new)

    def restore_term(self, cluster: str, term: int) -> None:
        """Raise a cluster's term to at least ``term`` (state of a previous coordinator).

        Raises:
            ValueError: if ``term`` is negative.
        """
        if term < 0:
            raise ValueError("a term is non-negative")
        self._terms[cluster] = max(self._terms.get(cluster, 0), term)

    def leader(self, cluster: str) -> str | None:
        """The current leader of ``cluster`` (None if it has no eligible member)."""
        return self._leaders.get(cluster)

    def term(self, cluster: str) -> int:
        """The current term of ``cluster`` (0 before its first leader)."""
        return self._terms.get(cluster, 0)

    def members(self, cluster: str) -> dict[str, int]:
        """The members of ``cluster`` with their priorities (a copy)."""
        return dict(self._members.get(cluster, {}))

    def clusters(self) -> list[str]:
        """Clusters that currently have members, sorted."""
        return sorted(self._members)

    def health(self, agent_id: str) -> Health | None:
        """The recorded health of ``agent_id``."""
        return self._health.get(agent_id)

    def _elect(self, clusters: Iterable[str]) -> list[LeaderChanged]:
        out: list[LeaderChanged] = []
        for cluster in sorted(clusters):
            members = self._members.get(cluster, {})
            best = min(
                ((p, a) for a, p in members.items() if self._health.get(a) in self._eligible),
                default=None,
            )
            leader = best[1] if best else None
            previous = self._leaders.get(cluster)
            if leader == previous:
                continue
            term = self._terms.get(cluster, 0) + 1
            self._terms[cluster] = term
            self._leaders[cluster] = leader
            out.append(LeaderChanged(cluster, leader, term, previous))
        return out
