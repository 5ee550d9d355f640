"""The coordinator's view of its agents: health, who can take work, what they offer.

:class:`FleetView` turns heartbeats, connection closes and clock ticks into
the state scheduling reads — the :class:`~robeing.protocol.scheduling.AgentRegistry`
(skills, load, capacity), the :class:`~robeing.protocol.ledger.ResourceLedger`
(contributed resources) — and reports the agents it declares lost, so the
caller can reassign their tasks.

Rules:
    * Health is the :class:`~robeing.protocol.failure_detector.HealthMonitor`'s:
      missed heartbeats (phi-accrual, with a tolerated pause), or the broker's
      connection close of the incarnation the agent announced. A close of any
      other incarnation (an older process, a client, a forged name) changes
      nothing; a close the broker cannot attribute to the agent's own user
      only makes it suspected until its heartbeats confirm or refute it.
    * An agent is schedulable only while its heartbeats say ``alive``, its
      certified role runs tasks and it is not a backup standing idle; it is
      scored with its certified role's priority, and offered only the task
      types its heartbeats announce.
    * Backups (``standby``) take work only while a primary they stand in for
      is dead: the one named by ``backup_for``, or any dead agent sharing a
      skill; they leave scheduling as soon as it beats again. Dead agents are
      remembered (bounded) with their skills for this.
    * A lost agent leaves the registry and the ledger at once; a heartbeat of
      it afterwards is a rejoin and starts afresh. One that said it is leaving
      (a graceful stop) is reported ``left``, not ``dead``.
    * A heartbeat of an older process than the newest one seen for the agent
      (an earlier ``started_at``: a frozen process that woke after its
      replacement started) changes nothing, even after the agent was lost.
    * Load in the registry is the caller's count of live attempts (a
      heartbeat's own load lags the assignments).
    * A quarantined agent (``blocked``) is lost to scheduling: its
      heartbeats change nothing until it is released.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ..errors import RobeingError
from ..failure_detector import DetectorConfig, Health, HealthMonitor, Transition
from ..heartbeat import Heartbeat
from ..ledger import ResourceLedger
from ..performance import PerformanceTracker
from ..resources import Resources
from ..roles import ROLES
from ..scheduling import AgentInfo, AgentRegistry

log = logging.getLogger(__name__)

__all__ = ["TASK_ROLES", "FleetView", "Lost"]

TASK_ROLES = frozenset({"worker", "specialist", "messenger"})
"""Roles a coordinator places tasks on (messengers run the ``convert`` task)."""
DEAD_MEMORY = 1000
STARTS_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class Lost:
    """An agent declared lost, and why."""

    agent_id: str
    reason: str


class FleetView:
    """Health and capacity of the agents a coordinator schedules on.

    Args:
        detector: failure detection tuning.
        performance: learned performance (shared with the registry's scores).
        load_of: the caller's count of live attempts per agent.
        task_roles: roles that may be given tasks.
    """

    def __init__(
        self,
        detector: DetectorConfig,
        performance: PerformanceTracker,
        load_of: Callable[[str], int],
        task_roles: Collection[str] = TASK_ROLES,
    ) -> None:
        self.health = HealthMonitor(detector)
        self.registry = AgentRegistry(performance, task_roles=task_roles)
        self.ledger = ResourceLedger()
        self.task_roles = frozenset(task_roles)
        self.incarnations: dict[str, str] = {}  # agent id -> incarnation it announced
        self.dead: dict[str, tuple[float, frozenset[str]]] = {}  # id -> (when, its skills)
        self.backups: dict[str, Heartbeat] = {}  # standby id -> its last heartbeat
        self.started: dict[str, float] = {}  # agent id -> newest process start (outlives a loss)
        self.departed: set[str] = set()  # lost because they said they were leaving
        self.counters: Counter[str] = Counter()
        self.blocked: set[str] = set()  # quarantined by a guardian's order
        # An unconfirmed close waits for this long for a heartbeat to refute it.
        self.close_grace = max(1.5 * detector.heartbeat_interval, 0.5)
        self._load_of = load_of

    # -- events ------------------------------------------------------------------

    def heartbeat(self, agent_id: str, role: str, beat: Heartbeat, now: float) -> list[Lost]:
        """Take one verified heartbeat into account.

        Returns:
            Agents declared lost by it: the sender itself when it is leaving,
            or its previous incarnation when this one replaced it.
        """
        if self._from_older_process(agent_id, beat.started_at):
            self.counters["stale_heartbeats"] += 1
            return []
        if agent_id in self.blocked:
            return []
        if beat.state == "leaving":
            if len(self.departed) < DEAD_MEMORY:
                self.departed.add(agent_id)
            return [Lost(agent_id, "left")]
        self.departed.discard(agent_id)
        if beat.incarnation:
            self.incarnations[agent_id] = beat.incarnation
        info: dict[str, Any] = {"standby": beat.standby}
        if beat.started_at:
            info["started_at"] = beat.started_at
        lost = self._lost_in(self.health.heartbeat(agent_id, now, info))
        if role not in self.task_roles or beat.state != "alive":
            return lost
        skills = frozenset(beat.specializations)
        if self.dead.pop(agent_id, None) is not None:  # it is back (a rejoin starts afresh)
            self._retire_backups()
        if beat.standby:
            self.backups[agent_id] = beat
            if not self._backup_needed(beat, skills):
                self.registry.remove(agent_id)
                self.ledger.withdraw(agent_id)
                return lost
            if agent_id not in self.registry:
                why = f"for {beat.backup_for}" if beat.backup_for else "standby pool"
                log.warning("activating backup %s (%s)", agent_id, why)
                self.counters["backups_activated"] += 1
        try:
            self.registry.upsert(
                AgentInfo(
                    id=agent_id,
                    role=role,
                    specializations=skills,
                    load=self._load_of(agent_id),
                    capacity=max(1, beat.capacity),
                    cluster_id=beat.cluster_id or None,
                    # The certified role's priority: the one a heartbeat claims is a claim.
                    priority=ROLES[role].priority if role in ROLES else 9,
                    tasks=None if beat.tasks is None else frozenset(beat.tasks),
                    proficiency=beat.proficiency,
                )
            )
        except RobeingError as exc:
            log.debug("ignoring heartbeat of %s: %s", agent_id, exc)
            return lost
        self._contribute(agent_id, beat.resources)
        return lost

    def summary(
        self,
        members: Collection[tuple[str, str, Heartbeat]],
        lost: Collection[tuple[str, str]],
        now: float,
    ) -> list[Lost]:
        """A cluster leader's summary: each ``(id, role, beat)`` as if its heartbeat
        were heard now, each ``(id, reason)`` of a known agent lost.

        Returns:
            The agents declared lost (the leader's, and what the beats imply).
        """
        out = []
        for agent_id, role, beat in members:
            out += self.heartbeat(agent_id, role, beat, now)
        known = [Lost(a, f"leader: {why}") for a, why in lost if a in self.incarnations]
        self.counters["lost_by_leaders"] += len(known)
        return out + known

    def connection_closed(
        self, agent_id: str, incarnation: str, now: float, *, verified: bool = False
    ) -> list[Lost]:
        """The broker closed ``agent_id``'s connection of ``incarnation``.

        Only the incarnation the agent announced in its signed heartbeats
        counts: a late event about an older process must not kill the
        agent's restarted one. A ``verified`` close (the broker's record
        names the agent's own user) is a death; any other only a suspicion,
        confirmed when the agent misses its next heartbeats
        (``close_grace``), cleared when it beats.
        """
        known = self.incarnations.get(agent_id)
        if known is None or known != incarnation:
            log.debug(
                "connection of %s (instance %s) closed; tracking instance %s",
                agent_id,
                incarnation,
                known,
            )
            return []
        if not verified:
            self.counters["unconfirmed_closes"] += 1
            return self._lost_in(self.health.suspect(agent_id, now, self.close_grace))
        self.counters["connection_deaths"] += 1
        return self._lost_in(self.health.connection_closed(agent_id, now))

    def quarantine(self, agent_id: str, quarantined: bool) -> list[Lost]:
        """A guardian's order: a quarantined agent is lost to scheduling until released.

        Returns:
            The agent, when the order newly quarantines it (its tasks go elsewhere).
        """
        if not quarantined:
            self.blocked.discard(agent_id)  # its next heartbeat rejoins it
            return []
        if agent_id in self.blocked:
            return []
        self.blocked.add(agent_id)
        self.counters["quarantined"] += 1
        return [Lost(agent_id, "quarantined")]

    def tick(self, now: float) -> list[Lost]:
        """Suspect silent agents and declare long-suspected ones lost."""
        return self._lost_in(self.health.tick(now))

    def forget(self, agent_id: str, now: float) -> frozenset[str] | None:
        """Drop a lost agent from scheduling; returns the skills it had, if it was registered."""
        self.incarnations.pop(agent_id, None)
        last = self.registry.remove(agent_id)
        self.ledger.withdraw(agent_id)
        was_backup = self.backups.pop(agent_id, None) is not None
        if last is not None and not was_backup:
            self.dead[agent_id] = (now, last.specializations)
            while len(self.dead) > DEAD_MEMORY:
                self.dead.pop(next(iter(self.dead)))
        self.health.forget(agent_id)
        return last.specializations if last is not None else None

    # -- queries -------------------------------------------------------------------

    def is_dead(self, agent_id: str) -> bool:
        """Whether ``agent_id`` was declared lost and has not come back."""
        return agent_id in self.dead

    def idle_backups(self) -> list[str]:
        return sorted(b for b in self.backups if b not in self.registry)

    def health_report(self, now: float, limit: int = 500) -> dict[str, str]:
        health = {h.agent_id: h.state.value for h in self.health.snapshot(now)[:limit]}
        for agent_id in list(self.dead)[-100:]:
            health.setdefault(agent_id, "left" if agent_id in self.departed else "dead")
        return health

    # -- internals -------------------------------------------------------------------

    def _lost_in(self, transitions: list[Transition]) -> list[Lost]:
        out = []
        for t in transitions:
            if t.new == Health.DEAD:
                out.append(Lost(t.agent_id, t.reason))
            elif t.new == Health.SUSPECTED:
                log.warning("agent %s suspected (%s)", t.agent_id, t.reason)
        return out

    def _backup_needed(self, beat: Heartbeat, skills: frozenset[str]) -> bool:
        """A backup takes work only while a primary it stands in for is dead."""
        if beat.backup_for:
            return beat.backup_for in self.dead
        return any(dead_skills & skills for _, dead_skills in self.dead.values())

    def _from_older_process(self, agent_id: str, started_at: float) -> bool:
        """Whether a beat comes from an older process than the newest one seen."""
        if not started_at:
            return False
        newest = max(self.started.pop(agent_id, started_at), started_at)
        self.started[agent_id] = newest  # re-inserted: the least recently seen go first
        if len(self.started) > STARTS_MEMORY:
            self.started.pop(next(iter(self.started)))
        return started_at < newest

    def _retire_backups(self) -> None:
        """Take active backups out of scheduling once no primary they stand in for is dead."""
        for backup_id, beat in self.backups.items():
            if backup_id in self.registry and not self._backup_needed(
                beat, frozenset(beat.specializations)
            ):
                log.info("retiring backup %s: the agents it stood in for are back", backup_id)
                self.registry.remove(backup_id)
                self.ledger.withdraw(backup_id)

    def _contribute(self, agent_id: str, offered: Resources | None) -> None:
        """Take an agent's announced resources into the pool (none: it leaves it)."""
        if offered is None or offered.is_zero():
            self.ledger.withdraw(agent_id)
            return
        dropped = self.ledger.contribute(agent_id, offered)
        if dropped:
            # Its tasks keep running; only our bookkeeping of them is gone.
            log.warning(
                "agent %s now offers less than it holds; %d reservation(s) dropped",
                agent_id,
                len(dropped),
            )
